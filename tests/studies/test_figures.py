"""The analysis report's figures: lineage order of heatmaps, readable unique file names, labelled and jittered strip
plots (and the dataset card's factor panels). Fast: fake members, or a zoo written by `zoo_factory` without training.
"""

import random
import re

import matplotlib
import numpy as np
import pytest
from helpers.zoo_factory import make_synthetic_zoo, write_member

from zoo import layout
from zoo.cli import main
from zoo.studies import analysis
from zoo.studies.analysis import behaviour, performance, plots

matplotlib.use("Agg")


def _member(name, stage="pretraining", parent=None, modality="vision"):
    """A member known by its config alone; a child names its parent by path, or by name only (`parent` without /)."""
    folder = stage if parent is None else f"finetuning/{parent.split('/')[-1]}"
    relpath = f"{modality}/{folder}/{name}"
    ref = None if parent is None else ({"path": parent, "member": parent.split("/")[-1]} if "/" in parent
                                       else {"member": parent})
    config = {"name": name, "modality": modality, "stage": stage, "kind": "k", "metric": "test_acc", "factors": {},
              "parent": ref, "epochs": 1, "checkpoints": [1]}
    return layout.MemberInfo(path=layout.Path("/nonexistent"), config=config, relpath=relpath)


def test_lineage_order_puts_each_parent_before_its_children():
    parents = [_member(f"p{i:02d}") for i in range(1, 12)]  # ids V1..V11: V10 and V11 after V2
    children = [_member(f"c{i}", "finetuning", parents[i % 3].relpath) for i in range(6)]
    orphans = [_member("o1", "finetuning", "gone_parent")]
    language = [_member("lm", modality="language"), _member("lm_ft", "finetuning", "language/pretraining/lm",
                                                             "language")]
    members = parents + children + orphans + language
    random.Random(0).shuffle(members)
    ids = analysis.member_ids(members)
    ordered, starts = analysis.lineage_order(members, ids)
    order = [ids[m.relpath] for m in ordered]
    assert order == ["V1", "V1.1", "V1.2", "V2", "V2.1", "V2.2", "V3", "V3.1", "V3.2", *[f"V{i}" for i in range(4, 12)],
                     "Vf1", "L1", "L1.1"]
    assert starts == [0, 3, 6, *range(9, 17), 17, 18]
    assert analysis.lineage_order(list(reversed(members)), ids)[0] == ordered  # the order never depends on the input's


def test_heatmap_parts_lineages():
    plt = plots._plt()
    fig = plots._heatmap(plt, np.zeros((5, 5)), list("abcde"), "t", starts=[0, 2, 4])
    lines = sorted({round(float(line.get_ydata()[0]), 2) for line in fig.axes[0].lines if len(set(line.get_ydata()))
                    == 1})
    assert lines == [1.5, 3.5]
    plt.close(fig)


def test_figure_names_are_safe_and_unique(tmp_path):
    report = analysis.Report(tmp_path)
    plt = plots._plt()
    names = [report.figure(name, plt.figure()) for name in
             ("cka_vision/finetuning: a b", "cka_vision/finetuning: a b", "x" * 300, "x" * 300 + "y")]
    assert names[:2] == ["cka_vision_finetuning_a_b", "cka_vision_finetuning_a_b_2"]
    assert all(len(n) <= analysis.MAX_NAME for n in names[2:]) and names[2] != names[3]
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name) and (tmp_path / "figures" / f"{name}.png").is_file()
        assert f"![{name}](figures/{name}.png)" in "\n".join(report.lines)
    assert analysis.safe_name("x" * 300) == names[2]  # stable: the same text gives the same name


