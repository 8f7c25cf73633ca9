"""The report's member tables: one row per member, the members' learning curves, and final metrics summarised per
pool (modality, stage, kind, metric) and generating factor value."""

from __future__ import annotations

from typing import Any

from zoo import layout
from zoo.studies.analysis.lineage import member_ids, parent_name, pretraining_mode

# groups whose final metrics may be pooled: one modality, stage, kind and metric
POOL_KEYS = ["modality", "stage", "kind", "metric"]


def _table_value(value: Any) -> Any:
    """A factor value as a table cell: numbers, texts, booleans and None as they are, anything else as text."""
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def member_table(members: list[layout.MemberInfo]) -> list[dict[str, Any]]:
    """One row per member: short id, path, stage, kind, parent, pretraining mode, state, progress, final metric and
    its generating factors (`factor_<name>` columns)."""
    by_path = {m.relpath: m for m in members}
    ids = member_ids(members)
    rows = []
    for member in members:
        row = {"id": ids[member.relpath], "member": member.relpath, "name": member.name, "modality": member.modality,
               "stage": member.stage, "kind": member.config.get("kind") or "?", "parent": parent_name(member),
               "mode": pretraining_mode(member, by_path), "state": member.state,
               "epochs_done": max(member.epochs_done - 1, 0), "checkpoints": len(member.checkpoints),
               "metric": member.metric, "final_metric": member.final_metric()}
        row.update({f"factor_{key}": _table_value(factor) for key, factor in member.factors.items()})
        rows.append(row)
    return rows


def curve_table(members: list[layout.MemberInfo]) -> list[dict[str, Any]]:
    """The numeric values of every member's result.json lines, one row per line."""
    rows = []
    for member in members:
        for result in member.results:
            row = {"member": member.relpath, "stage": member.stage, "kind": member.config.get("kind")}
            row.update({k: v for k, v in result.items() if isinstance(v, (int, float)) or v is None})
            rows.append(row)
    return rows


def _summary_row(keys: tuple, factor: str, value: str, values) -> dict[str, Any]:
    return {**dict(zip(POOL_KEYS, keys)), "factor": factor, "value": value, "count": len(values),
            "mean": values.mean(), "std": values.std(ddof=0), "min": values.min(), "max": values.max()}


def factor_summary(frame) -> list[dict[str, Any]]:
    """Final metrics of the members table per modality, stage, kind and metric, overall ('(all)') and per value of
    each generating factor."""
    done = frame.dropna(subset=["final_metric"])
    summary = []
    for keys, part in done.groupby(POOL_KEYS):
        summary.append(_summary_row(keys, "(all)", "(all)", part.final_metric))
        for column in [c for c in part.columns if c.startswith("factor_")]:
            for value, sub in part.groupby(part[column].astype(str)):
                if value not in ("nan", "None"):
                    summary.append(_summary_row(keys, column[len("factor_"):], value, sub.final_metric))
    return summary
