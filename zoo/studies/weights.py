"""Reading and comparing checkpoint weights with safetensors (never pickle), one tensor at a time where it matters:
parameter names mapped across task wrappers, shared tensors, streamed Gram matrices, per-tensor statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo import architectures, layout

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
# bytes of float64 one step of `weight_gram` may hold (one slice of a tensor across all checkpoints)
GRAM_BLOCK_BYTES = 64 * 2**20


def read_weights(checkpoint: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint's model.safetensors as numpy arrays; a missing or damaged file is a LayoutError
    naming it."""
    from safetensors.numpy import load_file

    path = Path(checkpoint) / layout.WEIGHTS
    if not path.is_file():
        raise layout.LayoutError(f"{checkpoint}: no {layout.WEIGHTS}")
    layout.read_safetensors_header(path)  # a truncated file: one clear line, not a safetensors traceback
    return load_file(str(path))


def canonical(key: str) -> str:
    """A parameter's name without its task wrapper: `vit.encoder.layer.0...` and `encoder.layer.0...` match."""
    for prefix in architectures.WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def layer_group(key: str) -> str:
    """`encoder.layer.3.attention...` -> `layer.3`; `embeddings.cls_token` -> `embeddings`."""
    key = canonical(key)
    match = architectures.LAYER_PATTERN.match(key)
    return f"layer.{int(match.group(1))}" if match else key.split(".")[0]


def is_backbone(key: str) -> bool:
    """A parameter of the shared backbone, not of a task head (heads of different tasks are not comparable)."""
    return not canonical(key).startswith(architectures.HEAD_PREFIXES)


def is_floating(dtype: str) -> bool:
    """A safetensors header dtype (`F32`, `BF16`, ...) of floating point numbers."""
    return dtype.startswith(("F", "BF"))


def weight_shapes(checkpoint: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """canonical name -> (saved name, shape) of a checkpoint's floating tensors, from the header only."""
    header = layout.read_safetensors_header(Path(checkpoint) / layout.WEIGHTS)
    return {canonical(key): (key, tuple(info["shape"])) for key, info in header.items()
            if key != "__metadata__" and is_floating(info["dtype"])}


def shared_keys(checkpoints: list[Path], backbone: bool = False) -> list[str]:
    """Canonical names present with the same shape in every checkpoint (only backbone ones with `backbone`), sorted."""
    common: dict[str, tuple[int, ...]] | None = None
    for checkpoint in checkpoints:
        shapes = {key: shape for key, (_, shape) in weight_shapes(checkpoint).items()}
        common = shapes if common is None else {k: s for k, s in common.items() if shapes.get(k) == s}
    return sorted(key for key in common or {} if not backbone or is_backbone(key))


class Reader:
    """Open safetensors files of checkpoints (memory-mapped), reading one tensor or slice at a time by canonical
    name."""

    def __init__(self, checkpoints: list[Path]):
        from safetensors import safe_open

        for checkpoint in checkpoints:
            layout.read_safetensors_header(Path(checkpoint) / layout.WEIGHTS)
        self.handles = [safe_open(str(Path(c) / layout.WEIGHTS), framework="np") for c in checkpoints]
        self.names = [{canonical(key): key for key in handle.keys()} for handle in self.handles]

    def keys(self, index: int) -> list[str]:
        return list(self.names[index])

    def get(self, index: int, key: str) -> np.ndarray:
        return self.handles[index].get_tensor(self.names[index][key])

    def shape(self, index: int, key: str) -> tuple[int, ...]:
        return tuple(self.handles[index].get_slice(self.names[index][key]).get_shape())

    def rows(self, index: int, key: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of a tensor's first dimension, read without the rest."""
        return self.handles[index].get_slice(self.names[index][key])[start:stop]


def weight_gram(checkpoints: list[Path], keys: list[str] | None = None,
                block_bytes: int = GRAM_BLOCK_BYTES) -> np.ndarray:
    """Gram matrix of the checkpoints' flattened weights (restricted to `keys`, default: the shared ones), built from
    slices of one parameter tensor of all checkpoints at a time: memory holds the n x n matrix and at most
    `block_bytes` of weights (or one row of a tensor per checkpoint), whatever the number of checkpoints."""
    keys = shared_keys(checkpoints) if keys is None else keys
    reader = Reader(checkpoints)
    count = len(checkpoints)
    gram = np.zeros((count, count))
    for key in keys:
        shape = reader.shape(0, key)
        if not shape:  # a scalar
            block = np.stack([reader.get(i, key).astype(np.float64).ravel() for i in range(count)])
            gram += block @ block.T
            continue
        step = max(1, block_bytes // (8 * count * max(1, int(np.prod(shape[1:])))))
        for start in range(0, shape[0], step):
            stop = min(start + step, shape[0])
            block = np.stack([reader.rows(i, key, start, stop).astype(np.float64).ravel()
                              for i in range(count)])
            gram += block @ block.T
    return gram


def gram_to_pairwise(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2 distance, cosine similarity) matrices from a Gram matrix."""
    diag = np.diag(gram)
    dist = np.sqrt(np.clip(diag[:, None] + diag[None, :] - 2 * gram, 0, None))
    np.fill_diagonal(dist, 0.0)
    norms = np.sqrt(np.clip(diag, 1e-300, None))
    cosine = gram / np.outer(norms, norms)
    return dist, cosine


def tensor_stats(values: np.ndarray) -> list[float]:
    """Mean, std and quantiles of one tensor (Unterthiner et al. 2020)."""
    flat = values.astype(np.float64).ravel()
    return [float(flat.mean()), float(flat.std()), *np.quantile(flat, QUANTILES).tolist()]
