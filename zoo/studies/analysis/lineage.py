"""Members as the report names and orders them: short ids (V1, V1.3, L2, ...), each member's parent and pretraining
mode, lineages (each parent followed by its finetuned children), and even samples of large groups."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from zoo import kinds, layout


def pretraining_mode(member: layout.MemberInfo, by_path: dict[str, layout.MemberInfo]) -> str:
    """The pretraining mode of a member's lineage: its own kind for pretraining members, the parent's for children."""
    if kinds.is_pretraining(member.stage):
        return str(member.config.get("kind") or "?")
    parent = member.parent or {}
    if parent.get("kind"):
        return str(parent["kind"])
    found = by_path.get(str(parent.get("path"))) or next(
        (m for m in by_path.values() if m.name == parent.get("member")), None)
    return str(found.config.get("kind")) if found else "?"


def parent_name(member: layout.MemberInfo) -> str | None:
    """The parent's zoo-relative path (or its recorded member name) of a finetuned member; None for the others."""
    parent = member.parent or {}
    return parent.get("path") or parent.get("member")


def member_ids(members: list[layout.MemberInfo]) -> dict[str, str]:
    """Short ids for figures, by relpath: pretraining members V1, V2, ... (L1, ... for language); a finetuned child
    its parent's id and its number among the siblings (V1.3); a child of an unknown parent Vf1, ..."""
    ids: dict[str, str] = {}
    counts: dict[str, int] = defaultdict(int)
    ordered = sorted(members, key=lambda m: (not kinds.is_pretraining(m.stage), m.relpath))
    by_name = {m.name: m.relpath for m in ordered if kinds.is_pretraining(m.stage)}
    for member in ordered:
        letter = member.modality[:1].upper()
        parent = parent_name(member)
        parent_id = ids.get(str(parent)) or ids.get(by_name.get(str((member.parent or {}).get("member")), ""))
        if kinds.is_pretraining(member.stage):
            prefix = letter
        elif parent_id:
            prefix = f"{parent_id}."
        else:
            prefix = f"{letter}f"
        counts[prefix] += 1
        ids[member.relpath] = f"{prefix}{counts[prefix]}"
    return ids


def _natural(text: str) -> list:
    """Sort key reading the numbers of a text as numbers: V2 before V10, V1 before V1.1 before V1.2."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _lineage_root(member: layout.MemberInfo, relpaths: set[str], by_name: dict[str, str]) -> str:
    """The relpath of the pretraining member a member descends from (its own for pretraining members); the parent's
    recorded name when the parent is not in the zoo."""
    if kinds.is_pretraining(member.stage):
        return member.relpath
    parent = member.parent or {}
    if str(parent.get("path")) in relpaths:
        return str(parent["path"])
    return by_name.get(str(parent.get("member")), f"?{parent_name(member)}")


def lineage_order(members: list[layout.MemberInfo], ids: dict[str, str] | None = None
                  ) -> tuple[list[layout.MemberInfo], list[int]]:
    """Members grouped by lineage, each parent before its children: per modality, pretraining members in the order
    of their ids (V1, V2, ..., V10), each followed by its finetuned children (V1.1, V1.2, ...); children whose parent
    is not in the zoo come last, grouped by parent. Returns (members, the index where each lineage starts)."""
    ids = ids if ids is not None else member_ids(members)
    relpaths = set(ids) | {m.relpath for m in members}
    by_name = {m.name: m.relpath for m in members if kinds.is_pretraining(m.stage)}
    roots = {m.relpath: _lineage_root(m, relpaths, by_name) for m in members}

    def key(member: layout.MemberInfo) -> tuple:
        root = roots[member.relpath]
        modality = kinds.MODALITIES.index(member.modality) if member.modality in kinds.MODALITIES else 99
        return (modality, root not in ids, _natural(ids.get(root, root)), root, member.relpath != root,
                _natural(ids.get(member.relpath, member.relpath)))

    ordered = sorted(members, key=key)
    starts = [i for i, m in enumerate(ordered) if not i or roots[m.relpath] != roots[ordered[i - 1].relpath]]
    return ordered, starts


def even_sample(members: list[layout.MemberInfo], cap: int | None) -> list[layout.MemberInfo]:
    """At most `cap` members, evenly spread along their sorted paths (so across parents), deterministic."""
    if cap is None or len(members) <= cap:
        return members
    ordered = sorted(members, key=lambda m: m.relpath)
    return [ordered[i] for i in np.linspace(0, len(ordered) - 1, cap).round().astype(int)]
