"""What `zoo generate` shows while it trains: progress over the planned epochs (a bar, or lines in a log) read from
the zoo folder, and its own one-line messages."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.population.plans import PlannedMember


class Progress:
    """Progress over planned epochs, refreshed from the zoo folder (works for trials on any node).

    On a terminal: one bar. Otherwise (a log file, CI): a line per finished or failed member and a summary line
    every `log_every` seconds, instead of a new line at every refresh.
    """

    def __init__(self, zoo_dir: Path, members: list[PlannedMember], stream=None, log_every: float = 30.0):
        self.zoo_dir, self.members = zoo_dir, members
        self.stream = stream or sys.stderr
        self.total = sum(m.epochs + 1 for m in members)
        self.log_every, self._last_log = log_every, time.monotonic()
        self._shown: dict[str, Any] = {}  # per member, what its last line said: "done", or the failure it reported
        # error.json files of an earlier run are not this run's failures: ignored until the member's retry clears
        # or rewrites them (a new file)
        self._stale = {m.relpath(): _failure_id(zoo_dir / m.relpath()) for m in members}
        self.bar = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="zoo", unit="epoch", dynamic_ncols=True, file=self.stream)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _refresh(self, final: bool = False) -> None:
        done = running = failed = epochs = 0
        current = ""
        for plan in self.members:
            path = self.zoo_dir / plan.relpath()
            if not layout.is_member_dir(path):
                continue
            info = layout.load_member(path)
            epochs += min(info.epochs_done, plan.epochs + 1)
            failure = _failure_id(path) if info.error else None
            # a cheap look (no weight headers read every refresh); `zoo status` does the full check
            if info.epochs_done > plan.epochs and set(info.planned_checkpoints) <= set(info.checkpoints):
                done += 1
                self._report(plan, "done", "done")
            elif failure is not None and failure != self._stale.get(plan.relpath()):
                failed += 1
                self._report(plan, failure, f"failed ({info.error[:100]})")
            elif info.results:
                running += 1
                current = f"{info.name} epoch {info.epochs_done - 1}/{plan.epochs}"
        left = len(self.members) - done - running - failed
        summary = f"done {done} running {running} failed {failed} left {left}"
        if self.bar is not None:
            self.bar.n = epochs
            self.bar.set_postfix_str(f"{summary} {current}"[:120], refresh=False)
            self.bar.refresh()
        elif final or time.monotonic() - self._last_log >= self.log_every:
            self._last_log = time.monotonic()
            print(f"zoo: {epochs}/{self.total} epochs, {summary}", file=self.stream, flush=True)

    def _report(self, plan: PlannedMember, state: Any, what: str) -> None:
        """A line when a member's state changes to done, or to a failure (each new failure once)."""
        if self.bar is None and self._shown.get(plan.relpath()) != state:
            self._shown[plan.relpath()] = state
            print(f"zoo: {what}: {plan.relpath()}", file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self._refresh()
            except (layout.LayoutError, OSError, ValueError):
                pass

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._refresh(final=True)
        finally:
            if self.bar is not None:
                self.bar.close()


def _failure_id(member_dir: Path) -> tuple[int, int] | None:
    """Which error.json a member holds (inode and time: each failure is a new file), None without one."""
    try:
        stat = (member_dir / layout.FAILURE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def say(message: str) -> None:
    """One line of `zoo generate`'s own, beside the progress (stderr)."""
    print(f"zoo: {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """45 s, 1 min 12 s, 2 h 5 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
