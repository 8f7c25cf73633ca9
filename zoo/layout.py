"""The on-disk format of zoo members and zoos.

This module is the single owner of names, paths and file formats; every other part of `zoo`
reads and writes members through it. It imports nothing else of `zoo`.

A member::

    <member>/
      config.json          # MEMBER_FORMAT: factors, recipe, lineage, planned epochs and checkpoints
      result.json          # JSON lines, one per evaluated epoch (epoch 0 = the initialised model)
      error.json           # only while the member's last run failed
      checkpoint_000000/   # stock `save_pretrained` folders: config.json, model.safetensors, processor files
      checkpoint_000002/

A zoo::

    <zoo>/zoo.json                                            # the spec it was generated from, and its hash
    <zoo>/<modality>/pretraining/<member>/
    <zoo>/<modality>/finetuning/<pretrained member>/<member>/
    <zoo>/.trainer_state/...                                  # resumable Trainer state, never published
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEMBER_FORMAT = "transformer-zoo/member/v1"
ZOO_FORMAT = "transformer-zoo/zoo/v1"
MEMBER_CONFIG = "config.json"
RESULTS = "result.json"
FAILURE = "error.json"
ZOO_FILE = "zoo.json"
WEIGHTS = "model.safetensors"
TRAINER_STATE_DIR = ".trainer_state"
MODALITIES = ("vision", "language")
STAGES = ("pretraining", "finetuning")
STATES = ("complete", "incomplete", "failed", "pending")

_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d{6})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_UNSAFE_PREFIX = re.compile(r"[^A-Za-z0-9_.+-]+")


class LayoutError(ValueError):
    """A path or file that does not follow the zoo layout."""


# ---------------------------------------------------------------- names


def checkpoint_name(epoch: int) -> str:
    return f"checkpoint_{int(epoch):06d}"


def checkpoint_epoch(name: str) -> int | None:
    match = _CHECKPOINT_RE.match(name)
    return int(match.group(1)) if match else None


def format_value(value: Any) -> str:
    """A short, stable, filesystem-safe rendering of one factor value (0.0001 -> '0.0001', 3e-05 -> '3e-05')."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if text.endswith(".0"):
            text = text[:-2]
        return text
    return _UNSAFE.sub("-", str(value)).strip("-") or "none"


def member_name(prefix: str, factors: dict[str, Any]) -> str:
    """`sl_vit_tiny` + {seed: 42, lr: 0.001} -> `sl_vit_tiny_seed_42_lr_0.001`, in the order given."""
    parts = [_UNSAFE_PREFIX.sub("-", prefix).strip("-")]
    for key, value in factors.items():
        parts += [_UNSAFE.sub("-", str(key)), format_value(value)]
    return "_".join(parts)


def planned_checkpoints(epochs: int, every: int) -> list[int]:
    """Epochs that get a checkpoint: 0, every `every` epochs, and always the last."""
    if epochs < 0 or every < 1:
        raise LayoutError(f"epochs must be >= 0 and checkpoint_every >= 1, got {epochs} and {every}")
    return sorted({0, epochs, *range(every, epochs + 1, every)})


def zoo_stage_dir(zoo: str | Path, modality: str, stage: str, parent: str | None = None) -> Path:
    """The folder of a stage's members: `<zoo>/<modality>/<stage>/[<parent>/]`."""
    if modality not in MODALITIES:
        raise LayoutError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if stage not in STAGES:
        raise LayoutError(f"stage must be one of {STAGES}, got {stage!r}")
    base = Path(zoo) / modality / stage
    if stage == "finetuning":
        if not parent:
            raise LayoutError("finetuned members need their parent's name")
        base = base / parent
    return base


def zoo_member_dir(zoo: str | Path, modality: str, stage: str, name: str, parent: str | None = None) -> Path:
    return zoo_stage_dir(zoo, modality, stage, parent) / name


def zoo_root_of(member_dir: str | Path) -> Path | None:
    """The zoo folder (the nearest parent holding zoo.json) of a member folder, or None outside a zoo."""
    for folder in Path(member_dir).resolve().parents:
        if (folder / ZOO_FILE).is_file():
            return folder
    return None


def trainer_state_dir(root: str | Path, member_dir: str | Path) -> Path:
    """Where the Trainer's own resumable state of a member lives: outside the member folder."""
    root, member_dir = Path(root).resolve(), Path(member_dir).resolve()
    try:
        rel = member_dir.relative_to(root)
    except ValueError:
        rel = Path(member_dir.name)
    return root / TRAINER_STATE_DIR / rel


