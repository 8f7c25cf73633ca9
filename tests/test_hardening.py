"""Hardening: file modes, one writer per zoo, leftovers, status reasons, data columns, offline data, metrics, hints."""

import errno
import io
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
from zoo_factory import make_synthetic_zoo

from zoo import layout
from zoo.arguments import ConfigError, DataArguments, parse_config
from zoo.cli import main as zoo_main

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- file modes follow the umask


@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_zoo_files_and_folders_respect_the_umask(tmp_path, umask):
    layout.atomic_write_json(tmp_path / "zoo.json", {"a": 1})
    layout.append_result(tmp_path, {"epoch": 0})
    import torch
    from safetensors.torch import save_file

    checkpoint = layout.write_checkpoint(  # safetensors writes its files 0600 whatever the umask
        tmp_path, 0, lambda folder: save_file({"w": torch.zeros(2)}, str(folder / layout.WEIGHTS)))
    assert _mode(tmp_path / "zoo.json") == 0o666 & ~umask
    assert _mode(tmp_path / layout.RESULTS) == 0o666 & ~umask
    assert _mode(checkpoint) == 0o777 & ~umask
    assert _mode(checkpoint / layout.WEIGHTS) == 0o666 & ~umask


# ---------------------------------------------------------------- one writer per zoo


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {"pretraining": {
        "config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"), "grid": {"seed": [1]}}}}))
    return spec


