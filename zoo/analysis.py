"""Diversity and performance analysis of a zoo (`zoo analyze`).

`zoo analyze ZOO --out DIR` writes `DIR/report.md`, figures as `DIR/figures/*.png` and every number as
`DIR/tables/<name>.parquet` and `.csv`:

- members: one row per member (short id used in the figures, stage, kind, parent, pretraining mode, factors, final
  metric);
- curves: the members' result.json lines (learning curves, one panel per modality and stage);
- factor_summary: final metrics per modality, stage and kind (a supervised accuracy and a contrastive retrieval
  accuracy are never pooled), and per generating factor value;
- soups: per parent, test metrics of the best ingredient (by validation accuracy), the uniform soup, the greedy soup
  and the epoch-averaged best ingredient (soups computed in memory with `zoo.soups`, not written);
- weight_pairs / weight_summary: pairwise L2 distance and cosine similarity of flattened shared weights, within and
  across parents, per pretraining mode (a Gram matrix built from slices of one parameter tensor at a time);
- layer_norms: per-layer weight norms at every checkpoint; distance_travelled: L2 distance of a finetuned member's
  backbone from its parent's checkpoint, per epoch;
- behaviour_pairs: pairwise prediction agreement and linear CKA of the last hidden representation (CLS token for ViT,
  last non-pad token for GPT-2) on the test split, per data set.

`--weights-only` keeps the sections that need no data and no model (performance from result.json, weight space):
for zoos of thousands of members. Pairwise metrics use at most `--max-members` members per group (an even sample
along the sorted member paths; `--weights-only` defaults to DEFAULT_WEIGHTS_ONLY_CAP); memory then holds the tables,
one tensor slice and the n x n matrices, whatever the zoo's size.

Weights are read with safetensors (never pickle); names are mapped so that a parent's keys (`encoder.*`, `h.*`)
match its children's (`vit.encoder.*`, `transformer.h.*`), see `zoo.weights`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from zoo import layout, soups
from zoo.evaluation import TaskCache, data_arguments, has_representation, is_classifier, load_model, run_model
from zoo.weights import Reader, gram_to_pairwise, is_backbone, layer_group, shared_keys, weight_gram, weight_shapes

DEFAULT_WEIGHTS_ONLY_CAP = 128
MAX_CURVES_PER_PANEL = 60
MAX_TICK_LABELS = 80


class AnalysisError(ValueError):
    """Bad analysis input: not a zoo, an empty zoo."""


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


def member_ids(members: list[layout.MemberInfo]) -> dict[str, str]:
    """Short ids for figures, by relpath: pretraining members V1, V2, ... (L1, ... for language); a finetuned child
    its parent's id and its number among the siblings (V1.3); a child of an unknown parent Vf1, ..."""
    ids: dict[str, str] = {}
    counts: dict[str, int] = defaultdict(int)
    ordered = sorted(members, key=lambda m: (m.stage != "pretraining", m.relpath))
    by_name = {m.name: m.relpath for m in ordered if m.stage == "pretraining"}
    for member in ordered:
        letter = member.modality[:1].upper()
        parent = _parent_name(member)
        parent_id = ids.get(str(parent)) or ids.get(by_name.get(str((member.parent or {}).get("member")), ""))
        if member.stage == "pretraining":
            prefix = letter
        elif parent_id:
            prefix = f"{parent_id}."
        else:
            prefix = f"{letter}f"
        counts[prefix] += 1
        ids[member.relpath] = f"{prefix}{counts[prefix]}"
    return ids


