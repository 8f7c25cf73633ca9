"""`<zoo>/zoo.json`: the spec a zoo was generated from, and its hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_write_json, read_json
from .names import ZOO_FILE, ZOO_FORMAT, LayoutError


def write_zoo_file(zoo: str | Path, spec: dict[str, Any], spec_hash: str, **extra: Any) -> None:
    """Write zoo.json: ZOO_FORMAT, the spec and its hash, and any further fields."""
    atomic_write_json(Path(zoo) / ZOO_FILE, {"format": ZOO_FORMAT, "spec_hash": spec_hash, "spec": spec, **extra})


def read_zoo_file(zoo: str | Path) -> dict[str, Any] | None:
    """The contents of zoo.json, None where the folder has none."""
    path = Path(zoo) / ZOO_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if data.get("format") != ZOO_FORMAT:
        raise LayoutError(f"{path}: not a zoo file (no format {ZOO_FORMAT!r})")
    return data