def test_a_second_writer_is_refused_in_one_line(tmp_path, capsys):
    zoo_dir = tmp_path / "zoo"
    with layout.ZooLock(zoo_dir, "zoo generate"):
        assert zoo_main(["generate", str(_spec(tmp_path)), "--zoo-dir", str(zoo_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is being written by zoo generate (pid" in err[0], err
        assert f"pid {os.getpid()}" in err[0]
    # released on exit: the folder it created (still empty) is gone, and the lock can be taken again
    assert not zoo_dir.exists()
    with layout.ZooLock(zoo_dir):
        assert (zoo_dir / layout.LOCK_FILE).is_file()
    zoo_dir.mkdir()
    with layout.ZooLock(zoo_dir):
        pass
    assert zoo_dir.is_dir() and not (zoo_dir / layout.LOCK_FILE).exists()  # a folder it did not create stays


def test_a_lock_left_by_a_killed_writer_is_stale(tmp_path):
    zoo_dir = tmp_path / "zoo"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from zoo import layout; layout.ZooLock(sys.argv[1]).acquire(); print('held', flush=True);"
        " time.sleep(600)"), str(zoo_dir)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(layout.ZooLockedError, match=f"pid {holder.pid}"):
            layout.ZooLock(zoo_dir).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (zoo_dir / layout.LOCK_FILE).exists()  # the file stays after a crash, the lock does not
    with layout.ZooLock(zoo_dir):
        pass


@pytest.mark.parametrize("command", ["generate", "status"])
def test_a_zoo_dir_that_is_a_file_is_one_line(tmp_path, capsys, command):
    target = tmp_path / "afile"
    target.write_text("x")
    argv = ["generate", str(_spec(tmp_path)), "--zoo-dir", str(target)] if command == "generate" else \
        ["status", str(target)]
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a zoo folder" in err[0]
    assert target.read_text() == "x"


# ---------------------------------------------------------------- leftovers


def test_trainer_state_removal_prunes_empty_folders(tmp_path):
    zoo = tmp_path / "zoo"
    first = layout.trainer_state_dir(zoo, zoo / "vision" / "finetuning" / "p" / "a")
    second = layout.trainer_state_dir(zoo, zoo / "vision" / "finetuning" / "p" / "b")
    for state in (first, second):
        (state / "checkpoint-4").mkdir(parents=True)
        (state / "checkpoint-4" / "trainer_state.json").write_text("{}")
    layout.remove_trainer_state(first)
    assert not first.exists() and second.is_dir()  # another member's state stays
    layout.remove_trainer_state(second)
    assert not (zoo / layout.TRAINER_STATE_DIR).exists()


def test_ray_scratch_folders_are_removed(tmp_path, monkeypatch):
    from zoo.population import search as population

    monkeypatch.setattr(population.tempfile, "gettempdir", lambda: str(tmp_path))
    storage = population._scratch_dir(tmp_path / "zoo")
    (storage / "vision-pretraining" / "trial").mkdir(parents=True)
    population._remove_scratch(storage, "vision-pretraining")
    assert not (tmp_path / "transformer-zoo-ray").exists()


# ---------------------------------------------------------------- status: a reason per member, damage kept local


def test_status_says_why_and_survives_a_truncated_result_line(tmp_path, capsys):
    members = make_synthetic_zoo(tmp_path / "zoo", junk=False, language=False)
    zoo_dir = tmp_path / "zoo"
    by_name = {m.name: m for m in members}
    truncated = by_name["vit_sup_seed_0_optim_adamw"].path / layout.checkpoint_name(2) / layout.WEIGHTS
    truncated.write_bytes(truncated.read_bytes()[:-100])
    no_config = by_name["vit_con_seed_1_optim_sgd"].path / layout.MEMBER_CONFIG
    no_config.unlink()
    bad_results = by_name["ft_seed_10"].path / layout.RESULTS
    bad_results.write_text(bad_results.read_text()[:-20])  # a line cut by a crash
    planned = [{"member": m.relpath, "stage": m.stage, "epochs": 2} for m in members]
    layout.write_zoo_file(zoo_dir, {"name": "t"}, "0" * 16, planned=planned)

    assert zoo_main(["status", str(zoo_dir), "--json"]) == 0
    rows = {row["member"].split("/")[-1]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert len(rows) == len(members)
    assert rows["vit_sup_seed_0_optim_adamw"]["state"] == "incomplete"
    assert rows["vit_sup_seed_0_optim_adamw"]["reason"].startswith("checkpoint_000002/model.safetensors: ")
    assert rows["vit_con_seed_1_optim_sgd"]["reason"] == "no config.json"
    assert rows["ft_seed_10"]["state"] == "incomplete" and "result.json line 3" in rows["ft_seed_10"]["reason"]
    assert rows["ft_seed_10"]["epochs_done"] == 1  # the readable lines still count
    assert rows["ft_seed_11"]["state"] == "complete" and rows["ft_seed_11"]["reason"] is None
    assert zoo_main(["status", str(zoo_dir)]) == 0
    table = capsys.readouterr().out
    assert "reason" in table.splitlines()[0] and "no config.json" in table


def test_status_imports_nothing_heavy():
    code = ("import sys, zoo.cli, zoo.status; "
            "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- data: columns and offline


@pytest.mark.parametrize("kind,flag", [("vit-pretrain", "--label_column"), ("vit-pretrain", "--image_column"),
                                       ("lm-pretrain", "--text_column"), ("lm-finetune", "--label_column")])
def test_unknown_columns_of_embedded_data_are_errors(tmp_path, capsys, kind, flag):
    from zoo.data import DataError, load_images, load_texts

    data_args = DataArguments(**{flag.lstrip("-"): "nosuch"})
    with pytest.raises(DataError, match=f"{flag.lstrip('-')} 'nosuch' not in the data set embedded:"):
        if kind == "vit-pretrain":
            load_images(data_args, 8, 3, "embedded:digits")
        else:
            load_texts(data_args, "embedded:rotten_tomatoes" if kind == "lm-finetune" else "embedded:bbcnews")
    # the columns the embedded sets do have are accepted
    assert load_texts(DataArguments(text_column="text", label_column="label"), "embedded:rotten_tomatoes")[2]


def test_recipe_with_an_unknown_label_column_writes_nothing(tmp_path, capsys):
    from zoo.runs import recipe_main

    out = tmp_path / "out"
    assert recipe_main("vit-pretrain", ["--output_dir", str(out), "--label_column", "nosuch",
                                        "--dataset", "embedded:digits", "--image_size", "8", "--patch_size", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and "label_column 'nosuch'" in err[-1]
    assert not out.exists() or not any(out.iterdir())


def test_an_unreachable_hub_fails_at_the_first_connection_error(monkeypatch):
    from huggingface_hub import constants

    from zoo.data import DataError, load_texts

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        load_texts(DataArguments(dataset="nosuch-user/nosuch-set"), "embedded:bbcnews")


# ---------------------------------------------------------------- metrics come from the package


def test_unknown_metrics_are_a_config_error():
    with pytest.raises(ConfigError, match="eval_metrics: unknown metric 'glue'.*available: accuracy, f1"):
        parse_config({"eval_metrics": ["glue"]})
    with pytest.raises(ConfigError, match="unknown metric 'someone/remote_code'"):
        parse_config({}, ["--eval_metrics", "accuracy", "someone/remote_code"])


def test_metrics_are_the_packages_own_evaluate_modules(monkeypatch):
    import numpy as np
    from transformers import EvalPrediction

    from zoo.runs import _load_extra_metrics
    from zoo.training import accuracy_metrics

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metrics = _load_extra_metrics(["accuracy", "f1", "matthews_correlation"])
    predictions, labels = np.array([0, 1, 2, 1, 0]), np.array([0, 1, 1, 1, -100])
    out = accuracy_metrics(metrics)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert out["acc"] == out["accuracy"] == 0.75
    assert 0 < out["f1"] < 1 and 0 < out["matthews_correlation"] < 1


# ---------------------------------------------------------------- what a new user sees


def test_unknown_keys_suggest_the_nearest_one(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown argument '--num_epochs' \(did you mean '--num_train_epochs'\?\)"):
        parse_config({}, ["--num_epochs", "3"])
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {"pretraining": {
        "fixed": {"learning_rat": 0.1}, "grid": {"seed": [1]}}}}))
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(tmp_path / "zoo")]) == 2
    assert "did you mean 'learning_rate'?" in capsys.readouterr().err


def test_progress_off_a_terminal_prints_a_line_per_member_not_per_refresh(tmp_path):
    from zoo.population import PlannedMember, Progress

    members = make_synthetic_zoo(tmp_path / "zoo", junk=False, language=False)
    plans = [PlannedMember(m.modality, m.stage, m.config["kind"], m.name, {},
                           m.parent["member"] if m.parent else None, 2) for m in members]
    stream = io.StringIO()
    progress = Progress(tmp_path / "zoo", plans, stream=stream, log_every=3600)
    for _ in range(20):
        progress._refresh()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"zoo: done: {plan.relpath()}" for plan in plans)
    progress._refresh(final=True)
    assert stream.getvalue().splitlines()[-1] == f"zoo: {3 * len(plans)}/{3 * len(plans)} epochs, done {len(plans)} " \
        "running 0 failed 0 left 0"


def test_demo_prints_the_status_table_once():
    demo = (ROOT / "recipes" / "demo.sh").read_text()
    commands = [line for line in demo.splitlines() if line.strip() and not line.lstrip().startswith(("#", "echo"))]
    assert sum("zoo generate" in line for line in commands) == 1  # it ends with the table
    assert not any("zoo status" in line for line in commands)


def test_a_rerun_on_a_complete_zoo_prepares_no_data_and_starts_no_ray(tmp_path, monkeypatch):
    from zoo_factory import write_member

    from zoo import runs
    from zoo.population import generation as population

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {
        "pretraining": {"config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
                        "fixed": {"num_train_epochs": 2, "checkpoint_every": 1}, "grid": {"seed": [1]}},
        "finetuning": {"config": str(ROOT / "recipes/configs/vision/finetune_tiny.yaml"),
                       "fixed": {"num_train_epochs": 2, "checkpoint_every": 1},
                       "grid": {"optimizer": ["adamw", "sgd"]}},
    }}))
    loaded, stages = population.load_spec(spec)
    population.plan_members(stages)
    zoo_dir = tmp_path / "zoo"
    layout.write_zoo_file(zoo_dir, loaded, population.spec_hash(loaded))  # the zoo of an earlier run
    parent = write_member(zoo_dir, stages[0].members[0].name, "vit-supervised", {"seed": 1})
    for member in stages[1].members:
        write_member(zoo_dir, member.name, "vit-finetune", {"optimizer": member.name}, parent=parent)

    def refuse(*args, **kwargs):
        raise AssertionError("a complete zoo needs no data and no Ray")

    monkeypatch.setattr(runs, "MemberRun", refuse)
    monkeypatch.setattr(population, "_init_ray", refuse)
    members = population.generate(spec, zoo_dir)
    assert len(members) == 3 and all(m.is_complete() for m in members)


