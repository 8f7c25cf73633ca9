"""Performance plots of the dataset card: one PNG per (modality, stage)."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import numpy as np

from zoo import kinds
from zoo.publish.columns import sort_label, text_value
from zoo.publish.common import PLOTS_DIR
from zoo.publish.stage import Selected

MAX_FACTOR_VALUES = 24  # factors with more distinct values get no panel
MAX_CURVES = 300  # curves drawn per plot; the rank and factor panels show every member
JITTER = 0.15  # factor panels: points of one value spread over twice this width, so equal values stay visible


def _summaries(selected: list[Selected]) -> list[dict[str, Any]]:
    out = []
    for item in selected:
        member = item.member
        metric = member.metric
        curve = [(int(row["epoch"]), row.get(metric)) for row in member.results if "epoch" in row]
        curve = [(epoch, value) for epoch, value in curve if isinstance(value, (int, float))]
        final = member.final_metric() if curve else None
        out.append({"modality": member.modality, "stage": member.stage, "metric": metric, "curve": curve,
                    "value": final,
                    "factors": {"kind": member.config.get("kind"), **member.factors}})
    return out


def _varying_factors(group: list[dict[str, Any]]) -> list[str]:
    """The factors, in the order first seen, that take 2 to MAX_FACTOR_VALUES values among members with a value."""
    factors: dict[str, None] = {}
    for s in group:
        for key in s["factors"]:
            factors.setdefault(key, None)
    return [key for key in factors  # a factor with a value per member (a seed) says nothing here
            if 1 < len({text_value(s["factors"].get(key)) for s in group if s["value"] is not None})
            <= MAX_FACTOR_VALUES]


def _factor_panel(ax, group: list[dict[str, Any]], key: str, metric: str) -> None:
    """The final metric of each member against one factor's values: points spread sideways by a seeded jitter and
    half transparent (equal values stay visible), the mean of each value as a black bar."""
    points = [(text_value(s["factors"].get(key)) or "null", s["value"]) for s in group if s["value"] is not None]
    labels = sorted({label for label, _ in points}, key=sort_label)
    where = {label: pos for pos, label in enumerate(labels)}
    counts = Counter(label for label, _ in points)
    jitter = np.random.default_rng(0).uniform(-JITTER, JITTER, len(points))  # seeded: the same PNG every time
    ax.plot([where[label] + (dx if counts[label] > 1 else 0.0) for (label, _), dx in zip(points, jitter)],
            [value for _, value in points], "o", alpha=0.5, markeredgecolor="black", markeredgewidth=0.4)
    means = [sum(v for lab, v in points if lab == label) / sum(1 for lab, _ in points if lab == label)
             for label in labels]
    ax.plot(range(len(labels)), means, "_", markersize=20, color="black")
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set(title=f"by {key}", xlabel=key, ylabel=metric)


def render_plots(selected: list[Selected], max_factors: int = 6) -> list[dict[str, Any]]:
    """One PNG per (modality, stage): the metric's curves over epochs, its final value across members, and the
    final value against each generating factor that varies. PNGs carry no metadata, so they are reproducible."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summaries = _summaries(selected)
    plots = []
    for modality in kinds.MODALITIES:
        for stage in kinds.STAGES:
            group = [s for s in summaries if s["modality"] == modality and s["stage"] == stage and s["metric"]]
            if not group:
                continue
            metric = Counter(s["metric"] for s in group).most_common(1)[0][0]
            group = [s for s in group if s["metric"] == metric]
            values = [s["value"] for s in group if s["value"] is not None]
            if not values:
                continue
            varying = _varying_factors(group)[:max_factors]
            panels = 2 + len(varying)
            columns = min(panels, 4)
            rows = -(-panels // columns)
            fig = Figure(figsize=(3.4 * columns, 2.9 * rows + 0.4), dpi=90)
            FigureCanvasAgg(fig)
            axes = fig.subplots(rows, columns, squeeze=False).reshape(-1)
            for ax in axes[panels:]:
                ax.set_axis_off()
            for s in group[::max(1, -(-len(group) // MAX_CURVES))]:
                if s["curve"]:
                    axes[0].plot(*zip(*s["curve"]), marker=".", alpha=0.6, linewidth=1)
            axes[0].set(title="over training", xlabel="epoch", ylabel=metric)
            ranked = sorted(values)
            axes[1].plot(range(1, len(ranked) + 1), ranked, "o")
            axes[1].set(title=f"{len(ranked)} members", xlabel="rank", ylabel=metric)
            for ax, key in zip(axes[2:], varying):
                _factor_panel(ax, group, key, metric)
            fig.suptitle(f"{modality} {stage}: {metric}")
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", metadata={"Software": None})
            plots.append({"path": f"{PLOTS_DIR}/{modality}_{stage}.png", "data": buffer.getvalue(),
                          "title": f"{modality.capitalize()} {stage}: {metric} across members and factors"})
    return plots
