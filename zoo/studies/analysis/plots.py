"""Matplotlib helpers of the report's figures: a headless pyplot, labelled heatmaps of member pairs, strip plots over
boxes, panel grids and epoch axes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_TICK_LABELS = 80
JITTER = 0.15  # half the width over which a category's points spread


def _plt():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short_name(relpath: str, width: int = 28) -> str:
    """The last part of a member's path, cut to `width` characters."""
    name = relpath.rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"


def epoch_axis(ax) -> None:
    """An x axis of whole epochs."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")


def _heatmap(plt, matrix: np.ndarray, labels: list[str], title: str, cmap: str = "viridis",
             starts: list[int] | None = None):
    """A square matrix labelled with short member ids (the key is the members table); white lines part the lineages
    that begin at `starts` (members in `lineage_order`: each parent, then its children)."""
    size = min(3 + 0.3 * len(labels), 14)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap=cmap)
    fig.colorbar(image, ax=ax, fraction=0.046)
    for start in (starts or [])[1:]:
        ax.axhline(start - 0.5, color="white", linewidth=1.5)
        ax.axvline(start - 0.5, color="white", linewidth=1.5)
    if len(labels) <= MAX_TICK_LABELS:
        fontsize = 8 if len(labels) <= 30 else 6
        ticks = list(range(len(labels)))
        ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_title(title + ("" if len(labels) <= MAX_TICK_LABELS else f" ({len(labels)} members)"), fontsize=9)
    return fig


def strip_box(ax, groups: list[tuple[str, Any]], metric: str, seed: int = 0) -> None:
    """One category per (label, values): every value as a point, spread sideways by a seeded jitter and half
    transparent so equal values stay visible, over a light box where a category has 3 or more; the y axis is
    labelled with the metric."""
    rng = np.random.default_rng(seed)
    values = [np.asarray(v, dtype=np.float64) for _, v in groups]
    boxed = [x for x, ys in enumerate(values) if len(ys) >= 3]  # fewer points say it all themselves
    if boxed:
        ax.boxplot([values[x] for x in boxed], positions=boxed, widths=0.5, showfliers=False,
                   medianprops={"color": "black"}, boxprops={"color": "0.6"}, whiskerprops={"color": "0.6"},
                   capprops={"color": "0.6"})
    for x, ys in enumerate(values):
        spread = rng.uniform(-JITTER, JITTER, len(ys)) if len(ys) > 1 else 0.0
        ax.scatter(x + spread, ys, s=22, alpha=0.55, color=f"C{x % 10}", edgecolors="black", linewidths=0.4, zorder=3)
    ax.set_xticks(range(len(groups)), [f"{label}\n(n={len(ys)})" for (label, _), ys in zip(groups, values)],
                  rotation=30 if len(groups) > 4 else 0, fontsize=7)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(metric)


def panel_grid(plt, count: int, width: float, height: float, cols: int = 4):
    """A figure of `count` panels, at most `cols` a row, the unused ones hidden; returns (figure, flat axes)."""
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    return fig, axes.ravel()