def _natural(text: str) -> list:
    """Sort key reading the numbers of a text as numbers: V2 before V10, V1 before V1.1 before V1.2."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _lineage_root(member: layout.MemberInfo, relpaths: set[str], by_name: dict[str, str]) -> str:
    """The relpath of the pretraining member a member descends from (its own for pretraining members); the parent's
    recorded name when the parent is not in the zoo."""
    if member.stage == "pretraining":
        return member.relpath
    parent = member.parent or {}
    if str(parent.get("path")) in relpaths:
        return str(parent["path"])
    return by_name.get(str(parent.get("member")), f"?{_parent_name(member)}")


def lineage_order(members: list[layout.MemberInfo], ids: dict[str, str] | None = None
                  ) -> tuple[list[layout.MemberInfo], list[int]]:
    """Members grouped by lineage, each parent before its children: per modality, pretraining members in the order
    of their ids (V1, V2, ..., V10), each followed by its finetuned children (V1.1, V1.2, ...); children whose parent
    is not in the zoo come last, grouped by parent. Returns (members, the index where each lineage starts)."""
    ids = ids if ids is not None else member_ids(members)
    relpaths = set(ids) | {m.relpath for m in members}
    by_name = {m.name: m.relpath for m in members if m.stage == "pretraining"}
    roots = {m.relpath: _lineage_root(m, relpaths, by_name) for m in members}

    def key(member: layout.MemberInfo) -> tuple:
        root = roots[member.relpath]
        modality = layout.MODALITIES.index(member.modality) if member.modality in layout.MODALITIES else 99
        return (modality, root not in ids, _natural(ids.get(root, root)), root, member.relpath != root,
                _natural(ids.get(member.relpath, member.relpath)))

    ordered = sorted(members, key=key)
    starts = [i for i, m in enumerate(ordered) if not i or roots[m.relpath] != roots[ordered[i - 1].relpath]]
    return ordered, starts


def member_table(members: list[layout.MemberInfo]) -> list[dict[str, Any]]:
    by_path = {m.relpath: m for m in members}
    ids = member_ids(members)
    rows = []
    for member in members:
        row = {"id": ids[member.relpath], "member": member.relpath, "name": member.name, "modality": member.modality,
               "stage": member.stage, "kind": member.config.get("kind") or "?", "parent": _parent_name(member),
               "mode": _mode(member, by_path), "state": member.state,
               "epochs_done": max(member.epochs_done - 1, 0), "checkpoints": len(member.checkpoints),
               "metric": member.metric, "final_metric": member.final_metric()}
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


# groups whose final metrics may be pooled: one modality, stage, kind and metric
POOL_KEYS = ["modality", "stage", "kind", "metric"]


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

    def figure(self, name: str, fig) -> str:
        """Save `fig` as figures/<name>.png, the name made filesystem-safe and unique within the report (a second
        `cka_x` becomes `cka_x_2`), and link it; returns the name used."""
        import matplotlib.pyplot as plt

        name = base = safe_name(name)
        count = 1
        while name in self.figures:
            count += 1
            name = f"{base}_{count}"
        fig.tight_layout()
        fig.savefig(self.out / "figures" / f"{name}.png", dpi=110)
        plt.close(fig)
        self.figures.append(name)
        self.lines.append(f"![{name}](figures/{name}.png)\n")
        return name

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


MAX_NAME = 100  # characters of a figure's file name, before `.png`


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """A file name made of letters, digits, `.`, `-` and `_` only (runs of anything else become one `_`), at most
    `limit` characters: a longer one keeps its start and ends with a short hash of the whole, so it stays unique."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "figure"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:limit - 9].rstrip('._-')}_{digest}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(relpath: str, width: int = 28) -> str:
    name = relpath.rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"


def _integer_epochs(ax) -> None:
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


def _key(report: Report, names: list[str], ids: dict[str, str]) -> None:
    """The key of a figure's short ids."""
    import pandas as pd

    report.md("Key of the ids (all ids in the `members` table):\n")
    report.markdown_table(pd.DataFrame({"id": [ids[n] for n in names], "member": names}), max_rows=40)


def _sample(members: list[layout.MemberInfo], cap: int | None) -> list[layout.MemberInfo]:
    """At most `cap` members, evenly spread along their sorted paths (so across parents), deterministic."""
    if cap is None or len(members) <= cap:
        return members
    ordered = sorted(members, key=lambda m: m.relpath)
    return [ordered[i] for i in np.linspace(0, len(ordered) - 1, cap).round().astype(int)]


# ---------------------------------------------------------------- performance