def remove_trainer_state(state_dir: str | Path) -> None:
    """Delete a member's Trainer state and the folders it leaves empty, up to and including `.trainer_state`."""
    check_writer()
    state_dir = Path(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    top = next((p for p in state_dir.parents if p.name == TRAINER_STATE_DIR), None)
    if top is None:
        return
    for folder in [p for p in state_dir.parents if p == top or top in p.parents]:
        try:
            folder.rmdir()  # only when empty: another member's state stays
        except OSError:
            break


# ---------------------------------------------------------------- atomic writes


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _respect_umask(path: str | Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700: give the file or folder the mode a plain open/mkdir would."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where the filesystem cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _respect_umask(tmp, is_dir=False)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        check_writer()  # the last moment before the file changes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=False, default=_json_default, allow_nan=True)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value"):  # enums
        return obj.value
    return str(obj)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LayoutError(f"{path}: not found") from None
    except json.JSONDecodeError as err:
        raise LayoutError(f"{path}: not valid JSON ({err})") from None


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_{final.name}.", dir=final.parent))
    try:
        _respect_umask(tmp, is_dir=True)
        yield tmp
        mask = current_umask()
        for item in tmp.rglob("*"):  # safetensors, for one, writes its files 0600
            if not item.is_symlink():
                os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)
        for item in tmp.iterdir():
            if item.is_file():
                with open(item, "rb") as handle:
                    os.fsync(handle.fileno())
        check_writer()  # the last moment before the folder changes
        if final.exists():
            trash = final.parent / f".old_{final.name}.{os.getpid()}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clean_temporaries(folder: str | Path) -> None:
    """Remove the leftovers of interrupted atomic writes in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    check_writer()
    for item in folder.iterdir():
        if item.name.startswith((".tmp_", ".old_")) or (item.name.startswith(".") and item.name.endswith(".tmp")):
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


# ---------------------------------------------------------------- members


def write_member_config(member_dir: str | Path, config: dict[str, Any]) -> None:
    config = {"format": MEMBER_FORMAT, **config}
    for key in ("name", "modality", "stage", "epochs", "checkpoints"):
        if key not in config:
            raise LayoutError(f"member config misses key {key!r}")
    atomic_write_json(Path(member_dir) / MEMBER_CONFIG, config)


def read_member_config(member_dir: str | Path) -> dict[str, Any]:
    path = Path(member_dir) / MEMBER_CONFIG
    config = read_json(path)
    if not isinstance(config, dict) or config.get("format") != MEMBER_FORMAT:
        raise LayoutError(f"{path}: not a zoo member config (no format {MEMBER_FORMAT!r})")
    return config


def is_member_dir(path: str | Path) -> bool:
    try:
        read_member_config(path)
        return True
    except LayoutError:
        return False


def write_checkpoint(member_dir: str | Path, epoch: int, save: Callable[[Path], None]) -> Path:
    """Call `save(tmp_folder)` and rename the folder to `checkpoint_<epoch>` once it is complete."""
    final = Path(member_dir) / checkpoint_name(epoch)
    with atomic_dir(final) as tmp:
        save(tmp)
        if not (tmp / WEIGHTS).is_file():
            raise LayoutError(f"checkpoint for epoch {epoch} wrote no {WEIGHTS}")
    return final


def read_results(member_dir: str | Path, lenient: bool = False) -> list[dict[str, Any]]:
    """The member's result lines; `lenient` skips unreadable lines instead of raising (see `result_problem`)."""
    return _read_results(member_dir, lenient)[0]


def _read_results(member_dir: str | Path, lenient: bool) -> tuple[list[dict[str, Any]], str | None]:
    path = Path(member_dir) / RESULTS
    if not path.is_file():
        return [], None
    rows, problem = [], None
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "epoch" not in row:
                raise json.JSONDecodeError("no epoch", line, 0)
            rows.append(row)
        except json.JSONDecodeError as err:
            if not lenient:
                raise LayoutError(f"{path}:{number}: not valid JSON ({err}); to repair it, delete that line (the "
                                  "member then reads as incomplete, and the next run trains it again from its last "
                                  f"saved state) or the member folder {path.parent}") from None
            problem = problem or f"{RESULTS} line {number} is not valid JSON (truncated?)"
    return rows, problem


def append_result(member_dir: str | Path, record: dict[str, Any]) -> None:
    """Add one epoch's line to result.json, replacing an earlier line of the same epoch (a resumed epoch)."""
    if "epoch" not in record:
        raise LayoutError("a result line needs an 'epoch'")
    rows = [row for row in read_results(member_dir) if row.get("epoch") != record["epoch"]]
    rows.append(record)
    rows.sort(key=lambda row: row["epoch"])
    atomic_write_text(Path(member_dir) / RESULTS, "".join(to_json(row, indent=None) + "\n" for row in rows))


def record_failure(member_dir: str | Path, error: str, **extra: Any) -> None:
    atomic_write_json(Path(member_dir) / FAILURE, {"error": error, **extra})


