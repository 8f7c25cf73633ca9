"""A member's name and a kind's config defaults: shared by planning and by `zoo.runs` (no training imports)."""

from __future__ import annotations

from typing import Any

from zoo import kinds, layout


def kind_defaults(kind: kinds.MemberKind) -> dict[str, Any]:
    """Config defaults of a kind (under the config file): its name factors and any others it declares."""
    return {**kind.defaults, "name_factors": kind.default_name_factors()}


def member_name(kind: kinds.MemberKind, args) -> str:
    """The member's folder name, from its prefix and the values of its `name_factors` (`zoo.runs.member_name`)."""
    flat = args.flat()
    prefix = args.zoo.member_prefix or kind.default_prefix(args)
    return layout.member_name(prefix, {kinds.ALIASES.get(k, k): flat[k] for k in args.zoo.name_factors})
