"""`zoo analyze`: the report of a zoo, its sections in order (performance, soups, weight space, behaviour)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from zoo import layout
from zoo.studies.analysis.behaviour import behaviour_section
from zoo.studies.analysis.lineage import lineage_order, member_ids
from zoo.studies.analysis.performance import performance_section
from zoo.studies.analysis.report import Report
from zoo.studies.analysis.soup_comparison import soups_section
from zoo.studies.analysis.weight_space import weight_section
from zoo.studies.evaluation import TaskCache

DEFAULT_WEIGHTS_ONLY_CAP = 128


class AnalysisError(ValueError):
    """Bad analysis input: not a zoo, an empty zoo."""


def _members_of(zoo_dir: Path, max_members: int | None) -> list[layout.MemberInfo]:
    if not zoo_dir.is_dir():
        raise AnalysisError(f"{zoo_dir}: not a folder" if zoo_dir.exists() else f"{zoo_dir}: not found")
    if max_members is not None and max_members < 2:
        raise AnalysisError(f"--max-members must be at least 2, got {max_members}")
    members = layout.scan_members(zoo_dir)
    if not members:
        raise AnalysisError(f"{zoo_dir}: no zoo members found")
    return members


def _header(report: Report, zoo_dir: Path, members: list[layout.MemberInfo], max_members: int | None,
            weights_only: bool) -> None:
    """The report's title and its line on the zoo: members per state, the pairwise cap, weights only."""
    name = ((layout.read_zoo_file(zoo_dir) or {}).get("spec") or {}).get("name") or zoo_dir.name
    states = Counter(member.state for member in members)
    report.md(f"# Zoo report: {name}\n")
    report.md(f"Zoo `{zoo_dir}`: {len(members)} members (" + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
              + ")." + (f" Pairwise metrics use at most {max_members} members per group." if max_members else "")
              + (" Weights only: no soups, no behaviour (nothing evaluated)." if weights_only else "") + "\n")


def analyze(zoo_dir: str | Path, out: str | Path, max_members: int | None = None, batch_size: int = 256,
            weights_only: bool = False) -> Path:
    """Write the report of the zoo at `zoo_dir` to `out`; returns the path of report.md. `weights_only` skips what
    needs data or models (soups, behaviour) and caps pairwise metrics at DEFAULT_WEIGHTS_ONLY_CAP members unless
    `max_members` says otherwise."""
    zoo_dir, out = Path(zoo_dir), Path(out)
    members = _members_of(zoo_dir, max_members)
    if weights_only and max_members is None:
        max_members = DEFAULT_WEIGHTS_ONLY_CAP
    report = Report(out)
    _header(report, zoo_dir, members, max_members, weights_only)
    ids = member_ids(members)
    members = lineage_order(members, ids)[0]  # tables and figures list each parent before its children
    complete = [m for m in members if m.state == "complete"]
    tasks = TaskCache()
    performance_section(report, members)
    if not weights_only:
        soups_section(report, complete, tasks, batch_size, ids)
    weight_section(report, complete, max_members, ids)
    if not weights_only:
        behaviour_section(report, complete, tasks, max_members, batch_size, ids)
    return report.write()


def cli_analyze(args) -> int:
    path = analyze(args.zoo_dir, args.out, args.max_members, args.batch_size, args.weights_only)
    print(f"report written to {path}")
    return 0
