"""Image data of a zoo decoded per batch (every member, every epoch) against decoded once per zoo.

    python bench/bench_image_data.py [--images 10000] [--size 32] [--model-size 224] [--members 4]

A CIFAR-like local data set (RGB PNGs, `--size` px, made from the embedded digits) is read the way `members`
members of a zoo read it for one epoch each: the per-batch path (PIL decode and resize to the model's size in the
DataLoader, as `load_images` does without a cache) against `decode_once` (the first member decodes into the zoo's
cache at the native size; every member then takes batches as one index into whole tensors, which the trainer's
augmentation resizes on the device). Wall time, side by side in one run; no model step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--model-size", type=int, default=224)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()

    import numpy as np
    import torch
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_from_disk
    from PIL import Image as PILImage

    from zoo.data import PilToPixels, decode_once, embedded, set_pixel_format
    from zoo.data.device import collate_batch, tensor_batches

    images, labels, names = embedded.digits()
    index = np.arange(args.images) % len(images)
    pictures = [PILImage.fromarray(images[i]).convert("RGB").resize((args.size, args.size)) for i in index]
    features = Features({"image": Image(), "labels": ClassLabel(names=names)})
    with tempfile.TemporaryDirectory() as tmp:
        Dataset.from_dict({"image": pictures, "labels": labels[index].tolist()}, features=features).save_to_disk(
            f"{tmp}/set")

        def fresh() -> DatasetDict:
            return DatasetDict(train=load_from_disk(f"{tmp}/set"))

        start = time.perf_counter()
        for _ in range(args.members):
            splits = fresh()
            splits.set_transform(PilToPixels("image", "labels", args.model_size, 3))
            loader = torch.utils.data.DataLoader(splits["train"], batch_size=args.batch, shuffle=True)
            assert sum(batch["pixel_values"].shape[0] for batch in loader) == args.images
        per_batch = time.perf_counter() - start

        start = time.perf_counter()
        for member in range(args.members):
            decoded, stored = decode_once(fresh(), "image", args.model_size, 3, f"{tmp}/cache", {"bench": 1})
            set_pixel_format(decoded)
            loader = torch.utils.data.DataLoader(tensor_batches(decoded["train"]), batch_size=args.batch,
                                                 shuffle=True, collate_fn=collate_batch)
            assert sum(batch["pixel_values"].shape[0] for batch in loader) == args.images
            if member == 0:
                first = time.perf_counter() - start
        once = time.perf_counter() - start
    print(f"{args.images} images of {args.size} px, model {args.model_size} px, {args.members} members x 1 epoch")
    print(f"decoded per batch (resized to {args.model_size} px): {per_batch:.1f} s")
    print(f"decoded once (stored at {stored} px): {once:.1f} s, of which the first member's decoding {first:.1f} s")
    print(f"ratio: {per_batch / once:.1f}x")


if __name__ == "__main__":
    main()
