"""`zoo generate` with Ray Tune, in processes of its own: kill and rerun (the driver, one trial, Ctrl-C), a failing
member among healthy ones, a two-node cluster, a second writer refused, a dead Ray reported, and the trials of a killed
driver stopped before the next run writes."""

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
from helpers.paths import ROOT
from helpers.processes import descendants
from helpers.specs import pretraining_spec, write_spec

from zoo import layout
from zoo.population import load_spec, plan_members

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.multiprocess]


def _status(zoo_dir: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "zoo", "status", str(zoo_dir), "--json"], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.timeout(600)
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


@pytest.mark.timeout(600)
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


@pytest.mark.timeout(900)
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


@pytest.mark.timeout(600)
def test_ctrl_c_says_how_to_resume_and_the_rerun_says_where_it_resumes(tmp_path, own_ray):
    """SIGINT (Ctrl-C) of `zoo generate` while a member trains: exit 130 and one line saying to rerun, not Ray's
    `tune.run(..., resume=True)`; the rerun says it resumes, from which epoch, and how long the stage took."""
    spec = pretraining_spec(tmp_path / "spec.yaml", vision__pretraining__fixed={
        "num_train_epochs": 8, "checkpoint_every": 1, "max_train_samples": 512, "max_eval_samples": 64,
        "per_device_train_batch_size": 64})
    zoo_dir = tmp_path / "zoo"
    command = [sys.executable, "-m", "zoo", "generate", str(spec), "--zoo-dir", str(zoo_dir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=own_ray.env, start_new_session=True)  # its own group: Ctrl-C reaches all of it
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if any(len(layout.read_results(p)) >= 2 for p in (zoo_dir / "vision" / "pretraining").glob("*")):
            break  # epochs 0 and 1 written, 7 more to go: time for the interrupt to land on a loaded machine
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
    assert 1 <= int(resumed[0].rsplit(" ", 1)[-1]) < 8
    assert any(line.startswith("zoo: vision/pretraining: 1 member done in ") and line.endswith(" s") for line in lines)
    assert layout.scan_members(zoo_dir)[0].state == "complete"


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
