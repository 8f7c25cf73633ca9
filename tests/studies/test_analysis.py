"""zoo analyze and zoo benchmark on a tiny zoo trained for real."""

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers.small_zoo import shared_small_zoo

from zoo import layout
from zoo.cli import main
from zoo.studies import analysis, benchmark, evaluation, weights


@pytest.fixture(scope="module")
def small_zoo():
    return shared_small_zoo()


@pytest.fixture(scope="module")
def report(small_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["analyze", str(small_zoo["root"]), "--out", str(out)]) == 0
    return out


def table(out, name):
    csv = pd.read_csv(out / "tables" / f"{name}.csv")
    parquet = pd.read_parquet(out / "tables" / f"{name}.parquet")
    assert len(csv) == len(parquet) and list(csv.columns) == list(parquet.columns)
    return parquet


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_report_references_existing_files(report, small_zoo):
    text = (report / "report.md").read_text()
    links = re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", text)
    figures = [link for link in links if link.endswith(".png")]
    tables = {link for link in links if link.endswith(".csv")}
    for link in links:
        assert (report / link).is_file(), link
    for name in ("learning_curves", "final_metric_by_stage", "soups", "weight_l2_vision", "layer_norms",
                 "distance_travelled"):
        assert f"figures/{name}.png" in figures
    parent = small_zoo["parent"].name  # behaviour figures are named by modality, stage, data set and lineage
    for what in ("cka", "agreement"):
        assert f"figures/{what}_vision_finetuning_digits_{parent}.png" in figures
    assert len(set(figures)) == len(figures) == len(list((report / "figures").iterdir()))
    for figure in figures:
        assert re.fullmatch(r"figures/[A-Za-z0-9._-]+\.png", figure) and not re.search(r"[0-9a-f]{16}", figure)
    for figure in figures:
        assert (report / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("members", "curves", "factor_summary", "soups", "weight_pairs", "weight_summary", "layer_norms",
                 "distance_travelled", "behaviour_pairs"):
        assert f"tables/{name}.csv" in tables and (report / "tables" / f"{name}.parquet").is_file()


@pytest.mark.slow
def test_performance_tables(report, small_zoo):
    members = table(report, "members")
    assert len(members) == 5 and set(members.stage) == {"pretraining", "finetuning"}
    child = small_zoo["children"][0]
    row = members[members.member == child.relpath].iloc[0]
    assert row.final_metric == pytest.approx(child.last_result["test_acc"])
    assert row["mode"] == "vit-supervised" and row.factor_head == "mlp"
    assert len(table(report, "curves")) == 3 + 4 * 4  # parent epochs 0..2, children 0..3
    assert list(members.id) == ["V1", "V1.1", "V1.2", "V1.3", "V1.4"]  # the parent before its children
    factors = table(report, "factor_summary")
    heads = factors[(factors.factor == "head")].set_index("value")
    assert heads.loc["mlp", "count"] == 3 and heads.loc["linear", "count"] == 1


@pytest.mark.slow
def test_soup_table(report, small_zoo):
    soup_rows = table(report, "soups")
    assert len(soup_rows) == 1
    row = soup_rows.iloc[0]
    assert row.parent == small_zoo["parent"].relpath and row.children == 4 and row.souped == 3
    assert row.greedy_soup_val_acc >= row.best_ingredient_val_acc
    for column in ("best_ingredient_test_acc", "uniform_soup_test_acc", "greedy_soup_test_acc", "epoch_avg_test_acc"):
        assert 0 <= row[column] <= 1
    assert "linear" in row.note


@pytest.mark.slow
def test_weight_tables(report, small_zoo):
    pairs = table(report, "weight_pairs")
    n = 5
    assert len(pairs) == n * (n - 1) // 2
    assert (pairs.l2 > 0).all() and ((pairs.cosine > 0) & (pairs.cosine <= 1 + 1e-9)).all()
    assert set(table(report, "weight_summary").relation) == {"same parent", "parent-child"}
    travel = table(report, "distance_travelled")
    assert len(travel) == 4 * 4
    start = travel[travel.epoch == 0]
    assert np.allclose(start.distance, 0.0)  # children start from the parent's backbone (keys mapped)
    assert (travel[travel.epoch == 3].distance > 0).all()
    norms = table(report, "layer_norms")
    assert {"embeddings", "layer.0", "layer.1", "layernorm", "classifier"} <= set(norms.layer)
    assert len(norms[(norms.member == small_zoo["children"][0].relpath)].epoch.unique()) == 4


@pytest.mark.slow
def test_behaviour_table(report, small_zoo):
    pairs = table(report, "behaviour_pairs")
    assert len(pairs) == 4 * 3 // 2  # the four children share the digits test split; the parent is on MNIST
    assert ((pairs.agreement >= 0) & (pairs.agreement <= 1)).all()
    assert ((pairs.cka > 0) & (pairs.cka <= 1 + 1e-9)).all()
    assert (pairs.examples == 96).all()


@pytest.mark.slow
def test_gram_distances_match_direct_computation(small_zoo):
    parent, children = small_zoo["parent"], small_zoo["children"]
    checkpoints = [children[0].checkpoint_dir(), children[0].checkpoint_dir(), children[1].checkpoint_dir(),
                   parent.checkpoint_dir()]
    keys = weights.shared_keys(checkpoints, backbone=True)
    assert "encoder.layer.0.attention.attention.query.weight" in keys  # `vit.` prefix mapped
    assert not any(k.startswith("classifier") for k in keys)
    dist, cosine = weights.gram_to_pairwise(weights.weight_gram(checkpoints, keys))
    assert dist[0, 1] == pytest.approx(0.0, abs=1e-6) and cosine[0, 1] == pytest.approx(1.0)
    assert np.allclose(np.diag(dist), 0) and np.allclose(dist, dist.T)
    a = weights.read_weights(checkpoints[0])
    b = weights.read_weights(checkpoints[2])
    direct = math.sqrt(sum(float(np.sum((a[f"vit.{k}"].astype(np.float64) - b[f"vit.{k}"]) ** 2)) for k in keys))
    assert dist[0, 2] == pytest.approx(direct, rel=1e-6)
    va = np.concatenate([a[f"vit.{k}"].ravel() for k in keys]).astype(np.float64)
    vb = np.concatenate([b[f"vit.{k}"].ravel() for k in keys]).astype(np.float64)
    assert cosine[0, 2] == pytest.approx(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb), rel=1e-6)


