"""A member's own files: config.json (its plan), result.json (one JSON line per evaluated epoch) and error.json
(its last run's failure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, atomic_write_text, read_json, to_json
from .locks import check_writer
from .names import FAILURE, MEMBER_CONFIG, MEMBER_FORMAT, RESULTS, LayoutError


def write_member_config(member_dir: str | Path, config: dict[str, Any]) -> None:
    """Write config.json, tagged with MEMBER_FORMAT; it must hold name, modality, stage, epochs and checkpoints."""
    config = {"format": MEMBER_FORMAT, **config}
    for key in ("name", "modality", "stage", "epochs", "checkpoints"):
        if key not in config:
            raise LayoutError(f"member config misses key {key!r}")
    atomic_write_json(Path(member_dir) / MEMBER_CONFIG, config)


def read_member_config(member_dir: str | Path) -> dict[str, Any]:
    """The member's config.json; LayoutError when missing, unreadable or not a member config."""
    path = Path(member_dir) / MEMBER_CONFIG
    config = read_json(path)
    if not isinstance(config, dict) or config.get("format") != MEMBER_FORMAT:
        raise LayoutError(f"{path}: not a zoo member config (no format {MEMBER_FORMAT!r})")
    return config


def is_member_dir(path: str | Path) -> bool:
    """Whether `path` holds a member config."""
    try:
        read_member_config(path)
        return True
    except LayoutError:
        return False


def read_results(member_dir: str | Path, lenient: bool = False) -> list[dict[str, Any]]:
    """The member's result lines; `lenient` skips unreadable lines instead of raising."""
    return read_results_and_problem(member_dir, lenient)[0]


def read_results_and_problem(member_dir: str | Path, lenient: bool) -> tuple[list[dict[str, Any]], str | None]:
    """The member's result lines, and a description of the first unreadable one (None when every line reads; a
    strict read raises on it instead)."""
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
    """Write error.json: the message of the member's failed run, and any details."""
    atomic_write_json(Path(member_dir) / FAILURE, {"error": error, **extra})


def clear_failure(member_dir: str | Path) -> None:
    """Remove error.json (a retry of the member starts)."""
    check_writer()
    (Path(member_dir) / FAILURE).unlink(missing_ok=True)


def read_failure(member_dir: str | Path) -> str | None:
    """The message in error.json, None when the member has none."""
    path = Path(member_dir) / FAILURE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("error", "unknown error"))
    except (json.JSONDecodeError, AttributeError):
        return "unreadable error.json"

