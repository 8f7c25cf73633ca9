"""`zoo env`: the pip requirements that rebuild the environment a member was trained in; and the check, run by
`zoo status`, that the running versions are the zoo's.

A zoo resumed under other versions still trains, but its members are no longer bit-reproducible: this module
says so, it never refuses.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from zoo import environment, layout


def recorded_environment(config: dict[str, Any]) -> dict[str, Any]:
    """The environment a member's config.json records: the full record, or the key versions of older members."""
    provenance = config.get("provenance") or {}
    if provenance.get("environment"):
        return provenance["environment"]
    versions = {**(config.get("versions") or {}), **(provenance.get("versions") or {})}
    python = versions.pop("python", None)
    return {"python": python, "packages": {environment.canonical(k): v for k, v in versions.items()}}


def _member_dir(path: Path) -> Path:
    """The member folder of a member or checkpoint path."""
    if layout.checkpoint_epoch(path.name) is not None:
        path = path.parent
    if not layout.is_member_dir(path):
        raise ValueError(f"{path}: not a member folder or a member's checkpoint folder (no member config.json)")
    return path


def requirements_text(member_path: str | Path) -> str:
    """pip requirements (with a header naming the member, Python and platform) that rebuild its environment."""
    member_dir = _member_dir(Path(member_path))
    config = layout.read_member_config(member_dir)
    record = recorded_environment(config)
    header = [f"# environment of {member_dir}",
              f"# Python {record.get('python') or 'unknown'}, {record.get('platform') or 'platform unknown'}"]
    if record.get("transformer-zoo"):
        header.append(f"# transformer-zoo {record['transformer-zoo']}")
    if "provenance" not in config or not (config.get("provenance") or {}).get("environment"):
        header.append("# only the key versions were recorded for this member")
    return "\n".join(header + environment.requirements_lines(record)) + "\n"


def version_drift(members: list[layout.MemberInfo]) -> str | None:
    """One line when the running versions differ from those the members were trained with, else None."""
    running = environment.installed_versions()
    drifted: Counter[str] = Counter()
    for member in members:
        recorded = recorded_environment(member.config).get("packages") or {}
        diffs = environment.differences(recorded, {k: running.get(k, "absent") for k in recorded})
        if diffs:
            drifted[", ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")] += 1
    if not drifted:
        return None
    change, count = drifted.most_common(1)[0]
    return (f"zoo: {sum(drifted.values())} of {len(members)} members were trained under other versions "
            f"({change}{' in ' + str(count) + ' of them' if len(drifted) > 1 else ''}); resumed or retrained "
            "members will not reproduce bit for bit (`zoo env <member>` prints the recorded requirements)")


def cli_env(args) -> int:
    sys.stdout.write(requirements_text(args.member))
    return 0