def clear_failure(member_dir: str | Path) -> None:
    check_writer()
    (Path(member_dir) / FAILURE).unlink(missing_ok=True)


def read_failure(member_dir: str | Path) -> str | None:
    path = Path(member_dir) / FAILURE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("error", "unknown error"))
    except (json.JSONDecodeError, AttributeError):
        return "unreadable error.json"


def list_checkpoints(member_dir: str | Path) -> list[int]:
    member_dir = Path(member_dir)
    if not member_dir.is_dir():
        return []
    epochs = [checkpoint_epoch(item.name) for item in member_dir.iterdir() if item.is_dir()]
    return sorted(epoch for epoch in epochs if epoch is not None)


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """Parse and check a safetensors file's header without loading any tensor."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise LayoutError(f"{path}: truncated safetensors file")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise LayoutError(f"{path}: truncated safetensors header")
        try:
            header = json.loads(handle.read(header_len))
        except json.JSONDecodeError:
            raise LayoutError(f"{path}: corrupt safetensors header") from None
    end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise LayoutError(f"{path}: size {size} does not match its header ({8 + header_len + end})")
    return header


def verify_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """None when the checkpoint folder is whole, else the reason it is not."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return f"{checkpoint_dir}: missing"
    try:
        config = read_json(checkpoint_dir / "config.json")
        if "model_type" not in config:
            return f"{checkpoint_dir / 'config.json'}: no model_type"
        read_safetensors_header(checkpoint_dir / WEIGHTS)
    except (LayoutError, OSError) as err:
        return str(err)
    return None


@dataclass
class MemberInfo:
    """A member as found on disk."""

    path: Path
    config: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    error: str | None = None
    relpath: str = ""
    unreadable: str | None = None  # lenient loading: what could not be read (the member is then not complete)

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def modality(self) -> str:
        return self.config["modality"]

    @property
    def stage(self) -> str:
        return self.config["stage"]

    @property
    def parent(self) -> dict[str, Any] | None:
        return self.config.get("parent")

    @property
    def factors(self) -> dict[str, Any]:
        return self.config.get("factors", {})

    @property
    def planned_epochs(self) -> int:
        return int(self.config["epochs"])

    @property
    def planned_checkpoints(self) -> list[int]:
        return [int(epoch) for epoch in self.config["checkpoints"]]

    @property
    def epochs_done(self) -> int:
        return max((int(row["epoch"]) + 1 for row in self.results), default=0)

    @property
    def last_result(self) -> dict[str, Any] | None:
        return self.results[-1] if self.results else None

    @property
    def metric(self) -> str:
        """The member's headline metric (a result.json key): `test_acc`, or `test_perplexity` for causal LMs."""
        return str(self.config.get("metric") or "test_acc")

    def final_metric(self) -> float | None:
        """The headline metric at the member's last evaluated epoch (None before any evaluation): the one
        definition used by status, analysis, soups and publishing."""
        value = (self.last_result or {}).get(self.metric)
        return None if value is None else float(value)

    def checkpoint_dir(self, epoch: int | str = "last") -> Path:
        if epoch == "last":
            if not self.checkpoints:
                raise LayoutError(f"{self.path}: has no checkpoint")
            epoch = self.checkpoints[-1]
        return self.path / checkpoint_name(int(epoch))

    @property
    def state(self) -> str:
        if self.is_complete():
            return "complete"
        if self.error:
            return "failed"
        return "incomplete" if (self.results or self.checkpoints) else "pending"

    def missing(self) -> list[str]:
        """What a complete member has and this one lacks (empty when complete)."""
        problems = [f"{self.path / self.unreadable}"] if self.unreadable else []
        epochs_with_results = {int(row["epoch"]) for row in self.results}
        for epoch in self.planned_checkpoints:
            reason = verify_checkpoint(self.path / checkpoint_name(epoch))
            if reason:
                problems.append(reason)
        for epoch in range(self.planned_epochs + 1):
            if epoch not in epochs_with_results:
                problems.append(f"{self.path / RESULTS}: no line for epoch {epoch}")
        for row in self.results:
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value) and key.endswith("loss"):
                    problems.append(f"{self.path / RESULTS}: {key} is {value} at epoch {row['epoch']}")
        return problems

    def is_complete(self) -> bool:
        return not self.missing()


def load_member(member_dir: str | Path, root: str | Path | None = None, lenient: bool = False) -> MemberInfo:
    """A member as found on disk; `lenient` keeps the readable result lines of a damaged result.json (the
    member then records what was unreadable and is not complete) instead of raising."""
    member_dir = Path(member_dir)
    results, unreadable = _read_results(member_dir, lenient)
    info = MemberInfo(
        path=member_dir,
        config=read_member_config(member_dir),
        results=results,
        checkpoints=list_checkpoints(member_dir),
        error=read_failure(member_dir),
        unreadable=unreadable,
    )
    if root is not None:
        info.relpath = member_dir.resolve().relative_to(Path(root).resolve()).as_posix()
    else:
        info.relpath = member_dir.name
    return info


