"""The report's weight-space section: pairwise L2 distance and cosine similarity of flattened shared backbone weights
(within and across parents, per pretraining mode), per-layer weight norms at every checkpoint, and the distance a
finetuned member's backbone travelled from its parent's checkpoint."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from zoo import kinds, layout
from zoo.studies.analysis.lineage import even_sample, lineage_order, parent_name, pretraining_mode
from zoo.studies.analysis.plots import _heatmap, _plt, epoch_axis, short_name
from zoo.studies.analysis.report import Report
from zoo.studies.weights import (
    Reader,
    gram_to_pairwise,
    is_backbone,
    layer_group,
    shared_keys,
    weight_gram,
    weight_shapes,
)


def _both(is_stage, stage_a: str, stage_b: str) -> bool:
    return is_stage(stage_a) and is_stage(stage_b)


def _relation(row) -> str:
    """How the two members of a weight_pairs row are related."""
    if row.same_parent:
        return "same parent"
    if _both(kinds.is_finetuning, row.stage_a, row.stage_b):
        return "across parents"
    if row.parent_a == row.member_b or row.parent_b == row.member_a:
        return "parent-child"
    return kinds.PRETRAINING if _both(kinds.is_pretraining, row.stage_a, row.stage_b) else "other"


def _pair_rows(modality: str, chosen: list[layout.MemberInfo], dist: np.ndarray, cosine: np.ndarray, size: int,
               by_path: dict[str, layout.MemberInfo]) -> list[dict[str, Any]]:
    rows = []
    for i, a in enumerate(chosen):
        for j in range(i + 1, len(chosen)):
            b = chosen[j]
            rows.append({
                "modality": modality, "member_a": a.relpath, "member_b": b.relpath, "stage_a": a.stage,
                "stage_b": b.stage, "parent_a": parent_name(a), "parent_b": parent_name(b),
                "mode_a": pretraining_mode(a, by_path), "mode_b": pretraining_mode(b, by_path),
                "same_parent": _both(kinds.is_finetuning, a.stage, b.stage) and parent_name(a) == parent_name(b),
                "l2": float(dist[i, j]), "cosine": float(cosine[i, j]), "parameters": size})
    return rows


def _pairwise_weights(report: Report, modality: str, chosen: list[layout.MemberInfo],
                      by_path: dict[str, layout.MemberInfo], ids: dict[str, str]) -> list[dict[str, Any]]:
    """Pairwise L2 distance and cosine similarity of the members' shared backbone weights, with heatmaps."""
    chosen, starts = lineage_order(chosen, ids)
    checkpoints = [m.checkpoint_dir() for m in chosen]
    keys = shared_keys(checkpoints, backbone=True)
    if not keys:
        report.md(f"{modality}: the members share no backbone parameter; no pairwise weight metrics.\n")
        return []
    dist, cosine = gram_to_pairwise(weight_gram(checkpoints, keys))
    shapes = weight_shapes(checkpoints[0])
    size = sum(int(np.prod(shapes[k][1])) for k in keys)
    report.md(f"{modality}: {len(chosen)} members, {len(keys)} shared backbone tensors ({size} parameters; "
              "task heads left out).\n")
    plt = _plt()
    labels = [ids[m.relpath] for m in chosen]
    report.md("Members in lineages, each parent before its children (white lines part the lineages).\n")
    report.figure(f"weight_l2_{modality}", _heatmap(plt, dist, labels, f"{modality}: L2 distance of weights",
                                                    starts=starts))
    report.figure(f"weight_cosine_{modality}", _heatmap(plt, cosine, labels, f"{modality}: cosine similarity",
                                                        "magma", starts))
    report.id_key([m.relpath for m in chosen], ids)
    return _pair_rows(modality, chosen, dist, cosine, size, by_path)


def _weight_summary(report: Report, pair_rows: list[dict[str, Any]]) -> None:
    report.md("Pairwise distances (each pair once):\n")
    pairs = report.table("weight_pairs", pair_rows)
    if not len(pairs):
        return
    pairs = pairs.assign(relation=pairs.apply(_relation, axis=1))
    summary = pairs.groupby(["modality", "relation", "mode_a", "mode_b"]).agg(
        pairs=("l2", "size"), l2_mean=("l2", "mean"), cosine_mean=("cosine", "mean")).reset_index()
    report.md("Within and across parents, per pretraining mode:\n")
    report.table("weight_summary", summary)
    report.markdown_table(summary)


