"""Train one zoo member (mlm-pretrain). Usage: python recipes/pretrain_mlm.py --config <yaml> [--key value ...]

Works under `accelerate launch` for several GPUs; all logic lives in `zoo.runs`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from zoo.runs import recipe_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(recipe_main("mlm-pretrain"))
