"""Diversity and performance analysis of a zoo (`zoo analyze`) and weight-space learning baselines (`zoo benchmark`).

`zoo analyze ZOO --out DIR` writes `DIR/report.md`, figures as `DIR/figures/*.png` and every number as
`DIR/tables/<name>.parquet` and `.csv`:

- members: one row per member (stage, kind, parent, pretraining mode, factors, final metric);
- curves: the members' result.json lines (learning curves);
- factor_summary: final metrics per stage and per generating factor value;
- soups: per parent, test metrics of the best ingredient (by validation accuracy), the uniform soup, the greedy soup
  and the epoch-averaged best ingredient (soups computed in memory with `zoo.soups`, not written);
- weight_pairs / weight_summary: pairwise L2 distance and cosine similarity of flattened shared weights, within and
  across parents, per pretraining mode (a Gram matrix built one parameter tensor at a time);
- layer_norms: per-layer weight norms at every checkpoint; distance_travelled: L2 distance of a finetuned member's
  backbone from its parent's checkpoint, per epoch;
- behaviour_pairs: pairwise prediction agreement and linear CKA of the last hidden representation (CLS token for ViT,
  last non-pad token for GPT-2) on the test split, per data set.

Weights are read with safetensors (never pickle); names are mapped so that a parent's keys (`encoder.*`, `h.*`)
match its children's (`vit.encoder.*`, `transformer.h.*`). Checkpoints are streamed, one or a few in memory.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from zoo import layout, soups

_PREFIXES = ("vit.", "transformer.")
_LAYER_RE = re.compile(r"^(?:encoder\.layer|h|layers)\.(\d+)\.")
MIN_BENCHMARK_MEMBERS = 4
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


class AnalysisError(ValueError):
    """Bad analysis input: an empty zoo, too few members for a benchmark."""


# ---------------------------------------------------------------- weights


def canonical(key: str) -> str:
    """A parameter's name without its task wrapper: `vit.encoder.layer.0...` and `encoder.layer.0...` match."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def layer_group(key: str) -> str:
    """`encoder.layer.3.attention...` -> `layer.3`; `embeddings.cls_token` -> `embeddings`."""
    key = canonical(key)
    match = _LAYER_RE.match(key)
    return f"layer.{int(match.group(1))}" if match else key.split(".")[0]


