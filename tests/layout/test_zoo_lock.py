"""One writer per zoo: `zoo generate` takes the zoo's lock, a second writer is refused in one line, a killed
writer's lock is stale, and a zoo folder that is a file, cannot be written or cannot be made is one line."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import ROOT
from helpers.specs import one_member_spec

from zoo import layout
from zoo.cli import main as zoo_main


def test_a_second_writer_is_refused_in_one_line(tmp_path, capsys):
    zoo_dir = tmp_path / "zoo"
    with layout.ZooLock(zoo_dir, "zoo generate"):
        assert zoo_main(["generate", str(one_member_spec(tmp_path)), "--zoo-dir", str(zoo_dir)]) == 2
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
    argv = ["generate", str(one_member_spec(tmp_path)), "--zoo-dir", str(target)] if command == "generate" else \
        ["status", str(target)]
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a zoo folder" in err[0]
    assert target.read_text() == "x"


@pytest.mark.parametrize("error", [errno.EROFS, errno.EACCES, errno.EPERM])  # read-only mount, no write access,
def test_a_zoo_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, error):  # immutable (chattr +i)
    from zoo import population

    spec = one_member_spec(tmp_path)
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
    assert zoo_main(["generate", str(one_member_spec(tmp_path)), "--zoo-dir", str(tmp_path / "ro" / "zoo")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"zoo generate: error: {tmp_path / 'ro' / 'zoo'}: cannot create the zoo folder (Permission denied)"]