# ---------------------------------------------------------------- messages that say where and what to do


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


def test_a_damaged_result_line_names_the_file_the_line_and_the_repair(tmp_path, capsys, monkeypatch):
    from zoo_factory import write_member

    from zoo import runs
    from zoo.population import generation as population

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "vision": {
        "pretraining": {"config": str(ROOT / "recipes/configs/vision/pretrain_supervised_tiny.yaml"),
                        "fixed": {"num_train_epochs": 2, "checkpoint_every": 1}, "grid": {"seed": [1]}},
        "finetuning": {"config": str(ROOT / "recipes/configs/vision/finetune_tiny.yaml"),
                       "fixed": {"num_train_epochs": 2, "checkpoint_every": 1}, "grid": {"optimizer": ["adamw"]}}}}))
    loaded, stages = population.load_spec(spec)
    population.plan_members(stages)
    zoo_dir = tmp_path / "zoo"
    layout.write_zoo_file(zoo_dir, loaded, population.spec_hash(loaded))
    # the parent still has an epoch to train: the damage is found before it trains
    parent = write_member(zoo_dir, stages[0].members[0].name, "vit-supervised", {"seed": 1}, epochs_done=1)
    child = write_member(zoo_dir, stages[1].members[0].name, "vit-finetune", {"optimizer": "adamw"}, parent=parent)
    results = child.path / layout.RESULTS
    lines = results.read_text().splitlines()
    results.write_text("\n".join([lines[0], lines[1][:-15], *lines[2:]]) + "\n")  # line 2 cut short

    def refuse(*args, **kwargs):
        raise AssertionError("nothing trains before the damaged member is reported")

    monkeypatch.setattr(runs, "MemberRun", refuse)
    monkeypatch.setattr(population, "_init_ray", refuse)
    capsys.readouterr()
    assert zoo_main(["generate", str(spec), "--zoo-dir", str(zoo_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"zoo generate: error: {results.resolve()}:2: not valid JSON (")
    assert err[0].endswith("; to repair it, delete that line (the member then reads as incomplete, and the next run "
                           f"trains it again from its last saved state) or the member folder {child.path.resolve()}")
    # as told: without the line the member is incomplete (status says so), and nothing else is in the way
    results.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    assert layout.load_member(child.path).state == "incomplete"


@pytest.mark.parametrize("error", [errno.EROFS, errno.EACCES, errno.EPERM])  # read-only mount, no write access,
def test_a_zoo_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, error):  # immutable (chattr +i)
    from zoo import population

    spec = _spec(tmp_path)
    zoo_dir = tmp_path / "zoo"
    loaded, _ = population.load_spec(spec)
    layout.write_zoo_file(zoo_dir, loaded, population.spec_hash(loaded))
    zoo_dir.chmod(0o555)  # read-only (root writes anyway: the refusal is also made at the real call below)
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if Path(path).name == layout.LOCK_FILE:
            raise (PermissionError if error != errno.EROFS else OSError)(error, os.strerror(error), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(layout.os, "open", refusing_open)
    try:
        assert zoo_main(["generate", str(spec), "--zoo-dir", str(zoo_dir)]) == 2
    finally:
        zoo_dir.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"zoo generate: error: {zoo_dir / layout.LOCK_FILE}: cannot open the zoo's lock file "
                   f"({os.strerror(error)}); zoo generate writes the zoo and needs write access to {zoo_dir}"]


def test_a_zoo_folder_that_cannot_be_made_is_one_line(tmp_path, capsys, monkeypatch):
    def refusing_mkdir(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(layout.Path, "mkdir", refusing_mkdir)
    assert zoo_main(["generate", str(_spec(tmp_path)), "--zoo-dir", str(tmp_path / "ro" / "zoo")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"zoo generate: error: {tmp_path / 'ro' / 'zoo'}: cannot create the zoo folder (Permission denied)"]


def test_progress_ignores_an_earlier_runs_failures_and_reports_this_runs(tmp_path):
    """A rerun after a failed run: the old error.json files are not reported (they stay until each member's retry
    starts); a member that now succeeds is reported done, one that fails again reports its new failure once."""
    from zoo_factory import write_member

    from zoo.population import PlannedMember, Progress

    zoo = tmp_path / "zoo"
    retried, failing = (write_member(zoo, name, "vit-supervised", {"seed": 1}, epochs_done=1) for name in "ab")
    for member in (retried, failing):
        layout.record_failure(member.path, "RuntimeError: the earlier run's")
    plans = [PlannedMember("vision", "pretraining", "vit-pretrain", name, {}, None, 2) for name in "ab"]
    stream = io.StringIO()
    progress = Progress(zoo, plans, stream=stream, log_every=3600)
    progress._refresh(final=True)
    assert stream.getvalue().splitlines() == ["zoo: 4/6 epochs, done 0 running 2 failed 0 left 0"]
    for member in (retried, failing):  # the retries start: prepare_member clears the old failure
        layout.clear_failure(member.path)
    progress._refresh()
    write_member(zoo, "a", "vit-supervised", {"seed": 1})  # the retry of a completes
    layout.record_failure(failing.path, "RuntimeError: this run's")
    for _ in range(3):
        progress._refresh()
    progress._refresh(final=True)
    assert stream.getvalue().splitlines()[1:] == [
        "zoo: done: vision/pretraining/a", "zoo: failed (RuntimeError: this run's): vision/pretraining/b",
        "zoo: 5/6 epochs, done 1 running 0 failed 1 left 0"]


# ---------------------------------------------------------------- a trial never outlives its driver's lock


def _fake_driver(zoo_dir: Path) -> tuple[subprocess.Popen, str]:
    """A process holding the zoo's lock as `zoo generate` does; returns it and its writer id."""
    driver = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from zoo import layout; lock = layout.ZooLock(sys.argv[1]).acquire(); "
        "print(lock.writer_id, flush=True); time.sleep(600)"), str(zoo_dir)], stdout=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return driver, driver.stdout.readline().strip()


def test_a_trial_writes_nothing_once_its_driver_is_gone(tmp_path):
    zoo_dir = tmp_path / "zoo"
    driver, writer_id = _fake_driver(zoo_dir)
    member = zoo_dir / "vision" / "pretraining" / "m"
    try:
        assert layout.held_writer_id(zoo_dir) is None and layout.lock_held_by(zoo_dir, writer_id)
        assert not layout.lock_held_by(zoo_dir, "someone-else")
        with layout.WriterGuard(zoo_dir, writer_id, watchdog=False):
            layout.append_result(member, {"epoch": 0})  # the driver holds its lock: writes go through
            driver.kill()
            driver.wait()
            before = (member / layout.RESULTS).read_bytes()
            with pytest.raises(layout.WriterGone, match="no longer holds"):
                layout.append_result(member, {"epoch": 1})
            with pytest.raises(layout.WriterGone):
                layout.write_checkpoint(member, 1, lambda folder: (folder / layout.WEIGHTS).write_bytes(b"x"))
            with pytest.raises(layout.WriterGone):
                layout.record_failure(member, "RuntimeError: x")
            assert (member / layout.RESULTS).read_bytes() == before
            assert sorted(p.name for p in member.iterdir()) == [layout.RESULTS]  # no checkpoint, no temporaries
        # a new writer of the zoo: the old writer id no longer passes, the new one does
        with layout.ZooLock(zoo_dir) as lock:
            assert layout.held_writer_id(zoo_dir) == lock.writer_id and lock.writer_id != writer_id
            assert not layout.lock_held_by(zoo_dir, writer_id) and layout.lock_held_by(zoo_dir, lock.writer_id)
            with pytest.raises(layout.WriterGone):
                with layout.WriterGuard(zoo_dir, writer_id, watchdog=False):
                    pass
        assert not (zoo_dir / layout.LOCK_FILE).exists() and not (zoo_dir / layout.WRITERS_FILE).exists()
        assert layout.check_writer() is None  # outside a guard: no check
    finally:
        driver.kill()
        driver.wait()


def test_the_next_writer_waits_until_the_trials_of_a_killed_driver_have_ended(tmp_path):
    """A trial process writes result lines as fast as it can; its driver is SIGKILLed. The trial's watchdog ends it,
    and the next `ZooLock` returns only once it has ended: from then on nothing in the zoo changes."""
    zoo_dir = tmp_path / "zoo"
    driver, writer_id = _fake_driver(zoo_dir)
    member = zoo_dir / "vision" / "pretraining" / "m"
    trial = subprocess.Popen([sys.executable, "-c", (
        "import sys, itertools; from pathlib import Path; from zoo import layout\n"
        "with layout.WriterGuard(sys.argv[1], sys.argv[2], period=0.2):\n"
        "    print('guarded', flush=True)\n"
        "    for epoch in itertools.count():\n"
        "        layout.append_result(Path(sys.argv[3]), {'epoch': epoch})\n"), str(zoo_dir), writer_id, str(member)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert trial.stdout.readline().strip() == "guarded"
        while len(layout.read_results(member)) < 5:
            pass
        driver.kill()
        driver.wait()
        with layout.ZooLock(zoo_dir, wait_for_trials=60):
            assert trial.poll() is not None  # the barrier waited for the trial's end
            snapshot = (member / layout.RESULTS).read_bytes()
            time.sleep(0.5)
            assert (member / layout.RESULTS).read_bytes() == snapshot
        assert trial.returncode != 0
        err = trial.stderr.read()
        assert "is gone; this trial" in err or "WriterGone" in err, err[-2000:]
    finally:
        for process in (driver, trial):
            process.kill()
            process.wait()


def test_states_left_for_complete_members_are_dropped_by_the_rerun(tmp_path):
    """A run killed between a member's last epoch and the removal of its Trainer state leaves that state; the rerun
    skips the complete member, so it drops the state (and a pack's, once all its members are complete)."""
    from zoo_factory import write_member

    from zoo.population import drop_finished_states

    zoo = tmp_path / "zoo"
    folder = zoo / "vision" / "pretraining"
    done = [write_member(zoo, name, "vit-supervised", {"seed": 1}) for name in ("a", "b", "c")]
    running = write_member(zoo, "d", "vit-supervised", {"seed": 1}, epochs_done=1)
    root = layout.trainer_state_dir(zoo, folder)
    states = {"a": root / "a" / "checkpoint-8", "d": root / "d" / "checkpoint-8",
              "pack-done": root / "pack-done" / "epoch-0002", "pack-running": root / "pack-running" / "epoch-0001"}
    for state in states.values():
        state.mkdir(parents=True)
        (state / "optimizer.pt").write_bytes(b"x")
    (states["pack-done"] / "pack.json").write_text(json.dumps({"epoch": 2, "members": ["b", "c"]}))
    (states["pack-running"] / "pack.json").write_text(json.dumps({"epoch": 1, "members": ["c", "d"]}))
    drop_finished_states(zoo, folder)
    assert sorted(p.name for p in root.iterdir()) == ["d", "pack-running"]  # still needed to resume d
    assert all(m.is_complete() for m in done) and not layout.load_member(running.path).is_complete()
