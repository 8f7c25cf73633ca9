"""Zoo specs, planning, Ray Tune generation, kill-and-rerun, status."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from processes import descendants

from zoo import layout
from zoo.cli import main as zoo_main
from zoo.population import load_spec, plan_members, spec_hash

ROOT = Path(__file__).resolve().parents[1]
ZOOS = ROOT / "recipes" / "configs" / "zoos"


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


def write_spec(path: Path, **changes) -> Path:
    spec = {
        "name": "test",
        "vision": {
            "pretraining": {
                "config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
                "fixed": {"num_train_epochs": 2, "checkpoint_every": 1, "max_train_samples": 128,
                          "max_eval_samples": 64, "per_device_train_batch_size": 64},
                "grid": {"seed": [1]},
            },
            "finetuning": {
                "config": str(ROOT / "recipes/configs/vision/finetune_tiny.yaml"),
                "fixed": {"num_train_epochs": 2, "checkpoint_every": 1, "max_train_samples": 128,
                          "max_eval_samples": 64},
                "grid": {"optimizer": ["adamw", "sgd"]},
            },
        },
    }
    for dotted, value in changes.items():
        node = spec
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(spec))
    return path


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


def pretraining_spec(path: Path, **changes) -> Path:
    """`write_spec` with the vision pretraining stage only."""
    spec = write_spec(path, **changes)
    data = yaml.safe_load(spec.read_text())
    del data["vision"]["finetuning"]
    spec.write_text(yaml.safe_dump(data))
    return spec


def test_finetuning_is_planned_for_every_parent(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"seed": [1, 2, 3]})
    _, stages = load_spec(spec)
    plan_members(stages)
    finetuning = stages[1].members
    assert len(finetuning) == 6
    assert {m.parent for m in finetuning} == {m.name for m in stages[0].members}
    assert all("_opt_" in m.name for m in finetuning)


def _status(zoo_dir: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "zoo", "status", str(zoo_dir), "--json"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_generate_kill_and_rerun(tmp_path, own_ray):
    """Generate with Ray, SIGKILL the driver mid-way, rerun: exactly the planned members, all complete."""
    spec = write_spec(tmp_path / "spec.yaml")
    zoo_dir = tmp_path / "zoo"
    # a relative --zoo-dir, as a user types it (trials run in Ray's own working folders)
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", "zoo"]
    env = own_ray.env
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.time() + 400
    parent_dir = zoo_dir / "vision" / "pretraining"
    while time.time() < deadline and proc.poll() is None:
        done = [r for r in (layout.read_results(p) for p in parent_dir.glob("*")) if len(r) >= 2]
        if done:  # the parent has trained an epoch: kill driver and trials together
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    own_ray.stop()  # what is left of the killed run's Ray: its own processes only
    rows = _status(zoo_dir)
    assert len(rows) == 3 and any(row["state"] != "complete" for row in rows)
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _status(zoo_dir)
    assert [row["state"] for row in rows] == ["complete"] * 3
    members = layout.scan_members(zoo_dir)
    assert sorted(m.relpath for m in members) == sorted(row["member"] for row in rows)
    for member in members:
        assert member.checkpoints == [0, 1, 2]
        assert [r["epoch"] for r in member.results] == [0, 1, 2]
    children = [m for m in members if m.stage == "finetuning"]
    # each trial trains with its own grid values
    assert sorted(m.config["recipe"]["optim"] for m in children) == ["adamw_torch", "sgd"]
    assert all(m.config["recipe"]["optim"].startswith(m.factors["optimizer"]) for m in children)
    assert {m.config["parent"]["member"] for m in children} == {m.name for m in members if m.stage == "pretraining"}
    # Ray's scratch and the Trainer states are not left in the zoo
    assert not list(zoo_dir.rglob("optimizer.pt")) and not list(zoo_dir.rglob("params.json"))
    # a different spec in the same folder is refused before anything is trained
    other = write_spec(tmp_path / "other.yaml", vision__pretraining__grid={"seed": [5]})
    refused = subprocess.run([*command[:4], str(other), "--zoo-dir", "zoo"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "different spec" in refused.stderr


def test_a_failing_member_is_recorded_and_the_rest_go_on(tmp_path, own_ray):
    # a learning rate that diverges to NaN for one grid point only
    spec = write_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"learning_rate": [1e-3, 1e38]},
                      vision__pretraining__fixed={"num_train_epochs": 2, "max_train_samples": 64, "warmup_steps": 0,
                                                  "max_eval_samples": 32, "label_smoothing": 0.0,
                                                  "mixup_alpha": 0.0, "cutmix_alpha": 0.0})
    del_finetuning = yaml.safe_load(spec.read_text())
    del del_finetuning["vision"]["finetuning"]
    spec.write_text(yaml.safe_dump(del_finetuning))
    zoo_dir = tmp_path / "zoo"
    # both members in one pack (one trial): the diverging one fails alone
    result = subprocess.run([sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir),
                             "--pack", "2"], cwd=ROOT, capture_output=True, text=True, env=own_ray.env)
    assert result.returncode == 1
    rows = {row["member"].split("_lr_")[1].split("_")[0]: row for row in _status(zoo_dir)}
    assert rows["0.001"]["state"] == "complete"
    assert rows["1e+38"]["state"] == "failed"
    assert rows["1e+38"]["error"] and "TrainingDiverged" in rows["1e+38"]["error"]
    records = [m.config["provenance"]["pack"] for m in layout.scan_members(zoo_dir)]
    assert records[0] == records[1] and records[0]["size"] == 2


def test_generate_on_a_two_node_ray_cluster(tmp_path, own_ray):
    """A real local cluster: a head and a second node started with `ray start`, joined by --ray-address; stopped
    by the processes of its own temp dir, never `ray stop` (which would stop every Ray on the machine)."""
    ray = str(Path(sys.executable).parent / "ray")
    # a loopback-only test cluster: no token authentication between its processes
    env = {**own_ray.env, "RAY_AUTH_MODE": "disabled"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    subprocess.run([ray, "start", "--head", f"--port={port}", "--include-dashboard=false",
                    f"--temp-dir={own_ray.temp_dir}", *common], check=True, capture_output=True, env=env)
    subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", '--resources={"second": 1}', *common],
                   check=True, capture_output=True, env=env)
    assert len({pid for pid in own_ray.pids() if "raylet" in Path(f"/proc/{pid}/comm").read_text()}) == 2
    spec = pretraining_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"seed": [1, 2]},
                           vision__pretraining__fixed={"num_train_epochs": 1, "max_train_samples": 128,
                                                       "max_eval_samples": 64})
    zoo_dir = tmp_path / "zoo"
    result = subprocess.run([sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir),
                             "--ray-address", f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    members = layout.scan_members(zoo_dir)
    assert len(members) == 2 and all(m.state == "complete" for m in members)
    nodes = {m.config["provenance"]["ray_node_id"] for m in members}
    assert len(nodes) == 2  # one CPU per node and per member: each node trained one member


def test_optuna_samples_n_members_and_a_rerun_adds_none(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "optuna", "vision": {"pretraining": {
        "config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
        "fixed": {"num_train_epochs": 1, "max_train_samples": 64, "max_eval_samples": 32},
        "ranges": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                   "weight_decay": {"choices": [0.0, 0.01]}},
    }}}))
    zoo_dir = tmp_path / "zoo"
    # in this process: Optuna samples and trains its members here, and no Ray is started
    command = ["generate", str(spec), "--zoo-dir", str(zoo_dir)]
    assert zoo_main(command) == 2 and "--optuna" in capsys.readouterr().err
    for _ in range(2):
        assert zoo_main([*command, "--optuna", "2"]) == 0
        members = layout.scan_members(zoo_dir)
        assert len(members) == 2 and all(m.state == "complete" for m in members)
    rates = [m.config["factors"]["learning_rate"] for m in members]
    assert all(1e-4 <= rate <= 1e-2 for rate in rates) and rates[0] != rates[1]


def _trial_pid(driver: int, member: str) -> int | None:
    """The process training `member` among the Ray Tune trials of the run whose driver is `driver`: a descendant
    of that process (its own Ray), working in the trial folder named after the member."""
    for pid in sorted(descendants({driver}) - {driver}):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if title.startswith(b"ray::ImplicitFunc") and f"member={member.replace('.', '_')}" in cwd:
            return pid
    return None


def test_kill_a_trial_and_rerun(tmp_path, own_ray):
    """SIGKILL the trial of one chosen member: the rest of the population goes on; a rerun completes it."""
    spec = pretraining_spec(tmp_path / "spec.yaml", vision__pretraining__grid={"seed": [1, 2]},
                           vision__pretraining__fixed={"num_train_epochs": 5, "checkpoint_every": 1,
                                                       "max_train_samples": 768, "max_eval_samples": 64,
                                                       "per_device_train_batch_size": 64})
    zoo_dir = tmp_path / "zoo"
    _, stages = load_spec(spec)
    target, other = sorted((m for m in plan_members(stages)[0].members), key=lambda m: "_seed_2_" not in m.name)
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=own_ray.env)
    killed = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and killed is None:
        if len(layout.read_results(zoo_dir / target.relpath())) >= 2:  # trained an epoch, 4 more to go
            killed = _trial_pid(proc.pid, target.name)
            if killed is not None:
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    assert killed is not None, "the target member's trial was not found running"
    assert proc.wait(timeout=400) == 1  # the driver finished the stage and reports an incomplete zoo
    states = {row["member"]: row["state"] for row in _status(zoo_dir)}
    assert states == {target.relpath(): "incomplete", other.relpath(): "complete"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=own_ray.env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["state"] for row in _status(zoo_dir)] == ["complete", "complete"]


def test_generate_refuses_a_second_writer_and_says_so_when_its_ray_dies(tmp_path, own_ray):
    """While a run trains, a second `zoo generate` of the same zoo is refused in one line. When the run's Ray dies,
    Ray's core worker would end the driver with exit 1 and no Python error: one line instead, and exit 3."""
    spec = pretraining_spec(tmp_path / "spec.yaml", vision__pretraining__fixed={  # far more epochs than it will live
        "num_train_epochs": 500, "max_train_samples": 256, "max_eval_samples": 32, "per_device_train_batch_size": 64})
    zoo_dir = tmp_path / "zoo"
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=own_ray.env)
    deadline = time.time() + 400
    raylet = None
    while time.time() < deadline and proc.poll() is None and raylet is None:
        if any(len(layout.read_results(p)) >= 1 for p in (zoo_dir / "vision" / "pretraining").glob("*")):
            raylet = next((pid for pid in own_ray.pids() if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"),
                          None)
        time.sleep(0.2)
    assert raylet is not None, "no raylet of the run's own Ray was found"
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=own_ray.env)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr[-2000:]
    assert f"is being written by zoo generate (pid {proc.pid} on" in second.stderr
    assert proc.poll() is None
    os.kill(raylet, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "the Ray cluster under this run stopped (its raylet process" in last
    assert "run the same command again to resume" in last


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


def test_ctrl_c_says_how_to_resume_and_the_rerun_says_where_it_resumes(tmp_path, own_ray):
    """SIGINT (Ctrl-C) of `zoo generate` while a member trains: exit 130 and one line saying to rerun, not Ray's
    `tune.run(..., resume=True)`; the rerun says it resumes, from which epoch, and how long the stage took."""
    spec = pretraining_spec(tmp_path / "spec.yaml", vision__pretraining__fixed={
        "num_train_epochs": 6, "checkpoint_every": 1, "max_train_samples": 512, "max_eval_samples": 64,
        "per_device_train_batch_size": 64})
    zoo_dir = tmp_path / "zoo"
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=own_ray.env, start_new_session=True)  # its own group: Ctrl-C reaches all of it
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if any(len(layout.read_results(p)) >= 3 for p in (zoo_dir / "vision" / "pretraining").glob("*")):
            break  # epochs 0 to 2 written, 4 more to go
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "resume=True" not in err and "Resume experiment" not in err
    assert err.strip().splitlines()[-1] == ("zoo generate: interrupted: rerun the same command to resume (complete "
                                            "members are kept, the others go on from their last saved epoch)")
    (member,) = layout.scan_members(zoo_dir)
    assert member.state == "incomplete"
    own_ray.stop()  # what is left of the interrupted run's Ray
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=own_ray.env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines[0] == f"zoo: resuming the zoo in {zoo_dir}: complete members are kept, the others go on from " \
        "their last saved state"
    resumed = [line for line in lines if " resumes from epoch " in line]
    assert len(resumed) == 1 and resumed[0].startswith(f"zoo: {member.relpath} resumes from epoch ")
    assert 2 <= int(resumed[0].rsplit(" ", 1)[-1]) < 6
    assert any(line.startswith("zoo: vision/pretraining: 1 member done in ") and line.endswith(" s") for line in lines)
    assert layout.scan_members(zoo_dir)[0].state == "complete"


