"""Write a preprocessed `datasets` dump (save_to_disk) that a config then uses with `dataset_dump: <folder>`.

    python recipes/prepare_data.py vit-pretrain --config <yaml> --dump out/mnist
    python recipes/prepare_data.py lm-finetune --config ... --pretrained <checkpoint> --dump out/rt

This replaces the original zoo's `torch.save` dumps: Arrow files, memory-mapped, no pickles.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from zoo.runs import prepare_data_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(prepare_data_main(sys.argv[1:]))