def _learning_curves(report: Report, frame, curves) -> None:
    """One panel per modality and stage: each member's headline metric over epochs, coloured by kind."""
    plt = _plt()
    panels = [(modality, stage) for modality in layout.MODALITIES for stage in layout.STAGES
              if len(frame[(frame.modality == modality) & (frame.stage == stage)])]
    if not panels or not len(curves):
        return
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    colours = {kind: f"C{i}" for i, kind in enumerate(sorted(set(frame.kind)))}
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (modality, stage) in zip(axes.ravel(), panels):
        part = frame[(frame.modality == modality) & (frame.stage == stage)]
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
                    color=None if by_member else colours[kind])  # few members: a colour each, else one per kind
        metrics = ", ".join(sorted(set(part.metric)))
        extra = f", {len(shown)} of {len(part)} members" if len(shown) < len(part) else ""
        ax.set_title(f"{modality} {stage}: {metrics}{extra}", fontsize=9)
        ax.set_ylabel(metrics)
        _integer_epochs(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    report.md("Learning curves (from result.json; ids as in the members table):\n")
    report.figure("learning_curves", fig)


JITTER = 0.15  # half the width over which a category's points spread


def _label_key(label: str) -> tuple:
    """Factor values in their natural order: numbers by value, then texts, 'none' last."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1 + (label == "none"), 0.0, label)


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


def _grid(plt, count: int, width: float, height: float, cols: int = 4):
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    return fig, axes.ravel()


def _final_metric_figures(report: Report, done, summary: list[dict[str, Any]]) -> None:
    """Final metrics per modality and stage (a box per kind), and per value of each varying generating factor."""
    plt = _plt()
    keys = sorted(done.groupby(["modality", "stage", "metric"]).groups)
    fig, axes = _grid(plt, len(keys), 4, 3.5, cols=len(keys))
    for ax, (modality, stage, metric) in zip(axes, keys):
        part = done[(done.modality == modality) & (done.stage == stage) & (done.metric == metric)]
        kind_labels = _as_labels(part.kind)
        strip_box(ax, [(k, part[kind_labels == k].final_metric) for k in sorted(set(kind_labels))], f"final {metric}")
        ax.set_title(f"{modality} {stage}: final {metric}", fontsize=9)
    report.figure("final_metric_by_stage", fig)
    group_keys = [*POOL_KEYS, "factor"]
    values: dict[tuple, set] = defaultdict(set)
    for row in summary:
        if row["factor"] != "(all)":
            values[tuple(row[k] for k in group_keys)].add(row["value"])
    varied = sorted(key for key, seen in values.items() if len(seen) > 1)
    if not varied:
        return
    fig, axes = _grid(plt, len(varied), 3.6, 3.4)
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
        _final_metric_figures(report, done, summary)


def _as_labels(column):
    """Text labels of a column for plotting; missing values (None, NaN) read as 'none'."""
    import pandas as pd

    return column.map(lambda value: "none" if value is None or (not isinstance(value, str) and pd.isna(value))
                      else str(value)).astype(object)


# ---------------------------------------------------------------- soups


def _soup_row(parent: str, children: list[layout.MemberInfo], by_path: dict[str, layout.MemberInfo],
              tasks: TaskCache, batch_size: int, epochs_last: int) -> dict[str, Any]:
    row: dict[str, Any] = {"parent": parent, "mode": _mode(children[0], by_path), "children": len(children)}
    try:
        greedy = soups.greedy_soup(children, tasks, batch_size, what=f"children of {parent}")
    except (ValueError, layout.LayoutError) as err:
        return {**row, "note": str(err)}
    best = greedy.extra["best_ingredient"]
    uniform = greedy.extra.get("uniform_soup") or {k: best[k] for k in ("validation_acc", "test_acc")}
    epoch = soups.epoch_soup(by_path[best["member"]], epochs_last, tasks, batch_size)
    return {
        **row, "souped": len(greedy.extra["candidates"]), "excluded": len(greedy.excluded),
        "best_ingredient": best["member"], "best_ingredient_test_acc": best["test_acc"],
        "uniform_soup_test_acc": uniform["test_acc"], "greedy_soup_test_acc": greedy.metrics["test_acc"],
        "greedy_ingredients": len(greedy.ingredients), "epoch_avg_test_acc": epoch.metrics.get("test_acc"),
        "epoch_avg_checkpoints": len(epoch.ingredients), "best_ingredient_val_acc": best["validation_acc"],
        "uniform_soup_val_acc": uniform["validation_acc"], "greedy_soup_val_acc": greedy.metrics["validation_acc"],
        "note": "; ".join(f"left out {e['member']}: {e['reason']}" for e in greedy.excluded),
    }


SOUP_BARS = {"best_ingredient_test_acc": "best ingredient", "uniform_soup_test_acc": "uniform soup",
             "greedy_soup_test_acc": "greedy soup", "epoch_avg_test_acc": "epoch average"}


def _soups_figure(report: Report, scored, ids: dict[str, str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(scored) + 2), 4))
    width = 0.2
    for index, (column, label) in enumerate(SOUP_BARS.items()):
        ax.bar(np.arange(len(scored)) + index * width, scored[column].astype(float), width, label=label)
    labels = [f"{ids.get(p, '?')} ({mode})" for p, mode in zip(scored.parent, scored["mode"])]
    ax.set_xticks(np.arange(len(scored)) + 1.5 * width, labels, fontsize=8,
                  rotation=30 if len(scored) > 4 else 0, ha="right" if len(scored) > 4 else "center")
    ax.set_xlabel("parent (id as in the members table, pretraining mode)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Soups of each parent's finetuned children: test accuracy (validation chooses)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    report.figure("soups", fig)


def soups_section(report: Report, members: list[layout.MemberInfo], tasks: TaskCache, batch_size: int,
                  ids: dict[str, str], epochs_last: int = 3) -> None:
    report.md("## Soups\n")
    by_path = {m.relpath: m for m in members}
    parents: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in members:
        if member.stage == "finetuning" and member.parent and is_classifier(member):
            parents[_parent_name(member)].append(member)
    rows = [_soup_row(parent, children, by_path, tasks, batch_size, epochs_last)
            for parent, children in sorted(parents.items())]
    if not rows:
        report.md("No finetuned classification members: no soups.\n")
        return
    report.md("Per parent: the best single ingredient (chosen by validation accuracy), the uniform and greedy soups of "
              "its largest compatible group of children, and the best ingredient averaged over its last "
              f"{epochs_last} checkpoints; test accuracy, with validation used only for choosing.\n")
    frame = report.table("soups", [{"parent_id": ids.get(row["parent"], "?"), **row} for row in rows])
    shown = [c for c in ("parent_id", "parent", "mode", "souped", *SOUP_BARS) if c in frame]
    report.markdown_table(frame[shown])
    scored = frame.dropna(subset=["greedy_soup_test_acc"]) if "greedy_soup_test_acc" in frame else frame.head(0)
    if len(scored):
        _soups_figure(report, scored, ids)


# ---------------------------------------------------------------- weight space


def _relation(row) -> str:
    if row.same_parent:
        return "same parent"
    if row.stage_a == row.stage_b == "finetuning":
        return "across parents"
    if row.parent_a == row.member_b or row.parent_b == row.member_a:
        return "parent-child"
    return "pretraining" if row.stage_a == row.stage_b == "pretraining" else "other"


def _pair_rows(modality: str, chosen: list[layout.MemberInfo], dist: np.ndarray, cosine: np.ndarray, size: int,
               by_path: dict[str, layout.MemberInfo]) -> list[dict[str, Any]]:
    rows = []
    for i, a in enumerate(chosen):
        for j in range(i + 1, len(chosen)):
            b = chosen[j]
            rows.append({
                "modality": modality, "member_a": a.relpath, "member_b": b.relpath, "stage_a": a.stage,
                "stage_b": b.stage, "parent_a": _parent_name(a), "parent_b": _parent_name(b),
                "mode_a": _mode(a, by_path), "mode_b": _mode(b, by_path),
                "same_parent": a.stage == b.stage == "finetuning" and _parent_name(a) == _parent_name(b),
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
    _key(report, [m.relpath for m in chosen], ids)
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
    if member.stage != "finetuning" or parent_member is None or not parent.get("checkpoint"):
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
                travel_rows.append({"member": member.relpath, "parent": _parent_name(member),
                                    "mode": _mode(member, by_path), "epoch": epoch, "distance": math.sqrt(moved),
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
        _integer_epochs(ax)
        ax.legend(fontsize=6)
    report.figure("layer_norms", fig)


def _travel_figure(report: Report, travel, ids: dict[str, str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, sub in travel.groupby("member"):
        ax.plot(sub.epoch, sub.distance, marker=".", label=ids.get(name, _short(name)))
    _integer_epochs(ax)
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
    for modality in layout.MODALITIES:
        chosen = _sample([m for m in usable if m.modality == modality], cap)
        if len(chosen) >= 2:
            pair_rows += _pairwise_weights(report, modality, chosen, by_path, ids)
    _weight_summary(report, pair_rows)
    norm_rows, travel_rows = _norms_and_travel(_sample(usable, cap), by_path)
    report.md("\nPer-layer weight norms at every checkpoint:\n")
    norms = report.table("layer_norms", norm_rows)
    if len(norms):
        _norm_figure(report, norms)
    report.md("\nDistance travelled from the parent checkpoint (shared backbone parameters):\n")
    travel = report.table("distance_travelled", travel_rows)
    if len(travel):
        _travel_figure(report, travel, ids)


# ---------------------------------------------------------------- behaviour


def _test_outputs(group: list[layout.MemberInfo], tasks: TaskCache, batch_size: int) -> dict[str, dict[str, Any]]:
    from tqdm.auto import tqdm

    outputs = {}
    for member in tqdm(group, desc="test-split outputs", leave=False):
        model = load_model(member.checkpoint_dir())
        out = run_model(model, tasks.get(member), "test", batch_size, features=True)
        outputs[member.relpath] = {"pred": out["logits"].argmax(-1) if "logits" in out else None,
                                   "features": out["features"]}
        del model
    return outputs


def _behaviour_pairs(key: str, names: list[str], outputs: dict[str, dict[str, Any]]
                     ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    cka = np.eye(len(names))
    agreement = np.full((len(names), len(names)), np.nan)
    rows = []
    for i, a in enumerate(names):
        if outputs[a]["pred"] is not None:
            agreement[i, i] = 1.0
        for j in range(i + 1, len(names)):
            b = names[j]
            cka[i, j] = cka[j, i] = linear_cka(outputs[a]["features"], outputs[b]["features"])
            pred_a, pred_b = outputs[a]["pred"], outputs[b]["pred"]
            if pred_a is not None and pred_b is not None and len(pred_a) == len(pred_b):
                agreement[i, j] = agreement[j, i] = float(np.mean(pred_a == pred_b))
            rows.append({"task": key, "member_a": a, "member_b": b, "agreement": agreement[i, j],
                         "cka": cka[i, j], "examples": len(outputs[a]["features"])})
    return cka, agreement, rows


def _group_roots(group: list[layout.MemberInfo]) -> list[str]:
    """The parents of a group's finetuned members and its pretraining members: the lineages it spans."""
    return sorted({m.relpath if m.stage == "pretraining" else str(_parent_name(m)) for m in group})


def _group_text(group: list[layout.MemberInfo], ids: dict[str, str]) -> str:
    stages = " + ".join(s for s in layout.STAGES if any(m.stage == s for m in group))
    roots = [ids.get(root, _short(root)) for root in _group_roots(group)]
    return f"{group[0].modality} {stages}, lineage{'s' if len(roots) > 1 else ''} of {', '.join(roots)}"


def _behaviour_name(group: list[layout.MemberInfo], ids: dict[str, str]) -> str:
    """A readable, stable figure name for a group of members evaluated on one data set:
    <modality>_<stages>_<data set>_<the parent's member name | N_parents>, e.g.
    `vision_finetuning_digits_sl_vit_tiny_seed_1_lr_0.002_wd_0.0001_bs_64`."""
    stages = "_".join(s for s in layout.STAGES if any(m.stage == s for m in group))
    dataset = str(data_arguments(group[0]).dataset)
    dataset = dataset.split(":", 1)[1] if dataset.startswith("embedded:") else dataset
    roots = _group_roots(group)
    lineage = roots[0].rsplit("/", 1)[-1] if len(roots) == 1 else f"{len(roots)}_parents"
    return safe_name(f"{group[0].modality}_{stages}_{dataset}_{lineage}")


def behaviour_section(report: Report, members: list[layout.MemberInfo], tasks: TaskCache, cap: int | None,
                      batch_size: int, ids: dict[str, str]) -> None:
    plt = _plt()
    report.md("## Behaviour\n")
    by_task: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in filter(has_representation, members):
        try:
            by_task[tasks.task_key(member)].append(member)
        except (ValueError, OSError) as err:
            report.md(f"- {member.relpath}: skipped ({err})")
    rows = []
    for key, group in sorted(by_task.items(), key=lambda item: _behaviour_name(item[1], ids)):
        group, starts = lineage_order(_sample(group, cap), ids)
        if len(group) < 2:
            continue
        names = [m.relpath for m in group]
        cka, agreement, pairs = _behaviour_pairs(key, names, _test_outputs(group, tasks, batch_size))
        rows += pairs
        dataset = data_arguments(group[0]).dataset
        labels = [ids[name] for name in names]
        name, lineage = _behaviour_name(group, ids), _group_text(group, ids)
        report.md(f"Data set {dataset}, {lineage}: {len(names)} members, each parent before its "
                  f"children (`task` {key} in the behaviour_pairs table).\n")
        report.figure(f"cka_{name}", _heatmap(plt, cka, labels, f"linear CKA, {dataset} test split\n{lineage}",
                                              "magma", starts))
        if not np.all(np.isnan(agreement)):
            report.figure(f"agreement_{name}", _heatmap(plt, agreement, labels,
                                                        f"prediction agreement, {dataset}\n{lineage}", starts=starts))
        _key(report, names, ids)
    report.md("Pairwise prediction agreement and linear CKA of the last hidden representation on the test split:\n")
    frame = report.table("behaviour_pairs", rows)
    if len(frame):
        report.markdown_table(frame.drop(columns=["task"]).assign(
            member_a=frame.member_a.map(ids), member_b=frame.member_b.map(ids)))


# ---------------------------------------------------------------- the report


def _members_of(zoo_dir: Path, max_members: int | None) -> list[layout.MemberInfo]:
    if not zoo_dir.is_dir():
        raise AnalysisError(f"{zoo_dir}: not a folder" if zoo_dir.exists() else f"{zoo_dir}: not found")
    if max_members is not None and max_members < 2:
        raise AnalysisError(f"--max-members must be at least 2, got {max_members}")
    members = layout.scan_members(zoo_dir)
    if not members:
        raise AnalysisError(f"{zoo_dir}: no zoo members found")
    return members


def analyze(zoo_dir: str | Path, out: str | Path, max_members: int | None = None, batch_size: int = 256,
            weights_only: bool = False) -> Path:
    """Write the report of the zoo at `zoo_dir` to `out`; returns the path of report.md. `weights_only` skips what
    needs data or models (soups, behaviour) and caps pairwise metrics at DEFAULT_WEIGHTS_ONLY_CAP members unless
    `max_members` says otherwise."""
    zoo_dir, out = Path(zoo_dir), Path(out)
    members = _members_of(zoo_dir, max_members)
    if weights_only and max_members is None:
        max_members = DEFAULT_WEIGHTS_ONLY_CAP
    report = Report(out)
    name = ((layout.read_zoo_file(zoo_dir) or {}).get("spec") or {}).get("name") or zoo_dir.name
    states: dict[str, int] = defaultdict(int)
    for member in members:
        states[member.state] += 1
    report.md(f"# Zoo report: {name}\n")
    report.md(f"Zoo `{zoo_dir}`: {len(members)} members (" + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
              + ")." + (f" Pairwise metrics use at most {max_members} members per group." if max_members else "")
              + (" Weights only: no soups, no behaviour (nothing evaluated)." if weights_only else "") + "\n")
    ids = member_ids(members)
    members = lineage_order(members, ids)[0]  # tables and figures list each parent before its children
    complete = [m for m in members if m.state == "complete"]
    tasks = TaskCache()
    performance_section(report, members)
    if not weights_only:
        soups_section(report, complete, tasks, batch_size, ids)
    weight_section(report, complete, max_members, ids)
    if not weights_only:
        behaviour_section(report, complete, tasks, max_members, batch_size, ids)
    return report.write()


def cli_analyze(args) -> int:
    path = analyze(args.zoo_dir, args.out, args.max_members, args.batch_size, args.weights_only)
    print(f"report written to {path}")
    return 0
