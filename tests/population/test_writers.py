"""A trial never outlives its driver's lock: once the driver is gone it writes nothing, and the next writer of the
zoo waits until the trials of a killed driver have ended."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.paths import ROOT

from zoo import layout


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
