"""zoo soup: uniform, greedy and epoch soups of a tiny zoo trained for real."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers.members import weights
from helpers.small_zoo import shared_small_zoo

from zoo import layout
from zoo.cli import main
from zoo.studies import evaluation, soups


@pytest.fixture(scope="module")
def small_zoo():
    return shared_small_zoo()


def mlp_children(zoo):
    return [m for m in zoo["children"] if m.factors["head"] == "mlp"]


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_average_weights_is_the_mean(small_zoo):
    checkpoints = [m.checkpoint_dir() for m in mlp_children(small_zoo)]
    mean = soups.average_weights(checkpoints)
    ingredients = [weights(c) for c in checkpoints]
    assert set(mean) == set(ingredients[0])
    for key, value in mean.items():
        expected = np.mean([w[key].astype(np.float64) for w in ingredients], axis=0)
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
        assert value.dtype == ingredients[0][key].dtype
    with pytest.raises(soups.SoupError, match="differ"):
        soups.average_weights([checkpoints[0], small_zoo["children"][3].checkpoint_dir()])


@pytest.mark.slow
def test_evaluation_reproduces_the_members_results(small_zoo):
    tasks = evaluation.TaskCache()
    scores = evaluation.evaluate_members(small_zoo["children"], tasks, progress=False)
    for member in small_zoo["children"]:
        assert scores[member.relpath]["test_acc"] == pytest.approx(member.last_result["test_acc"], abs=1e-6)
        assert 0 <= scores[member.relpath]["validation_acc"] <= 1
    assert len({tasks.task_key(m) for m in small_zoo["children"]}) == 1  # one zoo, one set of held-out splits


@pytest.mark.slow
def test_uniform_soup_cli(small_zoo, tmp_path, capsys):
    root, parent = small_zoo["root"], small_zoo["parent"]
    out = tmp_path / "u"
    assert main(["soup", str(root), "--parent", parent.name, "--method", "uniform", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    linear = small_zoo["children"][3]
    assert linear.relpath in err and "incompatible" in err  # the linear-head child is left out, and said so
    record = soups.read_soup(out)
    mlp = mlp_children(small_zoo)
    assert record["method"] == "uniform" and record["parent"] == parent.relpath
    assert sorted(i["member"] for i in record["ingredients"]) == sorted(m.relpath for m in mlp)
    assert all(i["checkpoint"] == "checkpoint_000003" for i in record["ingredients"])
    assert [e["member"] for e in record["excluded"]] == [linear.relpath]
    assert 0 <= record["test_acc"] <= 1 and 0 <= record["validation_acc"] <= 1
    soup = weights(out)
    ingredients = [weights(m.checkpoint_dir()) for m in mlp]
    assert set(soup) == set(ingredients[0])
    for key in soup:
        np.testing.assert_allclose(soup[key], np.mean([w[key] for w in ingredients], axis=0), rtol=1e-5, atol=1e-6)
    assert (out / "preprocessor_config.json").is_file()
    assert not list(out.parent.glob(".tmp_*"))
    # loads with stock transformers (no zoo code) and with load_member_model, MLP head included
    script = ("import sys; from transformers import AutoModel; "
              "print(type(AutoModel.from_pretrained(sys.argv[1])).__name__)")
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, cwd="/",
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ViTModel"
    from zoo.models import load_member_model

    model = load_member_model(out)
    key = "classifier.weight"  # the MLP head's hidden layer (zoo.models.MLPHead)
    np.testing.assert_allclose(model.classifier.weight.detach().numpy(), soup[key])


@pytest.mark.slow
def test_greedy_soup_cli(small_zoo, tmp_path):
    root, parent = small_zoo["root"], small_zoo["parent"]
    out = tmp_path / "g"
    assert main(["soup", str(root), "--parent", parent.relpath, "--method", "greedy", "--out", str(out)]) == 0
    record = soups.read_soup(out)
    assert record["method"] == "greedy"
    candidates = record["candidates"]
    assert len(candidates) == 3
    vals = [c["validation_acc"] for c in candidates]
    assert vals == sorted(vals, reverse=True)
    best_val = max(vals)
    assert record["validation_acc"] >= best_val - 1e-12  # by construction
    assert record["ingredients"][0]["member"] == candidates[0]["member"] == record["best_ingredient"]["member"]
    members = {m.relpath for m in mlp_children(small_zoo)}
    assert record["ingredients"] and {i["member"] for i in record["ingredients"]} <= members
    added = [t["member"] for t in record["greedy_trail"] if t["added"]]
    assert added == [i["member"] for i in record["ingredients"]]
    assert "test_acc" in record["uniform_soup"] and "test_acc" in record["best_ingredient"]
    # the written weights are the mean of the listed ingredients
    soup = weights(out)
    listed = [weights(root / i["member"] / i["checkpoint"]) for i in record["ingredients"]]
    for key in soup:
        np.testing.assert_allclose(soup[key], np.mean([w[key] for w in listed], axis=0), rtol=1e-5, atol=1e-6)
    # and its recorded validation accuracy is what the written soup scores
    tasks = evaluation.TaskCache()
    again = evaluation.evaluate_model(evaluation.load_model(out), tasks.get(mlp_children(small_zoo)[0]))
    assert again["validation_acc"] == pytest.approx(record["validation_acc"])


@pytest.mark.slow
def test_epochs_soup_cli(small_zoo, tmp_path, capsys):
    member = small_zoo["children"][0]
    out = tmp_path / "e"
    assert main(["soup", str(small_zoo["root"]), "--member", member.name, "--method", "epochs", "--last", "2",
                 "--out", str(out)]) == 0
    record = json.loads((out / soups.SOUP_FILE).read_text())
    assert [i["checkpoint"] for i in record["ingredients"]] == ["checkpoint_000002", "checkpoint_000003"]
    assert record["member"] == member.relpath
    soup = weights(out)
    last = [weights(member.checkpoint_dir(e)) for e in (2, 3)]
    for key in soup:
        np.testing.assert_allclose(soup[key], (last[0][key].astype(np.float64) + last[1][key]) / 2, rtol=1e-5,
                                   atol=1e-6)
    # more than it has: all checkpoints, and a note
    assert main(["soup", str(small_zoo["root"]), "--member", member.relpath, "--method", "epochs", "--last", "9",
                 "--out", str(tmp_path / "e9")]) == 0
    assert "averaging all" in capsys.readouterr().err
    assert len(soups.read_soup(tmp_path / "e9")["ingredients"]) == 4


@pytest.mark.slow
def test_all_linear_or_single_group(small_zoo):
    """Largest compatible group wins; a single member is its own group."""
    groups, excluded = soups.compatible_groups(small_zoo["children"])
    assert [len(g) for g in groups] == [3, 1] and not excluded
    chosen, left = soups.pick_group(small_zoo["children"][3:], "x")
    assert [m.relpath for m in chosen] == [small_zoo["children"][3].relpath] and not left


@pytest.mark.slow
@pytest.mark.parametrize("argv,needle", [
    (["--parent", "no_such_parent", "--method", "uniform"], "no_such_parent"),
    (["--parent", "no_such_parent", "--method", "greedy"], "no_such_parent"),
    (["--member", "no_such_member", "--method", "epochs"], "no_such_member"),
    (["--member", "ft_x", "--method", "uniform"], "--parent"),
])
def test_bad_input_exit_2(small_zoo, tmp_path, capsys, argv, needle):
    assert main(["soup", str(small_zoo["root"]), *argv, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_parent_without_children(small_zoo, tmp_path, capsys):
    child = small_zoo["children"][0]
    assert main(["soup", str(small_zoo["root"]), "--parent", child.name, "--method", "uniform",
                 "--out", str(tmp_path / "s")]) == 2
    assert "no finetuned children" in capsys.readouterr().err


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.slow
def test_out_never_inside_a_member(small_zoo, tmp_path, capsys):
    """A member's checkpoint folder (or any folder inside a member) is never a soup's --out."""
    root, parent, member = small_zoo["root"], small_zoo["parent"], small_zoo["children"][0]
    checkpoint = member.checkpoint_dir()
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    for out in (checkpoint, member.path / "my_soup", parent.path / "soups" / "u"):
        assert main(["soup", str(root), "--parent", parent.name, "--method", "uniform", "--out", str(out)]) == 2
        line = one_error_line(capsys)
        assert "inside the zoo member" in line and str(out) in line
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before
    assert not (member.path / "my_soup").exists() and not (parent.path / "soups").exists()
    assert layout.load_member(member.path, root).state == "complete"


@pytest.mark.slow
def test_out_replaces_only_an_earlier_soup_of_the_same_command(small_zoo, tmp_path, capsys):
    root, member = small_zoo["root"], small_zoo["children"][0]
    command = ["soup", str(root), "--member", member.relpath, "--method", "epochs", "--last", "2"]
    other = tmp_path / "not_a_soup"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main([*command, "--out", str(other)]) == 2
    assert "not an earlier soup" in one_error_line(capsys)
    assert (other / "notes.txt").read_text() == "mine"
    out = tmp_path / "e"
    assert main([*command, "--out", str(out)]) == 0
    first = weights(out)
    assert main([*command, "--out", str(out)]) == 0  # the same command again: replaced
    assert soups.read_soup(out)["command"]["last"] == 2 and set(weights(out)) == set(first)
    capsys.readouterr()
    changed = ["soup", str(root), "--member", member.relpath, "--method", "epochs", "--last", "3"]
    assert main([*changed, "--out", str(out)]) == 2  # another command's soup is not overwritten
    assert "not an earlier soup" in one_error_line(capsys)
    assert soups.read_soup(out)["command"]["last"] == 2


@pytest.mark.slow
def test_epochs_soup_of_a_truncated_checkpoint(small_zoo, tmp_path, capsys):
    member = small_zoo["children"][0]
    root = tmp_path / "zoo"
    shutil.copytree(member.path, root / member.relpath)
    damaged = root / member.relpath / layout.checkpoint_name(member.checkpoints[-1]) / layout.WEIGHTS
    damaged.write_bytes(damaged.read_bytes()[:1000])
    assert main(["soup", str(root), "--member", member.name, "--method", "epochs", "--last", "2",
                 "--out", str(tmp_path / "e")]) == 2
    line = one_error_line(capsys)
    assert member.name in line and ("truncated" in line or "does not match" in line)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("command", [
    ["soup", "--parent", "p", "--method", "uniform", "--out", "OUT"],
    ["analyze", "--out", "OUT"],
    ["analyze", "--weights-only", "--out", "OUT"],
    ["benchmark", "--task", "predict-accuracy"],
])
def test_zoo_dir_that_is_a_file(tmp_path, capsys, command):
    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text("name: x\n")
    argv = [command[0], str(zoo_file), *[str(tmp_path / "out") if a == "OUT" else a for a in command[1:]]]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert str(zoo_file) in line and "not a folder" in line
    assert not (tmp_path / "out").exists()