def _parent_checkpoint(member: layout.MemberInfo, by_path: dict[str, layout.MemberInfo]) -> Path | None:
    """The parent checkpoint a finetuned member started from, when it is in the zoo."""
    parent = member.parent or {}
    parent_member = by_path.get(str(parent.get("path")))
    if not kinds.is_finetuning(member.stage) or parent_member is None or not parent.get("checkpoint"):
        return None
    checkpoint = parent_member.path / parent["checkpoint"]
    return checkpoint if checkpoint.is_dir() else None


def checkpoint_norms(checkpoint: Path, parent: Path | None) -> tuple[dict[str, float], tuple[float, float, int]]:
    """Squared weight norm per layer group of a checkpoint, and (squared distance, squared norm, tensors) of its
    backbone from the parent checkpoint's; one tensor (and its parent's) in memory at a time."""
    reader = Reader([checkpoint] if parent is None else [checkpoint, parent])
    groups: dict[str, float] = defaultdict(float)
    moved = base = 0.0
    count = 0
    for key in reader.keys(0):
        value = reader.get(0, key)
        if not np.issubdtype(value.dtype, np.floating):
            continue
        value = value.astype(np.float64)
        groups[layer_group(key)] += float(np.sum(value ** 2))
        if parent is not None and key in reader.names[1] and is_backbone(key):
            ref = reader.get(1, key)
            if ref.shape == value.shape:
                moved += float(np.sum((value - ref) ** 2))
                base += float(np.sum(ref.astype(np.float64) ** 2))
                count += 1
    return groups, (moved, base, count)


def _norms_and_travel(members: list[layout.MemberInfo], by_path: dict[str, layout.MemberInfo]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from tqdm.auto import tqdm

    norm_rows, travel_rows = [], []
    for member in tqdm(members, desc="weight norms", leave=False, disable=len(members) < 2):
        parent = _parent_checkpoint(member, by_path)
        for epoch in member.checkpoints:
            groups, (moved, base, count) = checkpoint_norms(member.checkpoint_dir(epoch), parent)
            norm_rows.extend({"member": member.relpath, "stage": member.stage, "epoch": epoch, "layer": group,
                              "norm": math.sqrt(squared)} for group, squared in groups.items())
            if parent is not None:
                travel_rows.append({"member": member.relpath, "parent": parent_name(member),
                                    "mode": pretraining_mode(member, by_path), "epoch": epoch,
                                    "distance": math.sqrt(moved),
                                    "relative": math.sqrt(moved / base) if base else float("nan"),
                                    "shared_tensors": count})
    return norm_rows, travel_rows


def _norm_figure(report: Report, norms) -> None:
    plt = _plt()
    stages = sorted(set(norms.stage))
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        part = norms[norms.stage == stage].groupby(["layer", "epoch"]).norm.mean().reset_index()
        for layer_name, sub in part.groupby("layer"):
            ax.plot(sub.epoch, sub.norm, marker=".", label=layer_name)
        ax.set_title(f"{stage}: mean per-layer norm", fontsize=9)
        epoch_axis(ax)
        ax.legend(fontsize=6)
    report.figure("layer_norms", fig)


def _travel_figure(report: Report, travel, ids: dict[str, str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, sub in travel.groupby("member"):
        ax.plot(sub.epoch, sub.distance, marker=".", label=ids.get(name, short_name(name)))
    epoch_axis(ax)
    ax.set_ylabel("L2 distance from parent")
    ax.set_title("Distance travelled from the parent checkpoint", fontsize=9)
    if travel.member.nunique() <= 12:
        ax.legend(fontsize=7)
    report.figure("distance_travelled", fig)


def weight_section(report: Report, members: list[layout.MemberInfo], cap: int | None, ids: dict[str, str]) -> None:
    report.md("## Weight space\n")
    by_path = {m.relpath: m for m in members}
    usable = [m for m in members if m.checkpoints]
    pair_rows: list[dict[str, Any]] = []
    for modality in kinds.MODALITIES:
        chosen = even_sample([m for m in usable if m.modality == modality], cap)
        if len(chosen) >= 2:
            pair_rows += _pairwise_weights(report, modality, chosen, by_path, ids)
    _weight_summary(report, pair_rows)
    norm_rows, travel_rows = _norms_and_travel(even_sample(usable, cap), by_path)
    report.md("\nPer-layer weight norms at every checkpoint:\n")
    norms = report.table("layer_norms", norm_rows)
    if len(norms):
        _norm_figure(report, norms)
    report.md("\nDistance travelled from the parent checkpoint (shared backbone parameters):\n")
    travel = report.table("distance_travelled", travel_rows)
    if len(travel):
        _travel_figure(report, travel, ids)