def test_strip_box_labels_the_metric_and_spreads_equal_values():
    plt = plots._plt()
    fig, ax = plt.subplots()
    analysis.strip_box(ax, [("adamw", [0.5, 0.5, 0.5]), ("sgd", [0.4])], "final test_acc")
    assert ax.get_ylabel() == "final test_acc"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["adamw\n(n=3)", "sgd\n(n=1)"]
    first, second = ax.collections[:2]
    xs = first.get_offsets()[:, 0]
    assert len(set(np.round(xs, 6))) == 3 and np.all(np.abs(xs) <= analysis.JITTER)  # equal values side by side
    assert second.get_offsets()[0, 0] == 1.0 and first.get_alpha() < 1
    plt.close(fig)


def test_factor_values_in_natural_order():
    labels = ["none", "mlp", "0.01", "1e-05", "0.001", "linear"]
    assert sorted(labels, key=performance._label_key) == ["1e-05", "0.001", "0.01", "linear", "mlp", "none"]


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig") / "zoo"
    written = make_synthetic_zoo(root, junk=False, language=False)
    for index in range(3):  # a second child of the supervised parent, and two with the same accuracy
        write_member(root, f"ft_more_{index}", "vit-finetune", {"seed": 20 + index, "optim": "sgd"}, seed=30,
                     parent=written[0])
    out = root.parent / "report"
    assert main(["analyze", str(root), "--out", str(out), "--weights-only"]) == 0
    return out


def test_report_lists_parents_before_children(synthetic_report):
    text = (synthetic_report / "report.md").read_text()
    key = text.split("![weight_cosine_vision](figures/weight_cosine_vision.png)")[1].split("\n\n")[2]
    ids = re.findall(r"^\| (V[\d.f]+) \|", key, flags=re.M)
    assert ids == ["V1", "V1.1", "V2", "V2.1", "V2.2", "V2.3", "V2.4"]
    members = re.findall(r"^\| (V[\d.f]+) \| vision/", text.split("## Performance")[1], flags=re.M)
    assert members[:7] == ids


def test_final_metric_figures_are_written_and_linked(synthetic_report):
    text = (synthetic_report / "report.md").read_text()
    for name in ("final_metric_by_stage", "final_metric_by_factor", "weight_l2_vision"):
        assert f"](figures/{name}.png)" in text
        assert (synthetic_report / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_card_factor_panel_jitters_equal_values():
    from zoo.publish.plots import JITTER, _factor_panel

    plt = plots._plt()
    fig, ax = plt.subplots()
    group = [{"factors": {"optim": o}, "value": v} for o, v in (("sgd", 0.5), ("sgd", 0.5), ("adamw", 0.3))]
    _factor_panel(ax, group, "optim", "test_acc")
    xs = ax.lines[0].get_xdata()
    assert ax.get_ylabel() == "test_acc" and ax.lines[0].get_alpha() < 1
    assert xs[0] != xs[1] and abs(xs[0] - 1) <= JITTER and abs(xs[1] - 1) <= JITTER and xs[2] == 0.0
    plt.close(fig)


def test_behaviour_figure_names_tell_groups_apart():
    def on(member, dataset):
        member.config["recipe"] = {"dataset": dataset}
        return member

    a, b = "vision/pretraining/sl_a", "vision/pretraining/sl_b"
    one = [on(_member(f"c{i}", "finetuning", a), "embedded:digits") for i in range(2)]
    two = one + [on(_member("c9", "finetuning", b), "embedded:digits")]
    cifar = [on(_member(f"c{i}", "finetuning", a), "uoft-cs/cifar100") for i in range(2)]
    ids = analysis.member_ids([_member("sl_a"), _member("sl_b"), *two])
    assert behaviour._behaviour_name(one, ids) == "vision_finetuning_digits_sl_a"
    assert behaviour._behaviour_name(two, ids) == "vision_finetuning_digits_2_parents"
    assert behaviour._behaviour_name(cifar, ids) == "vision_finetuning_uoft-cs_cifar100_sl_a"
    assert behaviour._group_text(two, ids) == "vision finetuning, lineages of V1, V2"