@pytest.mark.slow
def test_linear_cka(small_zoo):
    tasks = evaluation.TaskCache()
    member = small_zoo["children"][0]
    out = evaluation.run_model(evaluation.load_model(member.checkpoint_dir()), tasks.get(member), "test", features=True)
    features = out["features"]
    assert features.shape == (96, 64)
    assert analysis.linear_cka(features, features) == pytest.approx(1.0)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 64)))
    assert analysis.linear_cka(features, 3.0 * features @ rotation) == pytest.approx(1.0)
    noise = np.random.default_rng(1).normal(size=features.shape)
    assert analysis.linear_cka(features, noise) < 0.9


@pytest.mark.slow
def test_max_members_caps_pairs(small_zoo, tmp_path):
    assert main(["analyze", str(small_zoo["root"]), "--out", str(tmp_path), "--max-members", "3"]) == 0
    assert len(pd.read_csv(tmp_path / "tables" / "weight_pairs.csv")) == 3
    assert len(pd.read_csv(tmp_path / "tables" / "behaviour_pairs.csv")) == 3


def test_analyze_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "no zoo members" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_predict_accuracy(small_zoo, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", str(small_zoo["root"]), "--task", "predict-accuracy", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["members"] == 4 and result["checkpoints"] == 16 and result["folds"] == 4
    assert math.isfinite(result["r2"]) and math.isfinite(result["kendall_tau"]) and -1 <= result["kendall_tau"] <= 1
    assert "r2" in capsys.readouterr().out


@pytest.mark.slow
def test_benchmark_predict_factor(small_zoo, capsys):
    result = benchmark.benchmark(small_zoo["root"], "predict-factor", factor="head")
    assert result["classes"] == ["linear", "mlp"]
    assert 0 <= result["accuracy"] <= 1 and result["majority_accuracy"] == pytest.approx(0.75)
    assert main(["benchmark", str(small_zoo["root"]), "--task", "predict-factor"]) == 2  # optimizer: all adamw
    assert "one value" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_refuses_too_few_members(small_zoo, tmp_path, capsys):
    root = tmp_path / "zoo"
    for member in small_zoo["children"][:2]:
        shutil.copytree(member.path, root / member.relpath)
    assert len(layout.scan_members(root)) == 2
    assert main(["benchmark", str(root), "--task", "predict-accuracy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "too few" in err[0] and str(root) in err[0]


def test_factor_labels_tolerate_missing_values():
    """A factor that only some members of a stage have (e.g. `head`) must not break the plots."""
    import pandas as pd

    from zoo.studies.analysis.performance import _as_labels

    labels = _as_labels(pd.Series([0.001, None, float("nan"), "mlp"], dtype=object))
    assert list(labels) == ["0.001", "none", "none", "mlp"]
    assert sorted(set(labels)) == ["0.001", "mlp", "none"]


WEIGHTS_ONLY = """
import sys
from zoo.cli import main
code = main(["analyze", sys.argv[1], "--out", sys.argv[2], "--weights-only"])
loaded = sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)
print("loaded:", ",".join(loaded))
sys.exit(code)
"""


@pytest.mark.slow
def test_weights_only_loads_no_model(small_zoo, tmp_path):
    """--weights-only: performance from result.json and the weight space, without data, models or torch."""
    import os
    import subprocess
    import sys

    out = tmp_path / "w"
    result = subprocess.run([sys.executable, "-c", WEIGHTS_ONLY, str(small_zoo["root"]), str(out)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "loaded:"
    tables = {p.stem for p in (out / "tables").glob("*.csv")}
    assert {"members", "curves", "factor_summary", "weight_pairs", "layer_norms", "distance_travelled"} <= tables
    assert not {"soups", "behaviour_pairs"} & tables
    assert len(table(out, "weight_pairs")) == 5 * 4 // 2
    assert "Weights only" in (out / "report.md").read_text()


@pytest.mark.slow
def test_weight_gram_streams_in_blocks(small_zoo):
    """Slices of a tensor at a time (a tiny memory budget) give the same Gram matrix as whole tensors."""
    checkpoints = [m.checkpoint_dir() for m in small_zoo["children"]] + [small_zoo["parent"].checkpoint_dir()]
    keys = weights.shared_keys(checkpoints, backbone=True)
    whole = weights.weight_gram(checkpoints, keys)
    assert np.allclose(weights.weight_gram(checkpoints, keys, block_bytes=1), whole, rtol=1e-12)


@pytest.mark.slow
def test_member_ids_tell_children_apart(small_zoo):
    members = layout.scan_members(small_zoo["root"])
    ids = analysis.member_ids(members)
    assert ids[small_zoo["parent"].relpath] == "V1"
    children = sorted(ids[m.relpath] for m in small_zoo["children"])
    assert children == ["V1.1", "V1.2", "V1.3", "V1.4"]


def _member(kind, stage, metric, value, **factors):
    config = {"name": f"{kind}_{value}", "modality": "vision", "stage": stage, "kind": kind, "metric": metric,
              "factors": factors, "epochs": 1, "checkpoints": [1]}
    return layout.MemberInfo(path=layout.Path("/nonexistent"), config=config, results=[{"epoch": 1, metric: value}],
                             relpath=f"vision/{stage}/{kind}_{value}")


def test_factor_summary_keeps_kinds_apart():
    """Supervised accuracy and contrastive retrieval accuracy (both `test_acc`) are never pooled in one row."""
    members = [_member("vit-supervised", "pretraining", "test_acc", 0.9, seed=1),
               _member("vit-supervised", "pretraining", "test_acc", 0.8, seed=2),
               _member("vit-contrastive", "pretraining", "test_acc", 0.1, seed=1)]
    summary = pd.DataFrame(analysis.factor_summary(pd.DataFrame(analysis.member_table(members))))
    overall = summary[summary.factor == "(all)"].set_index("kind")
    assert sorted(overall.index) == ["vit-contrastive", "vit-supervised"]
    assert overall.loc["vit-supervised", "count"] == 2 and overall.loc["vit-supervised", "mean"] == pytest.approx(0.85)
    assert overall.loc["vit-contrastive", "mean"] == pytest.approx(0.1)
    seed1 = summary[(summary.factor == "seed") & (summary.value == "1")]
    assert len(seed1) == 2 and set(seed1["count"]) == {1}


@pytest.mark.slow
def test_predict_factor_majority_is_chance_level(small_zoo):
    """Five members with five seeds (4, 4, 4, 4 and 3 checkpoints): the majority baseline is the largest class's
    share, 4/19 (about chance), not 0 as majorities taken per grouped fold gave."""
    result = benchmark.benchmark(small_zoo["root"], "predict-factor", factor="seed")
    assert len(result["classes"]) == 5 and result["checkpoints"] == 19
    assert result["majority_accuracy"] == pytest.approx(4 / 19)
    assert benchmark.majority_accuracy(np.array(["a", "b", "a", "b", "c", "c"])) == pytest.approx(1 / 3)