def weight_shapes(checkpoint: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """canonical name -> (saved name, shape) of a checkpoint's floating tensors, from the header only."""
    header = layout.read_safetensors_header(Path(checkpoint) / layout.WEIGHTS)
    return {canonical(key): (key, tuple(info["shape"])) for key, info in header.items()
            if key != "__metadata__" and info["dtype"].startswith(("F", "BF"))}


HEAD_PREFIXES = ("classifier", "score", "lm_head", "pooler")


def is_backbone(key: str) -> bool:
    """A parameter of the shared backbone, not of a task head (heads of different tasks are not comparable)."""
    return not canonical(key).startswith(HEAD_PREFIXES)


def shared_keys(checkpoints: list[Path], backbone: bool = False) -> list[str]:
    """Canonical names present with the same shape in every checkpoint (only backbone ones with `backbone`), sorted."""
    common: dict[str, tuple[int, ...]] | None = None
    for checkpoint in checkpoints:
        shapes = {key: shape for key, (_, shape) in weight_shapes(checkpoint).items()}
        common = shapes if common is None else {k: s for k, s in common.items() if shapes.get(k) == s}
    return sorted(key for key in common or {} if not backbone or is_backbone(key))


class _Reader:
    """Open safetensors files of checkpoints, reading one tensor at a time by canonical name."""

    def __init__(self, checkpoints: list[Path]):
        from safetensors import safe_open

        self.handles = [safe_open(str(Path(c) / layout.WEIGHTS), framework="np") for c in checkpoints]
        self.names = [{canonical(key): key for key in handle.keys()} for handle in self.handles]

    def get(self, index: int, key: str) -> np.ndarray:
        return self.handles[index].get_tensor(self.names[index][key])


def weight_gram(checkpoints: list[Path], keys: list[str] | None = None) -> np.ndarray:
    """Gram matrix of the checkpoints' flattened weights (restricted to `keys`, default: the shared ones), built one
    parameter tensor of all checkpoints at a time."""
    keys = shared_keys(checkpoints) if keys is None else keys
    reader = _Reader(checkpoints)
    gram = np.zeros((len(checkpoints), len(checkpoints)))
    for key in keys:
        block = np.stack([reader.get(i, key).astype(np.float64).ravel() for i in range(len(checkpoints))])
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


# ---------------------------------------------------------------- behaviour


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same examples (rows)."""
    x = x.astype(np.float64) - x.mean(0, keepdims=True)
    y = y.astype(np.float64) - y.mean(0, keepdims=True)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else float("nan")


# ---------------------------------------------------------------- members


def _mode(member: layout.MemberInfo, by_path: dict[str, layout.MemberInfo]) -> str:
    """The pretraining mode of a member's lineage: its own kind for pretraining members, the parent's for children."""
    if member.stage == "pretraining":
        return str(member.config.get("kind") or "?")
    parent = member.parent or {}
    if parent.get("kind"):
        return str(parent["kind"])
    found = by_path.get(str(parent.get("path"))) or next(
        (m for m in by_path.values() if m.name == parent.get("member")), None)
    return str(found.config.get("kind")) if found else "?"


def _parent_name(member: layout.MemberInfo) -> str | None:
    parent = member.parent or {}
    return parent.get("path") or parent.get("member")


def _final_metric(member: layout.MemberInfo) -> tuple[str, float | None]:
    metric = member.config.get("metric", "test_acc")
    last = member.last_result or {}
    value = last.get(metric)
    return metric, (float(value) if value is not None else None)


def member_table(members: list[layout.MemberInfo]) -> list[dict[str, Any]]:
    by_path = {m.relpath: m for m in members}
    rows = []
    for member in members:
        metric, value = _final_metric(member)
        row = {"member": member.relpath, "name": member.name, "modality": member.modality, "stage": member.stage,
               "kind": member.config.get("kind"), "parent": _parent_name(member), "mode": _mode(member, by_path),
               "state": member.state, "epochs_done": max(member.epochs_done - 1, 0), "checkpoints": len(
                   member.checkpoints), "metric": metric, "final_metric": value}
        for key, factor in member.factors.items():
            row[f"factor_{key}"] = factor if isinstance(factor, (int, float, str, bool)) or factor is None else str(
                factor)
        rows.append(row)
    return rows


def curve_table(members: list[layout.MemberInfo]) -> list[dict[str, Any]]:
    rows = []
    for member in members:
        for result in member.results:
            row = {"member": member.relpath, "stage": member.stage, "kind": member.config.get("kind")}
            row.update({k: v for k, v in result.items() if isinstance(v, (int, float)) or v is None})
            rows.append(row)
    return rows


# ---------------------------------------------------------------- report helpers


class Report:
    """Collects tables, figures and markdown of one report folder."""

    def __init__(self, out: Path):
        self.out = out
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self.tables: dict[str, int] = {}
        self.figures: list[str] = []

    def table(self, name: str, rows: list[dict[str, Any]] | Any) -> Any:
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        for column in frame.columns:  # parquet needs one type per column
            if frame[column].dtype == object:
                frame[column] = frame[column].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
        frame.to_parquet(self.out / "tables" / f"{name}.parquet", index=False)
        frame.to_csv(self.out / "tables" / f"{name}.csv", index=False)
        self.tables[name] = len(frame)
        self.lines.append(f"Table: [`tables/{name}.csv`](tables/{name}.csv) ([parquet](tables/{name}.parquet)), "
                          f"{len(frame)} rows.\n")
        return frame

    def figure(self, name: str, fig) -> None:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        fig.savefig(self.out / "figures" / f"{name}.png", dpi=110)
        plt.close(fig)
        self.figures.append(name)
        self.lines.append(f"![{name}](figures/{name}.png)\n")

    def md(self, text: str = "") -> None:
        self.lines.append(text)

    def markdown_table(self, frame, max_rows: int = 30, floatfmt: str = ".4f") -> None:
        if frame is None or len(frame) == 0:
            return
        shown = frame.head(max_rows)
        header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
        self.lines.append(header)
        self.lines.append("|" + "---|" * len(shown.columns))
        for _, row in shown.iterrows():
            cells = [format(v, floatfmt) if isinstance(v, float) and not math.isnan(v) else str(v) for v in row]
            self.lines.append("| " + " | ".join(cells) + " |")
        if len(frame) > max_rows:
            self.lines.append(f"\n({len(frame) - max_rows} more rows in the table file)")
        self.lines.append("")

    def write(self) -> Path:
        layout.atomic_write_text(self.out / "report.md", "\n".join(self.lines) + "\n")
        return self.out / "report.md"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(relpath: str, width: int = 28) -> str:
    name = relpath.rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"


def _heatmap(plt, matrix: np.ndarray, labels: list[str], title: str, cmap: str = "viridis"):
    size = min(2 + 0.35 * len(labels), 14)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap=cmap)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(labels))
    ax.set_xticks(list(ticks), [_short(label) for label in labels], rotation=90, fontsize=6)
    ax.set_yticks(list(ticks), [_short(label) for label in labels], fontsize=6)
    ax.set_title(title)
    return fig


def _cap(members: list[layout.MemberInfo], cap: int | None) -> list[layout.MemberInfo]:
    return members if cap is None or len(members) <= cap else members[:cap]


# ---------------------------------------------------------------- sections


def performance_section(report: Report, members: list[layout.MemberInfo]) -> None:
    import pandas as pd

    plt = _plt()
    report.md("## Performance\n")
    frame = report.table("members", member_table(members))
    report.markdown_table(frame[["member", "stage", "kind", "mode", "state", "metric", "final_metric"]])
    curves = report.table("curves", curve_table(members))
    groups = [(stage, metric) for stage in layout.STAGES for metric in sorted(set(frame[frame.stage == stage].metric))]
    if groups and len(curves):
        fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
        for ax, (stage, metric) in zip(axes[0], groups):
            names = frame[(frame.stage == stage) & (frame.metric == metric)].member
            for name in names:
                part = curves[curves.member == name]
                if metric in part:
                    ax.plot(part.epoch, part[metric], marker=".", alpha=0.7, label=_short(name))
            ax.set_title(f"{stage}: {metric}")
            ax.set_xlabel("epoch")
            if len(names) <= 8:
                ax.legend(fontsize=6)
        report.md("Learning curves (from result.json):\n")
        report.figure("learning_curves", fig)
    # distributions per stage and per factor
    summary = []
    done = frame.dropna(subset=["final_metric"])
    for (stage, metric), part in done.groupby(["stage", "metric"]):
        summary.append({"stage": stage, "metric": metric, "factor": "(all)", "value": "(all)", "count": len(part),
                        "mean": part.final_metric.mean(), "std": part.final_metric.std(ddof=0),
                        "min": part.final_metric.min(), "max": part.final_metric.max()})
        for column in [c for c in part.columns if c.startswith("factor_")]:
            for value, sub in part.groupby(part[column].astype(str)):
                if value in ("nan", "None"):
                    continue
                summary.append({"stage": stage, "metric": metric, "factor": column[len("factor_"):], "value": value,
                                "count": len(sub), "mean": sub.final_metric.mean(),
                                "std": sub.final_metric.std(ddof=0), "min": sub.final_metric.min(),
                                "max": sub.final_metric.max()})
    report.md("\nFinal metrics per stage and per generating factor:\n")
    summary_frame = report.table("factor_summary", pd.DataFrame(summary))
    report.markdown_table(summary_frame[summary_frame.factor == "(all)"] if len(summary_frame) else summary_frame)
    if len(done):
        keys = sorted(done.groupby(["stage", "metric"]).groups)
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
        for ax, (stage, metric) in zip(axes[0], keys):
            part = done[(done.stage == stage) & (done.metric == metric)]
            kind_labels = _as_labels(part.kind)
            kinds = sorted(set(kind_labels))
            ax.boxplot([part[kind_labels == k].final_metric for k in kinds], tick_labels=kinds)
            ax.set_title(f"{stage}: final {metric}")
            ax.tick_params(axis="x", labelsize=7)
        report.figure("final_metric_by_stage", fig)
        varied = [(stage, metric, f) for stage, metric, f in
                  {(r["stage"], r["metric"], r["factor"]) for r in summary if r["factor"] != "(all)"}
                  if len({r["value"] for r in summary if (r["stage"], r["metric"], r["factor"]) == (stage, metric, f)})
                  > 1]
        varied.sort()
        if varied:
            cols = min(4, len(varied))
            rows = math.ceil(len(varied) / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
            for ax, (stage, metric, factor) in zip(axes.ravel(), varied):
                part = done[(done.stage == stage) & (done.metric == metric)]
                values = _as_labels(part[f"factor_{factor}"])
                labels = sorted(set(values))
                for x, label in enumerate(labels):
                    ys = part[values == label].final_metric
                    ax.scatter([x] * len(ys), ys, alpha=0.7)
                ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
                ax.set_title(f"{stage} {metric} by {factor}", fontsize=8)
            for ax in axes.ravel()[len(varied):]:
                ax.axis("off")
            report.figure("final_metric_by_factor", fig)


def _as_labels(column):
    """Text labels of a column for plotting; missing values (None, NaN) read as 'none'."""
    import pandas as pd

    return column.map(lambda value: "none" if value is None or (not isinstance(value, str) and pd.isna(value))
                      else str(value)).astype(object)


def soups_section(report: Report, members: list[layout.MemberInfo], tasks: soups.TaskCache, batch_size: int,
                  epochs_last: int = 3) -> None:
    plt = _plt()
    report.md("## Soups\n")
    by_path = {m.relpath: m for m in members}
    parents: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in members:
        if member.stage == "finetuning" and member.parent and soups.is_classifier(member):
            parents[_parent_name(member)].append(member)
    rows = []
    for parent, children in sorted(parents.items()):
        row: dict[str, Any] = {"parent": parent, "mode": _mode(children[0], by_path), "children": len(children)}
        try:
            greedy = soups.greedy_soup(children, tasks, batch_size, what=f"children of {parent}")
        except (ValueError, layout.LayoutError) as err:
            row["note"] = str(err)
            rows.append(row)
            continue
        best = greedy.extra["best_ingredient"]
        souped = len(greedy.extra["candidates"])
        uniform = greedy.extra.get("uniform_soup") or {k: best[k] for k in ("validation_acc", "test_acc")}
        best_member = by_path[best["member"]]
        epoch = soups.epoch_soup(best_member, epochs_last, tasks, batch_size)
        row.update({
            "souped": souped, "excluded": len(greedy.excluded), "best_ingredient": best["member"],
            "best_ingredient_test_acc": best["test_acc"], "uniform_soup_test_acc": uniform["test_acc"],
            "greedy_soup_test_acc": greedy.metrics["test_acc"], "greedy_ingredients": len(greedy.ingredients),
            "epoch_avg_test_acc": epoch.metrics.get("test_acc"), "epoch_avg_checkpoints": len(epoch.ingredients),
            "best_ingredient_val_acc": best["validation_acc"], "uniform_soup_val_acc": uniform["validation_acc"],
            "greedy_soup_val_acc": greedy.metrics["validation_acc"],
            "note": "; ".join(f"left out {e['member']}: {e['reason']}" for e in greedy.excluded),
        })
        rows.append(row)
    if not rows:
        report.md("No finetuned classification members: no soups.\n")
        return
    report.md("Per parent: the best single ingredient (chosen by validation accuracy), the uniform and greedy soups of "
              "its largest compatible group of children, and the best ingredient averaged over its last "
              f"{epochs_last} checkpoints; test accuracy, with validation used only for choosing.\n")
    frame = report.table("soups", rows)
    shown = [c for c in ("parent", "mode", "souped", "best_ingredient_test_acc", "uniform_soup_test_acc",
                         "greedy_soup_test_acc", "epoch_avg_test_acc") if c in frame]
    report.markdown_table(frame[shown])
    scored = frame.dropna(subset=["greedy_soup_test_acc"]) if "greedy_soup_test_acc" in frame else frame.head(0)
    if len(scored):
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(scored)), 3.5))
        kinds = ["best_ingredient_test_acc", "uniform_soup_test_acc", "greedy_soup_test_acc", "epoch_avg_test_acc"]
        width = 0.2
        for index, kind in enumerate(kinds):
            ax.bar(np.arange(len(scored)) + index * width, scored[kind].astype(float), width,
                   label=kind.replace("_test_acc", ""))
        ax.set_xticks(np.arange(len(scored)) + 1.5 * width, [_short(p) for p in scored.parent], fontsize=7)
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
        report.figure("soups", fig)


def weight_section(report: Report, members: list[layout.MemberInfo], cap: int | None) -> None:
    from tqdm.auto import tqdm

    plt = _plt()
    report.md("## Weight space\n")
    by_path = {m.relpath: m for m in members}
    usable = [m for m in members if m.checkpoints]
    pair_rows, norm_rows, travel_rows = [], [], []
    for modality in layout.MODALITIES:
        chosen = _cap([m for m in usable if m.modality == modality], cap)
        if len(chosen) < 2:
            continue
        checkpoints = [m.checkpoint_dir() for m in chosen]
        keys = shared_keys(checkpoints, backbone=True)
        if not keys:
            report.md(f"{modality}: the members share no backbone parameter; no pairwise weight metrics.\n")
            continue
        gram = weight_gram(checkpoints, keys)
        dist, cosine = gram_to_pairwise(gram)
        size = sum(int(np.prod(weight_shapes(checkpoints[0])[k][1])) for k in keys)
        report.md(f"{modality}: {len(chosen)} members, {len(keys)} shared backbone tensors ({size} parameters; "
                  "task heads left out).\n")
        for i in range(len(chosen)):
            for j in range(i + 1, len(chosen)):
                a, b = chosen[i], chosen[j]
                pair_rows.append({
                    "modality": modality, "member_a": a.relpath, "member_b": b.relpath, "stage_a": a.stage,
                    "stage_b": b.stage, "parent_a": _parent_name(a), "parent_b": _parent_name(b),
                    "mode_a": _mode(a, by_path), "mode_b": _mode(b, by_path),
                    "same_parent": a.stage == b.stage == "finetuning" and _parent_name(a) == _parent_name(b),
                    "l2": float(dist[i, j]), "cosine": float(cosine[i, j]), "parameters": size})
        labels = [m.relpath for m in chosen]
        report.figure(f"weight_l2_{modality}", _heatmap(plt, dist, labels, f"{modality}: L2 distance of weights"))
        report.figure(f"weight_cosine_{modality}", _heatmap(plt, cosine, labels, f"{modality}: cosine similarity",
                                                            "magma"))
    report.md("Pairwise distances (each pair once):\n")
    pairs = report.table("weight_pairs", pair_rows)
    if len(pairs):
        def relation(row) -> str:
            if row.same_parent:
                return "same parent"
            if row.stage_a == row.stage_b == "finetuning":
                return "across parents"
            if row.parent_a == row.member_b or row.parent_b == row.member_a:
                return "parent-child"
            return "pretraining" if row.stage_a == row.stage_b == "pretraining" else "other"

        pairs = pairs.assign(relation=pairs.apply(relation, axis=1))
        summary = pairs.groupby(["modality", "relation", "mode_a", "mode_b"]).agg(
            pairs=("l2", "size"), l2_mean=("l2", "mean"), cosine_mean=("cosine", "mean")).reset_index()
        report.md("Within and across parents, per pretraining mode:\n")
        report.table("weight_summary", summary)
        report.markdown_table(summary)
    # per-layer norms over training and distance travelled from the parent
    chosen = _cap(usable, cap)
    for member in tqdm(chosen, desc="weight norms", leave=False, disable=len(chosen) < 2):
        parent_weights = None
        parent = member.parent or {}
        parent_member = by_path.get(str(parent.get("path")))
        if member.stage == "finetuning" and parent_member is not None and parent.get("checkpoint"):
            parent_ckpt = parent_member.path / parent["checkpoint"]
            if parent_ckpt.is_dir():
                parent_weights = {canonical(k): v for k, v in soups.read_weights(parent_ckpt).items()}
        for epoch in member.checkpoints:
            weights = soups.read_weights(member.checkpoint_dir(epoch))
            groups: dict[str, float] = defaultdict(float)
            for key, value in weights.items():
                if np.issubdtype(value.dtype, np.floating):
                    groups[layer_group(key)] += float(np.sum(value.astype(np.float64) ** 2))
            for group, squared in groups.items():
                norm_rows.append({"member": member.relpath, "stage": member.stage, "epoch": epoch, "layer": group,
                                  "norm": math.sqrt(squared)})
            if parent_weights is not None:
                moved = base = 0.0
                count = 0
                for key, value in weights.items():
                    ref = parent_weights.get(canonical(key))
                    if ref is not None and ref.shape == value.shape and np.issubdtype(value.dtype, np.floating) \
                            and is_backbone(key):
                        moved += float(np.sum((value.astype(np.float64) - ref) ** 2))
                        base += float(np.sum(ref.astype(np.float64) ** 2))
                        count += 1
                travel_rows.append({"member": member.relpath, "parent": _parent_name(member),
                                    "mode": _mode(member, by_path), "epoch": epoch, "distance": math.sqrt(moved),
                                    "relative": math.sqrt(moved / base) if base else float("nan"),
                                    "shared_tensors": count})
    report.md("\nPer-layer weight norms at every checkpoint:\n")
    norms = report.table("layer_norms", norm_rows)
    if len(norms):
        stages = sorted(set(norms.stage))
        fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.6), squeeze=False)
        for ax, stage in zip(axes[0], stages):
            part = norms[norms.stage == stage].groupby(["layer", "epoch"]).norm.mean().reset_index()
            for layer_name, sub in part.groupby("layer"):
                ax.plot(sub.epoch, sub.norm, marker=".", label=layer_name)
            ax.set_title(f"{stage}: mean per-layer norm")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=6)
        report.figure("layer_norms", fig)
    report.md("\nDistance travelled from the parent checkpoint (shared backbone parameters):\n")
    travel = report.table("distance_travelled", travel_rows)
    if len(travel):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name, sub in travel.groupby("member"):
            ax.plot(sub.epoch, sub.distance, marker=".", label=_short(name))
        ax.set_xlabel("epoch")
        ax.set_ylabel("L2 distance from parent")
        if travel.member.nunique() <= 8:
            ax.legend(fontsize=6)
        report.figure("distance_travelled", fig)


def behaviour_section(report: Report, members: list[layout.MemberInfo], tasks: soups.TaskCache, cap: int | None,
                      batch_size: int) -> None:
    from tqdm.auto import tqdm

    plt = _plt()
    report.md("## Behaviour\n")
    candidates = [m for m in members if m.checkpoints and (
        soups.is_classifier(m) or soups.model_architecture(m.checkpoint_dir()) == "ViTModel")]
    by_task: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in candidates:
        try:
            by_task[tasks.task_key(member)].append(member)
        except (ValueError, OSError) as err:
            report.md(f"- {member.relpath}: skipped ({err})")
    rows = []
    for key, group in sorted(by_task.items()):
        group = _cap(group, cap)
        if len(group) < 2:
            continue
        outputs = {}
        for member in tqdm(group, desc="test-split outputs", leave=False):
            model = soups.load_model(member.checkpoint_dir())
            out = soups.run_model(model, tasks.get(member), "test", batch_size, features=True)
            outputs[member.relpath] = {"pred": out["logits"].argmax(-1) if "logits" in out else None,
                                       "features": out["features"]}
            del model
        names = [m.relpath for m in group]
        cka = np.eye(len(names))
        agreement = np.full((len(names), len(names)), np.nan)
        for i, a in enumerate(names):
            if outputs[a]["pred"] is not None:
                agreement[i, i] = 1.0
            for j in range(i + 1, len(names)):
                b = names[j]
                cka[i, j] = cka[j, i] = linear_cka(outputs[a]["features"], outputs[b]["features"])
                if outputs[a]["pred"] is not None and outputs[b]["pred"] is not None and \
                        len(outputs[a]["pred"]) == len(outputs[b]["pred"]):
                    agreement[i, j] = agreement[j, i] = float(np.mean(outputs[a]["pred"] == outputs[b]["pred"]))
                rows.append({"task": key, "member_a": a, "member_b": b, "agreement": agreement[i, j],
                             "cka": cka[i, j], "examples": len(outputs[a]["features"])})
        dataset = soups.data_arguments(group[0]).dataset
        report.md(f"Data set {dataset} (task {key}): {len(names)} members.\n")
        report.figure(f"cka_{key}", _heatmap(plt, cka, names, f"linear CKA, {dataset} test split", "magma"))
        if not np.all(np.isnan(agreement)):
            report.figure(f"agreement_{key}", _heatmap(plt, agreement, names, f"prediction agreement, {dataset}"))
    report.md("Pairwise prediction agreement and linear CKA of the last hidden representation on the test split:\n")
    frame = report.table("behaviour_pairs", rows)
    if len(frame):
        report.markdown_table(frame.drop(columns=["task"]).assign(
            member_a=frame.member_a.map(_short), member_b=frame.member_b.map(_short)))


def analyze(zoo_dir: str | Path, out: str | Path, max_members: int | None = None, batch_size: int = 256) -> Path:
    """Write the report of the zoo at `zoo_dir` to `out`; returns the path of report.md."""
    zoo_dir, out = Path(zoo_dir), Path(out)
    if not zoo_dir.is_dir():
        raise AnalysisError(f"{zoo_dir}: not a folder")
    if max_members is not None and max_members < 2:
        raise AnalysisError(f"--max-members must be at least 2, got {max_members}")
    members = layout.scan_members(zoo_dir)
    if not members:
        raise AnalysisError(f"{zoo_dir}: no zoo members found")
    report = Report(out)
    spec = layout.read_zoo_file(zoo_dir) or {}
    name = (spec.get("spec") or {}).get("name") or zoo_dir.name
    states = defaultdict(int)
    for member in members:
        states[member.state] += 1
    report.md(f"# Zoo report: {name}\n")
    report.md(f"Zoo `{zoo_dir}`: {len(members)} members (" + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
              + ")." + (f" Pairwise metrics use at most {max_members} members per group." if max_members else "")
              + "\n")
    tasks = soups.TaskCache()
    complete = [m for m in members if m.state == "complete"]
    performance_section(report, members)
    soups_section(report, complete, tasks, batch_size)
    weight_section(report, complete, max_members)
    behaviour_section(report, complete, tasks, max_members, batch_size)
    return report.write()


def cli_analyze(args) -> int:
    path = analyze(args.zoo_dir, args.out, args.max_members, args.batch_size)
    print(f"report written to {path}")
    return 0


# ---------------------------------------------------------------- benchmark


def checkpoint_features(members: list[layout.MemberInfo]) -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    """Per-tensor statistics of every checkpoint of `members` over the tensors they all share: (X, rows, columns)."""
    from tqdm.auto import tqdm

    checkpoints = [m.checkpoint_dir(e) for m in members for e in m.checkpoints]
    keys = shared_keys(checkpoints)
    if not keys:
        raise AnalysisError("the members share no parameter tensor to compute statistics on")
    stat_names = ["mean", "std", *[f"q{int(q * 100)}" for q in QUANTILES]]
    columns = [f"{key}:{stat}" for key in keys for stat in stat_names]
    features, rows = [], []
    for member in tqdm(members, desc="weight statistics", leave=False, disable=len(members) < 4):
        results = {int(r["epoch"]): r for r in member.results}
        for epoch in member.checkpoints:
            reader = _Reader([member.checkpoint_dir(epoch)])
            features.append([s for key in keys for s in tensor_stats(reader.get(0, key))])
            rows.append({"member": member.relpath, "epoch": epoch, **(results.get(epoch) or {}),
                         "factors": member.factors})
    return np.asarray(features, dtype=np.float64), rows, columns


def _benchmark_members(zoo_dir: Path, task: str, factor: str | None) -> tuple[list[layout.MemberInfo], str]:
    members = [m for m in layout.scan_members(zoo_dir) if m.checkpoints]
    if task == "predict-accuracy":
        chosen = [m for m in members if m.stage == "finetuning" and soups.is_classifier(m)]
        what = "finetuned classification members"
        if len(chosen) < MIN_BENCHMARK_MEMBERS:
            chosen = [m for m in members if soups.is_classifier(m) and m.config.get("metric") == "test_acc"]
            what = "classification members"
    else:
        chosen = [m for m in members if factor in m.factors]
        what = f"members with factor {factor!r}"
    by_modality: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in chosen:
        by_modality[member.modality].append(member)
    chosen = max(by_modality.values(), key=len, default=[])
    if len(chosen) < MIN_BENCHMARK_MEMBERS:
        raise AnalysisError(f"{zoo_dir}: too few {what} for --task {task}: {len(chosen)}, need at least "
                            f"{MIN_BENCHMARK_MEMBERS} (a member is never in both train and test)")
    return chosen, what


def benchmark(zoo_dir: str | Path, task: str = "predict-accuracy", factor: str | None = None,
              seed: int = 0) -> dict[str, Any]:
    """Weight-statistics baselines (Unterthiner et al. 2020), cross-validated by member (GroupKFold): predict each
    checkpoint's test accuracy (R^2, Kendall's tau) or a member's generating factor (accuracy vs majority)."""
    from scipy.stats import kendalltau
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import GroupKFold

    zoo_dir = Path(zoo_dir)
    if not zoo_dir.is_dir():
        raise AnalysisError(f"{zoo_dir}: not a folder")
    if task not in ("predict-accuracy", "predict-factor"):
        raise AnalysisError(f"unknown task {task!r}")
    if task == "predict-factor":
        if factor is None:
            found = {key for m in layout.scan_members(zoo_dir) for key in m.factors}
            factor = next((f for f in ("optimizer", "optim") if f in found), "optimizer")
    members, what = _benchmark_members(zoo_dir, task, factor)
    x, rows, columns = checkpoint_features(members)
    groups = np.asarray([row["member"] for row in rows])
    if task == "predict-accuracy":
        keep = np.asarray([isinstance(row.get("test_acc"), (int, float)) for row in rows])
        x, groups = x[keep], groups[keep]
        y = np.asarray([row["test_acc"] for row, k in zip(rows, keep) if k], dtype=np.float64)
        if len(y) < 2 * MIN_BENCHMARK_MEMBERS or len(np.unique(y)) < 2:
            raise AnalysisError(f"{zoo_dir}: too few checkpoints with a test_acc ({len(y)}) or no variation to "
                                "predict")
    else:
        labels = np.asarray([str(row["factors"].get(factor)) for row in rows])
        if len(set(labels)) < 2:
            raise AnalysisError(f"{zoo_dir}: factor {factor!r} takes one value ({labels[0]}) among the {what}; "
                                "nothing to predict")
        y = labels
    n_groups = len(set(groups))
    folds = min(5, n_groups)
    predictions = np.empty(len(y), dtype=object if task == "predict-factor" else np.float64)
    baseline = np.empty_like(predictions)
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        assert not set(groups[train]) & set(groups[test])
        if task == "predict-accuracy":
            model = GradientBoostingRegressor(random_state=seed, n_estimators=100, max_depth=2)
            model.fit(x[train], y[train])
            predictions[test] = model.predict(x[test])
            baseline[test] = y[train].mean()
        else:
            values, counts = np.unique(y[train], return_counts=True)
            majority = values[np.argmax(counts)]
            baseline[test] = majority
            if len(values) < 2:
                predictions[test] = majority
                continue
            model = GradientBoostingClassifier(random_state=seed, n_estimators=100, max_depth=2)
            model.fit(x[train], y[train])
            predictions[test] = model.predict(x[test])
    result: dict[str, Any] = {"task": task, "zoo": str(zoo_dir), "members": n_groups, "checkpoints": int(len(y)),
                              "features": len(columns), "folds": folds, "split": "GroupKFold by member",
                              "model": "GradientBoosting", "seed": seed, "population": what}
    if task == "predict-accuracy":
        tau = kendalltau(y, predictions.astype(np.float64)).statistic
        result.update({"target": "test_acc", "r2": float(r2_score(y, predictions.astype(np.float64))),
                       "kendall_tau": float(tau) if tau is not None and not np.isnan(tau) else 0.0,
                       "baseline_r2": float(r2_score(y, baseline.astype(np.float64)))})
    else:
        result.update({"target": factor, "classes": sorted(set(y.tolist())),
                       "accuracy": float(accuracy_score(y.astype(str), predictions.astype(str))),
                       "majority_accuracy": float(accuracy_score(y.astype(str), baseline.astype(str)))})
    return result


def cli_benchmark(args) -> int:
    result = benchmark(args.zoo_dir, args.task, args.factor, args.seed)
    keys = [k for k in ("task", "target", "population", "members", "checkpoints", "features", "folds", "model", "r2",
                        "kendall_tau", "baseline_r2", "accuracy", "majority_accuracy") if k in result]
    width = max(len(k) for k in keys)
    for key in keys:
        value = result[key]
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.out:
        layout.atomic_write_json(args.out, result)
        print(f"written to {args.out}", file=sys.stderr)
    return 0
