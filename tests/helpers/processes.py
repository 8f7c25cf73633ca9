"""Processes of a test's own: a Ray started under the test's temp dir, and the descendants of a process.

Tests end only what they started: by PID, or by the temp dir of the Ray they started (never by process name across
the machine, never `ray stop`).
"""

import os
import shutil
import signal
import tempfile
import time


class OwnRay:
    """A Ray of the test's own: `zoo generate` run with `env` starts its Ray under `temp_dir` (a short path: Ray's
    socket paths are limited), and `ray start` with `env` puts a cluster there too. `stop()` ends the processes of
    that Ray only: those whose command line names `temp_dir` (GCS, raylet, monitors) and their children (workers)."""

    def __init__(self):
        self.temp_dir = tempfile.mkdtemp(prefix="zoo-ray-")
        # RAY_ADDRESS empty: never join a cluster found on the machine
        self.env = {**os.environ, "RAY_TMPDIR": self.temp_dir, "RAY_ADDRESS": ""}

    def pids(self) -> list[int]:
        parents: dict[int, int] = {}
        own: set[int] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if self.temp_dir.encode() in cmdline.read():
                        own.add(int(entry))
            except (OSError, ValueError, IndexError):
                continue
        return sorted(descendants(own, parents) - {os.getpid()})

    def stop(self) -> None:
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def descendants(roots: set[int], parents: dict[int, int] | None = None) -> set[int]:
    """`roots` and every process below them (from /proc when `parents` is not given)."""
    if parents is None:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
    found = set(roots)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found

