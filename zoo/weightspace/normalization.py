"""Normalisation statistics per tensor name: the mean and standard deviation of all values of that tensor over the
train-split checkpoints of a selection, computed in one streamed pass (one checkpoint, one tensor at a time, float64
moments merged pairwise) and cached as JSON in the source's cache folder, named by a hash of the checkpoints they
cover. A tensor whose values do not vary gets std 1; a tensor no train checkpoint has is left as it is."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from zoo import layout

from .errors import WeightSpaceError
from .formats import Stats
from .sources import Source

logger = logging.getLogger("zoo")

STATS_FORMAT = "transformer-zoo/weightspace-stats/v1"


@dataclass
class Moments:
    """Count, mean and sum of squared deviations of a stream of values (merged as Chan et al. do)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: torch.Tensor) -> None:
        values = values.reshape(-1).to(torch.float64)
        count = values.numel()
        if count == 0:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    @property
    def std(self) -> float:
        std = math.sqrt(self.m2 / self.count) if self.count else 0.0
        return std if std > 0 else 1.0


def selection_hash(checkpoints: Iterable[tuple[str, int]]) -> str:
    """A hash of a set of (member relpath, epoch) checkpoints, independent of their order."""
    text = json.dumps(sorted([relpath, int(epoch)] for relpath, epoch in checkpoints))
    return hashlib.sha256(f"{STATS_FORMAT}\n{text}".encode()).hexdigest()[:24]


def compute_stats(source: Source, checkpoints: list[tuple[str, int]]) -> dict[str, Moments]:
    """The moments of every tensor name over the checkpoints, read one checkpoint and one tensor at a time."""
    moments: dict[str, Moments] = {}
    for relpath, epoch in checkpoints:
        with source.open_weights(relpath, epoch) as handle:
            for name in handle.keys():
                moments.setdefault(name, Moments()).add(handle.get_tensor(name))
    return moments


def _stats_json(moments: dict[str, Moments], count: int) -> dict[str, Any]:
    return {"format": STATS_FORMAT, "checkpoints": count,
            "tensors": {name: {"mean": m.mean, "std": m.std, "count": m.count} for name, m in sorted(moments.items())}}


def _from_json(data: dict[str, Any]) -> Stats:
    return {name: (float(entry["mean"]), float(entry["std"])) for name, entry in data["tensors"].items()}


def train_stats(source: Source, checkpoints: list[tuple[str, int]]) -> Stats:
    """name -> (mean, std) over the given train checkpoints: from the cache, else computed and cached."""
    if not checkpoints:
        raise WeightSpaceError("normalize=True needs train-split checkpoints in the selection to compute statistics "
                               "from, and it has none")
    path = source.cache_dir() / f"stats-{selection_hash(checkpoints)}.json"
    if path.is_file():
        try:
            return _from_json(layout.read_json(path))
        except (layout.LayoutError, KeyError, TypeError, ValueError):
            logger.info("%s: unreadable; computing the statistics again", path)
    data = _stats_json(compute_stats(source, checkpoints), len(checkpoints))
    try:
        layout.atomic_write_json(path, data)
    except OSError as err:
        logger.info("cannot cache normalisation statistics at %s (%s); they are kept in memory",
                    path, err.strerror or err)
    return _from_json(data)
