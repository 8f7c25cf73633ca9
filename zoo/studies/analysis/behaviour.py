"""The report's behaviour section: per data set, pairwise prediction agreement and linear CKA of the members' last
hidden representation (CLS token for ViT, last non-pad token for GPT-2) on the test split."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from zoo import kinds, layout
from zoo.studies.analysis.lineage import even_sample, lineage_order, parent_name
from zoo.studies.analysis.plots import _heatmap, _plt, short_name
from zoo.studies.analysis.report import Report, safe_name
from zoo.studies.evaluation import TaskCache, data_arguments, has_representation, load_model, run_model


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same examples (rows)."""
    x = x.astype(np.float64) - x.mean(0, keepdims=True)
    y = y.astype(np.float64) - y.mean(0, keepdims=True)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else float("nan")


def _test_outputs(group: list[layout.MemberInfo], tasks: TaskCache, batch_size: int) -> dict[str, dict[str, Any]]:
    """Per member: its predicted labels on the test split (None without a classifier) and its representations."""
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
    """(CKA matrix, agreement matrix, one row per pair) of the members `names`."""
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
    return sorted({m.relpath if kinds.is_pretraining(m.stage) else str(parent_name(m)) for m in group})


def _group_stages(group: list[layout.MemberInfo]) -> list[str]:
    return [s for s in kinds.STAGES if any(m.stage == s for m in group)]


def _group_text(group: list[layout.MemberInfo], ids: dict[str, str]) -> str:
    stages = " + ".join(_group_stages(group))
    roots = [ids.get(root, short_name(root)) for root in _group_roots(group)]
    return f"{group[0].modality} {stages}, lineage{'s' if len(roots) > 1 else ''} of {', '.join(roots)}"


def _behaviour_name(group: list[layout.MemberInfo], ids: dict[str, str]) -> str:
    """A readable, stable figure name for a group of members evaluated on one data set:
    <modality>_<stages>_<data set>_<the parent's member name | N_parents>, e.g.
    `vision_finetuning_digits_sl_vit_tiny_seed_1_lr_0.002_wd_0.0001_bs_64`."""
    stages = "_".join(_group_stages(group))
    dataset = str(data_arguments(group[0]).dataset)
    dataset = dataset.split(":", 1)[1] if dataset.startswith("embedded:") else dataset
    roots = _group_roots(group)
    lineage = roots[0].rsplit("/", 1)[-1] if len(roots) == 1 else f"{len(roots)}_parents"
    return safe_name(f"{group[0].modality}_{stages}_{dataset}_{lineage}")


def _groups_by_task(report: Report, members: list[layout.MemberInfo], tasks: TaskCache
                    ) -> dict[str, list[layout.MemberInfo]]:
    """The members with a representation, grouped by the task (data set and splits) they are evaluated on; members
    whose task cannot be built are listed as skipped."""
    by_task: dict[str, list[layout.MemberInfo]] = defaultdict(list)
    for member in filter(has_representation, members):
        try:
            by_task[tasks.task_key(member)].append(member)
        except (ValueError, OSError) as err:
            report.md(f"- {member.relpath}: skipped ({err})")
    return by_task


def _group_figures(report: Report, key: str, group: list[layout.MemberInfo], starts: list[int], cka: np.ndarray,
                   agreement: np.ndarray, ids: dict[str, str]) -> None:
    """The CKA heatmap of one group (and its agreement heatmap when its members predict labels), with the id key."""
    plt = _plt()
    names = [m.relpath for m in group]
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
    report.id_key(names, ids)


def behaviour_section(report: Report, members: list[layout.MemberInfo], tasks: TaskCache, cap: int | None,
                      batch_size: int, ids: dict[str, str]) -> None:
    report.md("## Behaviour\n")
    by_task = _groups_by_task(report, members, tasks)
    rows = []
    for key, group in sorted(by_task.items(), key=lambda item: _behaviour_name(item[1], ids)):
        group, starts = lineage_order(even_sample(group, cap), ids)
        if len(group) < 2:
            continue
        names = [m.relpath for m in group]
        cka, agreement, pairs = _behaviour_pairs(key, names, _test_outputs(group, tasks, batch_size))
        rows += pairs
        _group_figures(report, key, group, starts, cka, agreement, ids)
    report.md("Pairwise prediction agreement and linear CKA of the last hidden representation on the test split:\n")
    frame = report.table("behaviour_pairs", rows)
    if len(frame):
        report.markdown_table(frame.drop(columns=["task"]).assign(
            member_a=frame.member_a.map(ids), member_b=frame.member_b.map(ids)))