def test_an_interrupt_is_one_line_and_frees_the_zoo(tmp_path, capsys, monkeypatch):
    from zoo.population import cli as population

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(population, "generate", interrupted)
    zoo_dir = tmp_path / "zoo"
    assert zoo_main(["generate", str(write_spec(tmp_path / "spec.yaml")), "--zoo-dir", str(zoo_dir)]) == 130
    assert capsys.readouterr().err.splitlines() == [population.INTERRUPTED]
    assert "rerun the same command to resume" in population.INTERRUPTED
    with layout.ZooLock(zoo_dir):  # released
        pass


def test_resume_epoch_reads_the_state_a_trial_resumes_from(tmp_path):
    from zoo.population import PlannedMember, duration, resume_epoch

    zoo_dir = tmp_path / "zoo"
    one = PlannedMember("vision", "pretraining", "vit-pretrain", "a", {}, None, 6)
    assert resume_epoch(zoo_dir, [one], "a") is None  # nothing saved: it starts afresh
    state = layout.trainer_state_dir(zoo_dir, zoo_dir / one.relpath())
    for step, epoch in ((16, 2.0), (24, 3.0)):
        (state / f"checkpoint-{step}").mkdir(parents=True)
        (state / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"epoch": epoch}))
    (state / "checkpoint-32").mkdir()  # a save cut short (no trainer_state.json): not resumed from
    assert resume_epoch(zoo_dir, [one], "a") == 3
    pack = [PlannedMember("vision", "finetuning", "vit-finetune", n, {}, "p", 4) for n in ("b", "c")]
    pack_state = layout.trainer_state_dir(zoo_dir, zoo_dir / "vision" / "finetuning" / "p") / "pack-x" / "epoch-0002"
    pack_state.mkdir(parents=True)
    (pack_state / "pack.json").write_text(json.dumps({"epoch": 2, "members": ["b", "c"]}))
    assert resume_epoch(zoo_dir, pack, "pack-x") == 2
    assert resume_epoch(zoo_dir, pack[:1] + [pack[0]], "pack-x") is None  # another pack's state: starts afresh
    assert [duration(s) for s in (4.4, 59.6, 72, 3600 + 5 * 60 + 9)] == ["4 s", "1 min 0 s", "1 min 12 s", "1 h 5 min"]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_the_trials_of_a_killed_driver_write_nothing_once_the_next_run_has_the_zoo(tmp_path, own_ray):
    """SIGKILL the driver alone (its trial goes on for a moment): the next lock of the zoo is granted only once the
    trial has ended, and from then on no file of the zoo changes."""
    spec = pretraining_spec(tmp_path / "spec.yaml", vision__pretraining__fixed={
        "num_train_epochs": 50, "checkpoint_every": 1, "max_train_samples": 256, "max_eval_samples": 32,
        "per_device_train_batch_size": 64})
    zoo_dir = tmp_path / "zoo"
    _, stages = load_spec(spec)
    (member,) = plan_members(stages)[0].members
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=own_ray.env)
    trial, deadline = None, time.time() + 400
    while time.time() < deadline and proc.poll() is None and trial is None:
        if len(layout.read_results(zoo_dir / member.relpath())) >= 2:
            trial = _trial_pid(proc.pid, member.name)
        time.sleep(0.1)
    assert trial is not None, "the member's trial was not found running"
    proc.kill()
    proc.wait()
    with layout.ZooLock(zoo_dir, wait_for_trials=120):
        assert not _running(trial)
        files = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in zoo_dir.rglob("*")
                 if p.is_file() and p.name != layout.LOCK_FILE}
        time.sleep(3)
        assert files == {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in zoo_dir.rglob("*")
                         if p.is_file() and p.name != layout.LOCK_FILE}
    assert layout.scan_members(zoo_dir)[0].state == "incomplete"
