"""One writer per zoo: the zoo lock, the writers file, and the writer guard of trial processes.

`zoo generate` (the driver) holds an flock on `<zoo>/.zoo.lock`; its members are written by trial processes that
Ray starts, on this machine or others. A trial must never write once its driver is gone: a SIGKILLed driver loses
its flock at once, but Ray ends the driver's trials only 1 to 2.5 s later, and a new `zoo generate` of the same
zoo could meanwhile take the lock and train the same members. Three things make that impossible:

1. The driver writes a random writer id into the lock file. Before every write of the zoo (each atomic rename of a
   result.json, checkpoint, config or error.json, each Trainer state save, each removal) a trial checks that the
   lock is still held (an flock test on the lock file fails) and still holds its driver's writer id; otherwise it
   raises `WriterGone` and writes nothing. This works wherever the zoo folder is shared (a parent-death check by
   pid would not see a driver on another node), and a lock file that is gone (released) fails the check too.
2. A watchdog thread in each trial makes the same check every 0.5 s and ends the trial process when it fails, so
   orphaned trials stop within a second whatever they are doing (also in the Trainer's own state saves).
3. Each trial holds a shared flock on `<zoo>/.zoo.writers` for as long as it trains, and `ZooLock.acquire` takes
   that file exclusively once (waiting for it) before it returns: a new writer of the zoo starts only when every
   trial of earlier runs has ended, so even a write that passed its check just before the driver died cannot
   land after the next writer started.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .names import LayoutError

LOCK_FILE = ".zoo.lock"
WRITERS_FILE = ".zoo.writers"
_HELD: dict[str, str] = {}  # zoo folder (resolved) -> writer id of the ZooLock this process holds on it


class ZooLockedError(ValueError):
    """Another process writes this zoo."""


class WriterGone(BaseException):
    """A trial's `zoo generate` no longer holds the zoo's lock: the trial must not write. A BaseException, so that
    no `except Exception` of the training code records it as the member's failure (that would be a write too)."""


