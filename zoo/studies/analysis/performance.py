"""The report's performance section: the members and curves tables, learning curves per modality and stage, and
final metrics per kind and per generating factor value."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from zoo import kinds, layout
from zoo.studies.analysis.plots import _plt, epoch_axis, panel_grid, strip_box
from zoo.studies.analysis.report import Report
from zoo.studies.analysis.tables import POOL_KEYS, curve_table, factor_summary, member_table

MAX_CURVES_PER_PANEL = 60


def _curve_panel(ax, title: str, part, curves, colours: dict[str, str]) -> None:
    """One modality and stage: each member's headline metric over epochs (at most MAX_CURVES_PER_PANEL members,
    evenly sampled); a colour per member when there are few, else one per kind."""
    shown = part.iloc[np.linspace(0, len(part) - 1, min(len(part), MAX_CURVES_PER_PANEL)).round().astype(int)]
    by_member = len(shown) <= 10
    labelled = set()
    for row in shown.itertuples():
        points = curves[curves.member == row.member]
        kind = row.kind
        if row.metric not in points or points[row.metric].isna().all():
            continue
        label = f"{row.id} ({kind})" if by_member else (kind if kind not in labelled else None)
        labelled.add(kind)
        ax.plot(points.epoch, points[row.metric], marker=".", alpha=0.75, label=label,
                color=None if by_member else colours[kind])
    metrics = ", ".join(sorted(set(part.metric)))
    extra = f", {len(shown)} of {len(part)} members" if len(shown) < len(part) else ""
    ax.set_title(f"{title}: {metrics}{extra}", fontsize=9)
    ax.set_ylabel(metrics)
    epoch_axis(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _learning_curves(report: Report, frame, curves) -> None:
    """One panel per modality and stage: each member's headline metric over epochs, coloured by kind."""
    panels = {f"{modality} {stage}": part for modality in kinds.MODALITIES for stage in kinds.STAGES
              if len(part := frame[(frame.modality == modality) & (frame.stage == stage)])}
    if not panels or not len(curves):
        return
    fig, axes = panel_grid(_plt(), len(panels), 5.5, 4, cols=2)
    colours = {kind: f"C{i}" for i, kind in enumerate(sorted(set(frame.kind)))}
    for ax, (title, part) in zip(axes, panels.items()):
        _curve_panel(ax, title, part, curves, colours)
    report.md("Learning curves (from result.json; ids as in the members table):\n")
    report.figure("learning_curves", fig)


def _label_key(label: str) -> tuple:
    """Factor values in their natural order: numbers by value, then texts, 'none' last."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1 + (label == "none"), 0.0, label)


def _as_labels(column):
    """Text labels of a column for plotting; missing values (None, NaN) read as 'none'."""
    import pandas as pd

    return column.map(lambda value: "none" if value is None or (not isinstance(value, str) and pd.isna(value))
                      else str(value)).astype(object)


def _by_stage_figure(report: Report, done) -> None:
    """Final metrics per modality and stage, a strip of points per kind."""
    keys = sorted(done.groupby(["modality", "stage", "metric"]).groups)
    fig, axes = panel_grid(_plt(), len(keys), 4, 3.5, cols=len(keys))
    for ax, (modality, stage, metric) in zip(axes, keys):
        part = done[(done.modality == modality) & (done.stage == stage) & (done.metric == metric)]
        kind_labels = _as_labels(part.kind)
        strip_box(ax, [(k, part[kind_labels == k].final_metric) for k in sorted(set(kind_labels))], f"final {metric}")
        ax.set_title(f"{modality} {stage}: final {metric}", fontsize=9)
    report.figure("final_metric_by_stage", fig)


def _varied_factors(summary: list[dict[str, Any]]) -> list[tuple]:
    """The (modality, stage, kind, metric, factor) pools in which a generating factor takes more than one value."""
    group_keys = [*POOL_KEYS, "factor"]
    values: dict[tuple, set] = defaultdict(set)
    for row in summary:
        if row["factor"] != "(all)":
            values[tuple(row[k] for k in group_keys)].add(row["value"])
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def _by_factor_figure(report: Report, done, varied: list[tuple]) -> None:
    """Final metrics per value of each varying generating factor, a panel per pool and factor."""
    fig, axes = panel_grid(_plt(), len(varied), 3.6, 3.4)
    for ax, (modality, stage, kind, metric, factor) in zip(axes, varied):
        part = done[(done.modality == modality) & (done.stage == stage) & (done.kind == kind)
                    & (done.metric == metric)]
        labels_of = _as_labels(part[f"factor_{factor}"])
        strip_box(ax, [(label, part[labels_of == label].final_metric)
                       for label in sorted(set(labels_of), key=_label_key)], f"final {metric}")
        ax.set_xlabel(factor)
        ax.set_title(f"{modality} {kind}: final {metric} by {factor}", fontsize=8)
    report.figure("final_metric_by_factor", fig)


def performance_section(report: Report, members: list[layout.MemberInfo]) -> None:
    import pandas as pd

    report.md("## Performance\n")
    frame = report.table("members", member_table(members))
    report.markdown_table(frame[["id", "member", "stage", "kind", "mode", "state", "metric", "final_metric"]])
    curves = report.table("curves", curve_table(members))
    _learning_curves(report, frame, curves)
    summary = factor_summary(frame)
    report.md("\nFinal metrics per modality, stage and kind, and per generating factor:\n")
    summary_frame = report.table("factor_summary", pd.DataFrame(summary))
    report.markdown_table(summary_frame[summary_frame.factor == "(all)"] if len(summary_frame) else summary_frame)
    done = frame.dropna(subset=["final_metric"])
    if len(done):
        _by_stage_figure(report, done)
        varied = _varied_factors(summary)
        if varied:
            _by_factor_figure(report, done, varied)
