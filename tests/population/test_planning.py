"""Zoo specs and planning: the paper zoos' plans, bad specs and grid keys refused before training, checkpoints to
start from, dry runs that refuse what real runs refuse, planning's fast argument parsing, YAML errors at their line."""

from pathlib import Path

import pytest
import yaml
from helpers.paths import CONFIGS, ROOT
from helpers.specs import write_spec

from zoo import layout
from zoo.cli import main as zoo_main
from zoo.population import load_spec, plan_members, spec_hash

ZOOS = CONFIGS / "zoos"


def test_vit_paper_plans_250_members(capsys):
    assert zoo_main(["generate", str(ZOOS / "vit_paper.yaml"), "--zoo-dir", "/nonexistent/zoo", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "250 members: 10 vision/pretraining, 240 vision/finetuning"
    paths = out[:-1]
    assert len(set(paths)) == 250
    supervised = [p for p in paths if p.startswith("vision/pretraining/sl_vit_s16")]
    contrastive = [p for p in paths if p.startswith("vision/pretraining/ssl_vit_s16")]
    assert len(supervised) == 7 and len(contrastive) == 3
    children = [p for p in paths if p.startswith(f"vision/finetuning/{Path(supervised[0]).name}/")]
    assert len(children) == 24
    assert not Path("/nonexistent/zoo").exists()


def test_gpt2_paper_plans(capsys):
    assert zoo_main(["generate", str(ZOOS / "gpt2_paper.yaml"), "--zoo-dir", "/tmp/x", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        "104 members: 8 language/pretraining, 96 language/finetuning"


@pytest.mark.parametrize("change,needle", [
    ({"colour": "blue"}, "'colour'"),
    ({"vision__pretraining__grid": {"seed": []}}, "grid.seed is an empty list"),
    ({"vision__pretraining__pack": 0}, "vision.pretraining.pack must be a whole number of members >= 1, got 0"),
    ({"vision__finetuning__grid": {"learning_rat": [1e-3]}}, "'learning_rat'"),
    ({"vision__pretraining__fixed": {"bogus": 1}}, "'bogus'"),
    ({"vision__finetuning__wat": 1}, "'wat'"),
    ({"vision__finetuning__grid": {"head": ["linear", "bogus"]}}, "head='bogus'"),
    ({"vision__finetuning__grid": {"init": ["nonsense"]}}, "ignore 'init'"),
])
def test_bad_specs_fail_before_training(tmp_path, capsys, change, needle):
    spec = write_spec(tmp_path / "spec.yaml", **change)
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1]
    assert not (tmp_path / "zoo").exists()


def test_finetuning_is_planned_for_every_parent(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"seed": [1, 2, 3]})
    _, stages = load_spec(spec)
    plan_members(stages)
    finetuning = stages[1].members
    assert len(finetuning) == 6
    assert {m.parent for m in finetuning} == {m.name for m in stages[0].members}
    assert all("_opt_" in m.name for m in finetuning)


@pytest.mark.parametrize("value,needle", [
    (99, "vision.finetuning.from_checkpoint: epoch 99 is not a checkpoint of the parent vision/pretraining/sl_vit_tiny_"
         "seed_1_lr_0.002_wd_0.0001_bs_64 (it checkpoints epochs 0, 1, 2); give 'last' or an epoch every parent "
         "checkpoints: 0, 1, 2"),
    ("best", "vision.finetuning.from_checkpoint must be 'last' or an epoch every parent checkpoints: 0, 1, 2, "
             "got 'best'"),
    (-1, "got -1"),
])
def test_from_checkpoint_is_checked_against_the_parents_when_planning(tmp_path, capsys, value, needle):
    spec = write_spec(tmp_path / "spec.yaml", vision__finetuning__from_checkpoint=value)
    for extra in (["--dry-run"], []):  # refused before anything is trained, dry run or not
        assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
        assert not (tmp_path / "zoo").exists()


def test_from_checkpoint_takes_an_epoch_every_parent_checkpoints(tmp_path, capsys):
    # two parents checkpointing different epochs: only the common ones are allowed
    spec = write_spec(tmp_path / "spec.yaml", vision__finetuning__from_checkpoint=2, vision__pretraining__grid=None,
                      vision__pretraining__groups=[
                          {"fixed": {"num_train_epochs": 4, "checkpoint_every": 2}, "grid": {"seed": [1]}},
                          {"fixed": {"num_train_epochs": 3, "checkpoint_every": 1}, "grid": {"seed": [2]}}])
    data = yaml.safe_load(spec.read_text())
    del data["vision"]["pretraining"]["grid"]
    spec.write_text(yaml.safe_dump(data))
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "6 members: 2 vision/pretraining, 4 vision/finetuning"
    data["vision"]["finetuning"]["from_checkpoint"] = 1
    spec.write_text(yaml.safe_dump(data))
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    assert "(it checkpoints epochs 0, 2, 4); give 'last' or an epoch every parent checkpoints: 0, 2" in \
        capsys.readouterr().err
    data["vision"]["pretraining"]["from_checkpoint"] = 1  # a pretraining stage has no parent to start from
    spec.write_text(yaml.safe_dump(data))
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    assert "vision.pretraining.from_checkpoint: only a finetuning stage starts from a parent's checkpoint" in \
        capsys.readouterr().err


@pytest.mark.parametrize("change,needle", [
    ({"vision__pretraining__grid": {"seed": [1], "head": ["linear", "mlp"]}},
     "vision.pretraining.grid.head: vit-pretrain members ignore 'head' (read by vision finetuning only)"),
    ({"vision__finetuning__grid": {"hidden_size": [32, 64]}},
     "vision.finetuning.grid.hidden_size: vit-finetune members ignore 'hidden_size' (read by pretraining kinds"),
    ({"vision__finetuning__grid": {"temperature": [0.1, 0.2]}},
     "vision.finetuning.grid.temperature: vit-finetune members ignore 'temperature'"),
    ({"vision__pretraining__ranges": {"mlm_probability": {"low": 0.1, "high": 0.2}}},
     "vision.pretraining.ranges.mlm_probability: vit-pretrain members ignore 'mlm_probability'"),
])
def test_a_grid_key_the_kind_ignores_is_refused_when_planning(tmp_path, capsys, change, needle):
    spec = write_spec(tmp_path / "spec.yaml", **change)
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "remove it from the stage" in err[0], err


def test_keys_a_kind_reads_stay_allowed_in_grids(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"seed": [1], "mode": ["supervised"],
                                                                          "hidden_size": [32, 64]},
                      vision__finetuning__grid={"head": ["linear", "mlp"], "label_smoothing": [0.0, 0.1]})
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "10 members: 2 vision/pretraining, 8 vision/finetuning"
    groups = [{"fixed": {"member_prefix": "lm"}, "grid": {"seed": [1], "mlm_probability": [0.1, 0.2]}}]
    language = {"name": "l", "language": {"pretraining": {"recipe": "lm-pretrain", "groups": groups}}}
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(language))
    assert zoo_main(["generate", str(tmp_path / "lm.yaml"), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    assert "language.pretraining.groups[0].grid.mlm_probability: lm-pretrain members ignore 'mlm_probability' (read " \
        "by masked-LM pretraining only)" in capsys.readouterr().err
    language["language"]["pretraining"]["recipe"] = "mlm-pretrain"
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(language))
    assert zoo_main(["generate", str(tmp_path / "lm.yaml"), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 0


def test_a_dry_run_refuses_what_the_real_run_refuses(tmp_path, capsys):
    zoo_dir = tmp_path / "zoo"
    spec = write_spec(tmp_path / "spec.yaml")
    other = write_spec(tmp_path / "other.yaml", vision__pretraining__grid={"seed": [5]})
    loaded, _ = load_spec(spec)
    layout.write_zoo_file(zoo_dir, loaded, spec_hash(loaded))
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(zoo_dir), "--dry-run"]) == 0  # its own spec
    capsys.readouterr()
    messages = []
    for extra in (["--dry-run"], []):
        assert zoo_main(["generate", str(other), "--zoo-dir", str(zoo_dir), *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        messages.append(captured.err)
    assert messages[0] == messages[1] and messages[0].count("\n") == 1
    assert f"--zoo-dir {zoo_dir.resolve()} holds a zoo made from a different spec ('test')" in messages[0]
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")
    (tmp_path / "afile").write_text("x")
    for target, needle in ((tmp_path / "stray", "is not empty and holds no zoo.json"),
                           (tmp_path / "afile", "is a file, not a zoo folder")):
        assert zoo_main(["generate", str(spec), "--zoo-dir", str(target), "--dry-run"]) == 2
        assert needle in capsys.readouterr().err


def _plan_stage(base: dict, kind: str = "vit-pretrain"):
    from zoo.population import StagePlan

    modality, stage = ("vision", "pretraining") if kind.startswith("vit") else ("language", "pretraining")
    return StagePlan(modality, stage, kind, base, [], where="spec.yaml: x")


@pytest.mark.parametrize("point", [
    {"seed": 3, "learning_rate": "1e-3", "warmup_steps": 0.1},
    {"seed": None, "hflip": "true", "eval_metrics": ["f1", "accuracy"], "lr_scheduler_type": "cosine"},
    {"weight_decay": 0.01, "bf16": True, "name_factors": ["seed"], "per_device_train_batch_size": "32"},
    {"report_to": ["none"], "max_grad_norm": 0, "member_prefix": "x", "init": "xavier_normal"},
])
def test_fast_planning_gives_what_parse_config_gives(point):
    """Planning parses each grid value once and builds the dataclasses itself: every key of the member's arguments,
    its name and its checks must equal what a recipe's own parse_config makes of the same config."""
    from zoo import kinds
    from zoo.arguments import parse_config
    from zoo.population import DEVICE_KEYS, _planner, member_name
    from zoo.runs import Arguments, kind_defaults

    base = yaml.safe_load((ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml").read_text())
    kind = kinds.get("vit-pretrain")
    planner = _planner(_plan_stage(base))
    for _ in range(2):  # the second time from the planner's caches
        fast, config = planner.arguments(point, list(point))
        slow = Arguments(*parse_config({k: v for k, v in config.items() if k not in DEVICE_KEYS},
                                       defaults=kind_defaults(kind)))
        fast_flat, slow_flat = fast.flat(), slow.flat()
        assert fast_flat.keys() == slow_flat.keys()
        assert {k: v for k, v in fast_flat.items() if v != slow_flat[k]} == {}
        assert member_name(kind, fast) == member_name(kind, slow)


@pytest.mark.parametrize("point", [
    {"learning_rate": "abc"}, {"lr_scheduler_type": "bogus"}, {"eval_metrics": ["glue"]},
    {"learning_rate": [0.1, 0.2]}, {"seed": 1.5}, {"hflip": "maybe"}, {"warmup_steps": -1},
    {"load_best_model_at_end": True, "save_strategy": "steps"},  # TrainingArguments' own cross-key check
])
def test_fast_planning_refuses_what_parse_config_refuses(point):
    from zoo.arguments import ConfigError, parse_config
    from zoo.population import _planner

    base = yaml.safe_load((ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml").read_text())
    planner = _planner(_plan_stage(base))
    planner.arguments({"seed": 7}, ["seed"])  # a good member first: the caches are warm
    with pytest.raises(ConfigError) as slow:
        parse_config({**base, **point, "output_dir": "unused"}, defaults={"name_factors": ["seed"]})
    with pytest.raises(ConfigError) as fast:
        planner.arguments(point, list(point))
    assert str(fast.value) == str(slow.value)


def test_planning_builds_the_argument_parser_once(tmp_path, monkeypatch):
    from zoo import arguments, population

    built = []
    original = arguments._Parser.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(arguments._Parser, "__init__", counting)
    monkeypatch.setattr(population._Planner, "_parser", None)
    spec = write_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"seed": [1, 2, 3, 4, 5],
                                                                          "learning_rate": [1e-3, 2e-3, 3e-3]})
    _, stages = load_spec(spec)
    plan_members(stages)
    assert len(stages[0].members) == 15 and len(stages[1].members) == 30
    assert len(built) == 1


def test_a_tab_in_a_spec_is_reported_at_its_line_and_column(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nvision:\n  pretraining:\n\tgrid: {seed: [1]}\n")
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zoo generate: error: {spec}:4:1: not valid YAML: found character '\\t' that cannot start any "
                   "token (YAML indents with spaces, not tabs)"]
    spec.write_text("name: t\nvision: {pretraining: {grid: {seed: [1]}\n")  # an unclosed mapping: where it ends
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo")]) == 2
    assert f"{spec}:3:1: not valid YAML: expected ',' or '}}'" in capsys.readouterr().err
