"""The report's soups section: per parent, the test accuracy of its best finetuned child (chosen by validation
accuracy), of the uniform and greedy soups of its children, and of the best child averaged over its last epochs
(soups computed in memory with `zoo.studies.soups`, not written)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from zoo import kinds, layout
from zoo.studies import soups
from zoo.studies.analysis.lineage import parent_name, pretraining_mode
from zoo.studies.analysis.plots import _plt
from zoo.studies.analysis.report import Report
from zoo.studies.evaluation import TaskCache, is_classifier

SOUP_BARS = {"best_ingredient_test_acc": "best ingredient", "uniform_soup_test_acc": "uniform soup",
             "greedy_soup_test_acc": "greedy soup", "epoch_avg_test_acc": "epoch average"}


def _soup_row(parent: str, children: list[layout.MemberInfo], by_path: dict[str, layout.MemberInfo],
              tasks: TaskCache, batch_size: int, epochs_last: int) -> dict[str, Any]:
    row: dict[str, Any] = {"parent": parent, "mode": pretraining_mode(children[0], by_path),
                           "children": len(children)}
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
        if kinds.is_finetuning(member.stage) and member.parent and is_classifier(member):
            parents[parent_name(member)].append(member)
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
