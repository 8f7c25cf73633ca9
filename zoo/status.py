"""`zoo status`: one row per member of a zoo, with its state and, when it is not complete, the reason why.

Reads the zoo folder only (zoo.json, member configs, result lines, safetensors headers): imports nothing heavy,
so it answers in a moment even for a large zoo. A damaged member is reported in its row; the others are still
listed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from zoo import layout
from zoo.reproduce import version_drift


def status_rows(zoo_dir: str | Path, members: list[layout.MemberInfo] | None = None) -> list[dict[str, Any]]:
    """One row per planned member (as recorded in zoo.json when generating) and per other member found on disk
    (`members`, when the caller has scanned them already)."""
    zoo_dir = Path(zoo_dir)
    zoo_file = layout.read_zoo_file(zoo_dir) or {}
    if members is None:
        members = layout.scan_members(zoo_dir, lenient=True) if zoo_dir.is_dir() else []
    found = {m.relpath: m for m in members}
    rows = [_row(zoo_dir, p["member"], p["stage"], found.pop(p["member"], None), p["epochs"])
            for p in zoo_file.get("planned", [])]
    rows += [_row(zoo_dir, relpath, member.stage, member, member.planned_epochs) for relpath, member in found.items()]
    return rows


def _short(problem: str, folder: Path) -> str:
    """A problem message with the member folder's path left out."""
    for prefix in (str(folder) + "/", str(folder.resolve()) + "/"):
        problem = problem.replace(prefix, "")
    return problem


def _missing_folder_reason(folder: Path) -> str | None:
    if not folder.is_dir():
        return None  # not started yet
    try:
        layout.read_member_config(folder)
    except layout.LayoutError as err:
        if not (folder / layout.MEMBER_CONFIG).is_file():
            return f"no {layout.MEMBER_CONFIG}"
        return _short(str(err), folder)
    return None


def _row(zoo_dir: Path, relpath: str, stage: str, member: layout.MemberInfo | None, epochs: int) -> dict[str, Any]:
    row = {"member": relpath, "stage": stage, "epochs_done": 0, "epochs": epochs, "metric": None, "value": None,
           "state": "pending", "error": None, "reason": None}
    if member is None:
        row["reason"] = _missing_folder_reason(zoo_dir / relpath)
        return row
    missing = member.missing()
    state = "complete" if not missing else "failed" if member.error else \
        "incomplete" if (member.results or member.checkpoints) else "pending"
    row.update(epochs_done=max(member.epochs_done - 1, 0), metric=member.metric, value=member.final_metric(),
               state=state, error=member.error)
    if member.error and state == "failed":
        row["reason"] = member.error
    elif missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        row["reason"] = _short(missing[0], member.path) + more
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["member", "stage", "epochs", "last test metric", "state", "reason"]
    lines = [header]
    for row in rows:
        value = row["value"]
        metric = "-" if value is None else f"{row['metric'].removeprefix('test_')} {value:.4g}"
        reason = (row.get("reason") or "")[:80]
        lines.append([row["member"], row["stage"], f"{row['epochs_done']}/{row['epochs']}", metric, row["state"],
                      reason])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    out.append(f"{len(rows)} members: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(out)


def cli_status(args) -> int:
    zoo_dir = Path(args.zoo_dir)
    if zoo_dir.exists() and not zoo_dir.is_dir():
        raise ValueError(f"{zoo_dir}: is a file, not a zoo folder")
    if not zoo_dir.is_dir():
        raise ValueError(f"{zoo_dir}: no such zoo folder")
    members = layout.scan_members(zoo_dir, lenient=True)
    rows = status_rows(zoo_dir, members)
    drift = version_drift(members)
    if drift:
        print(drift, file=sys.stderr)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 0
