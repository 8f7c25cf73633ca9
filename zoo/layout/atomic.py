"""Atomic writes of files and folders (a temporary beside the target, fsynced, then one rename), the JSON helpers
of the layout, and the removal of what interrupted writes leave behind. Every change first passes `check_writer`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .locks import check_writer
from .names import LayoutError


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
    """Replace `path` with `data` in one rename of a fsynced temporary file beside it."""
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
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any, indent: int | None = 2) -> str:
    """JSON text of `obj`; numpy scalars, paths and enums become plain values, anything else its str."""
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
    """`atomic_write_text` of `to_json(obj)` and a final newline."""
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; LayoutError when it is missing or not JSON."""
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