class ZooLock:
    """An exclusive lock on a zoo folder for one writer (`zoo generate`).

    An flock on `<zoo>/.zoo.lock`: the kernel drops it when the holder exits or is killed, so a crashed run
    leaves no stale lock. The file records the holder's pid and host for the refusal message, and a writer id that
    the holder's trials check before every write (see the module docstring); `acquire` returns once no trial of an
    earlier run is left. The zoo folder is created when missing, and removed again on release if it is still empty.
    """

    def __init__(self, zoo: str | Path, command: str = "zoo generate", wait_for_trials: float = 120.0):
        self.zoo, self.command = Path(zoo), command
        self.path = self.zoo / LOCK_FILE
        self.writer_id = ""
        self.wait_for_trials = wait_for_trials
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> ZooLock:
        if self.zoo.exists() and not self.zoo.is_dir():
            raise LayoutError(f"{self.zoo}: is a file, not a zoo folder")
        self._created = not self.zoo.exists()
        try:
            self.zoo.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LayoutError(f"{self.zoo}: cannot create the zoo folder ({err.strerror or err})") from None
        fd = self._lock_file()
        self.writer_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(8).hex()}"
        os.ftruncate(fd, 0)
        holder = f"{self.command} (pid {os.getpid()} on {socket.gethostname()})"
        os.write(fd, f"{holder}\nwriter {self.writer_id}\n".encode())
        self._fd = fd
        _HELD[str(self.zoo.resolve())] = self.writer_id
        try:
            self._wait_for_trials()
        except BaseException:
            self.release()
            raise
        return self

    def _lock_file(self) -> int:
        """The open lock file, flocked; refuses while another process holds it."""
        tries = 0
        while True:
            fd = self._open(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                tries += 1
                if tries < 5:  # a trial's check holds a shared flock for a few microseconds
                    time.sleep(0.05)
                    continue
                lines = self.path.read_text(errors="replace").splitlines()
                raise ZooLockedError(f"{self.zoo} is being written by {lines[0] if lines else 'another process'}; "
                                     "wait for it to finish (or stop it) and run again") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file that its last holder unlinked after we opened it
                return fd
            os.close(fd)

    def _wait_for_trials(self) -> None:
        """Return once no trial process of an earlier run holds `.zoo.writers` (they end within a second or two of
        their driver; see the module docstring)."""
        path = self.zoo / WRITERS_FILE
        fd = self._open(path)
        try:
            started, told = time.monotonic(), False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                waited = time.monotonic() - started
                if waited > 1.0 and not told:
                    print(f"zoo: waiting for the trial processes of an earlier run of {self.zoo} to end",
                          file=sys.stderr, flush=True)
                    told = True
                if waited > self.wait_for_trials:
                    raise ZooLockedError(f"{path}: trial processes of an earlier run of this zoo still hold it after "
                                         f"{self.wait_for_trials:g} s; stop them (`fuser -v {path}` lists them) "
                                         "and run again")
                time.sleep(0.1)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _open(self, path: Path) -> int:
        """Open (or create) a lock file; a read-only or immutable zoo is one line naming the file."""
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise LayoutError(f"{path}: cannot open the zoo's lock file ({err.strerror or err}); {self.command} "
                              f"writes the zoo and needs write access to {self.zoo}") from None

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(str(self.zoo.resolve()), None)
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None
        _remove_writers_file(self.zoo)
        if self._created:
            try:
                self.zoo.rmdir()  # nothing was written: leave no empty folder behind
            except OSError:
                pass

    def __enter__(self) -> ZooLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _remove_writers_file(zoo: Path) -> None:
    """Drop `.zoo.writers` when no trial holds it (one still alive keeps it, and the next run waits for it)."""
    try:
        fd = os.open(zoo / WRITERS_FILE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (zoo / WRITERS_FILE).unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)


def held_writer_id(zoo: str | Path) -> str | None:
    """The writer id of the ZooLock this process holds on `zoo`, None when it holds none."""
    return _HELD.get(str(Path(zoo).resolve()))


def lock_held_by(zoo: str | Path, writer_id: str) -> bool:
    """Whether the zoo's lock is held, by the writer `writer_id` (a cheap check: open, flock, read)."""
    try:
        fd = os.open(Path(zoo) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # released (a release removes the file)
    except OSError:
        return True  # cannot tell (no access): not a reason to stop training
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"writer {writer_id}".encode() in os.pread(fd, 4096, 0)  # held: by our driver?
        except OSError:
            return True  # a file system without flock: cannot tell
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False  # nobody holds it: the driver is gone
    finally:
        os.close(fd)


_GUARD: WriterGuard | None = None


def check_writer() -> None:
    """Before every write and removal of the layout package (a no-op outside a guarded trial): when the `zoo generate`
    this process writes for is gone, end the process (a trial's guard) or raise `WriterGone`."""
    guard = _GUARD
    if guard is not None and not lock_held_by(guard.zoo, guard.writer_id):
        if guard.watchdog:  # a trial: nothing is left for it to do, and ending frees `.zoo.writers` for the next run
            guard.end()
        raise WriterGone(f"the zoo generate that started this trial no longer holds {guard.zoo / LOCK_FILE}: "
                         "this trial writes nothing more")


class WriterGuard:
    """Held by a trial process while it writes the zoo for the driver `writer_id` holding the lock (see the module
    docstring): a shared flock on `.zoo.writers`, the check before every write, and a watchdog that ends the
    process within `period` seconds of its driver's end (a failed check ends it too). `watchdog=False` (tests):
    no thread, and a failed check raises `WriterGone`."""

    def __init__(self, zoo: str | Path, writer_id: str, period: float = 0.5, watchdog: bool = True):
        self.zoo, self.writer_id, self.period, self.watchdog = Path(zoo), writer_id, period, watchdog
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WriterGuard:
        global _GUARD
        try:
            self._fd = os.open(self.zoo / WRITERS_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            fcntl.flock(self._fd, fcntl.LOCK_SH)  # waits only while a new driver takes it for an instant
        except OSError:  # no access, no flock: the checks still hold
            self._close()
        _GUARD = self
        try:
            check_writer()
        except WriterGone:
            self.__exit__()
            raise
        if self.watchdog:
            self._thread = threading.Thread(target=self._watch, daemon=True, name="zoo-writer-guard")
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            if not lock_held_by(self.zoo, self.writer_id):
                self.end()

    def end(self) -> None:
        """End this trial process at once: its driver is gone."""
        print(f"zoo: the zoo generate of {self.zoo} is gone; this trial (pid {os.getpid()}) ends without writing "
              "more", file=sys.stderr, flush=True)
        os._exit(1)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the shared flock
            self._fd = None

    def __exit__(self, *exc) -> None:
        global _GUARD
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if _GUARD is self:
            _GUARD = None
        self._close()