def scan_members(root: str | Path, lenient: bool = False) -> list[MemberInfo]:
    """Every member under `root` (a zoo, or any folder of members), sorted by path; hidden folders skipped."""
    root = Path(root)
    found: list[MemberInfo] = []

    def walk(folder: Path) -> None:
        if is_member_dir(folder):
            found.append(load_member(folder, root, lenient))
        for child in sorted(folder.iterdir()) if folder.is_dir() else []:
            if child.is_dir() and not child.name.startswith(".") and checkpoint_epoch(child.name) is None:
                walk(child)

    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    walk(root)
    return found


def find_member(root: str | Path, name: str) -> MemberInfo:
    """The member called `name` under `root` (or at the path `name`)."""
    if is_member_dir(name):
        return load_member(name)
    matches = [member for member in scan_members(root) if member.name == name or member.relpath == name]
    if not matches:
        raise LayoutError(f"no member named {name!r} under {root}")
    if len(matches) > 1:
        raise LayoutError(f"{len(matches)} members named {name!r} under {root}; give its path: "
                          + ", ".join(m.relpath for m in matches))
    return matches[0]


def children_of(root: str | Path, parent: str) -> list[MemberInfo]:
    """The finetuned members whose parent member is `parent` (a name or a zoo-relative path)."""
    return [
        member for member in scan_members(root)
        if member.parent and parent in (member.parent.get("member"), member.parent.get("path"))
    ]


# ---------------------------------------------------------------- zoos


def write_zoo_file(zoo: str | Path, spec: dict[str, Any], spec_hash: str, **extra: Any) -> None:
    atomic_write_json(Path(zoo) / ZOO_FILE, {"format": ZOO_FORMAT, "spec_hash": spec_hash, "spec": spec, **extra})


def read_zoo_file(zoo: str | Path) -> dict[str, Any] | None:
    path = Path(zoo) / ZOO_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if data.get("format") != ZOO_FORMAT:
        raise LayoutError(f"{path}: not a zoo file (no format {ZOO_FORMAT!r})")
    return data


# ---------------------------------------------------------------- one writer per zoo
#
# `zoo generate` (the driver) holds an flock on `<zoo>/.zoo.lock`; its members are written by trial processes that
# Ray starts, on this machine or others. A trial must never write once its driver is gone: a SIGKILLed driver loses
# its flock at once, but Ray ends the driver's trials only 1 to 2.5 s later, and a new `zoo generate` of the same
# zoo could meanwhile take the lock and train the same members. Three things make that impossible:
#
# 1. The driver writes a random writer id into the lock file. Before every write of the zoo (each atomic rename of a
#    result.json, checkpoint, config or error.json, each Trainer state save, each removal) a trial checks that the
#    lock is still held (an flock test on the lock file fails) and still holds its driver's writer id; otherwise it
#    raises `WriterGone` and writes nothing. This works wherever the zoo folder is shared (a parent-death check by
#    pid would not see a driver on another node), and a lock file that is gone (released) fails the check too.
# 2. A watchdog thread in each trial makes the same check every 0.5 s and ends the trial process when it fails, so
#    orphaned trials stop within a second whatever they are doing (also in the Trainer's own state saves).
# 3. Each trial holds a shared flock on `<zoo>/.zoo.writers` for as long as it trains, and `ZooLock.acquire` takes
#    that file exclusively once (waiting for it) before it returns: a new writer of the zoo starts only when every
#    trial of earlier runs has ended, so even a write that passed its check just before the driver died cannot
#    land after the next writer started.

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
    the holder's trials check before every write (see above); `acquire` returns once no trial of an earlier run
    is left. The zoo folder is created when missing, and removed again on release if it is still empty.
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
        their driver; see above)."""
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
    """Before every write and removal in this module (a no-op outside a guarded trial): when the `zoo generate`
    this process writes for is gone, end the process (a trial's guard) or raise `WriterGone`."""
    guard = _GUARD
    if guard is not None and not lock_held_by(guard.zoo, guard.writer_id):
        if guard.watchdog:  # a trial: nothing is left for it to do, and ending frees `.zoo.writers` for the next run
            guard.end()
        raise WriterGone(f"the zoo generate that started this trial no longer holds {guard.zoo / LOCK_FILE}: "
                         "this trial writes nothing more")


class WriterGuard:
    """Held by a trial process while it writes the zoo for the driver `writer_id` holding the lock (see the comment
    above ZooLock): a shared flock on `.zoo.writers`, the check before every write, and a watchdog that ends the
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
