"""Grid expansion: a stage's `grid`, or its `groups` of `fixed` values and grids, as one point per member."""

from __future__ import annotations

import itertools
from typing import Any

from zoo.arguments import ConfigError, check_keys

GROUP_KEYS = {"fixed", "grid"}


def grid_points(grid: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Every combination of the grid's values (a single value counts as a list of one)."""
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}.grid must map config keys to lists of values")
    keys = list(grid)
    values = []
    for key in keys:
        options = grid[key] if isinstance(grid[key], list) else [grid[key]]
        if not options:
            raise ConfigError(f"{where}.grid.{key} is an empty list")
        values.append(options)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else [{}]


def stage_points(where: str, section: dict[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """Per planned member: its values (group fixed + grid point) and its grid keys."""
    groups = section.get("groups")
    if groups is not None and "grid" in section:
        raise ConfigError(f"{where}: give either grid or groups, not both")
    if groups is None:
        if "grid" in section:
            groups = [{"grid": section["grid"]}]
        elif section.get("ranges"):
            groups = []  # members are sampled from the ranges, none planned
        else:
            raise ConfigError(f"{where}: needs a grid, groups, or ranges (with --optuna)")
    if not isinstance(groups, list) or (not groups and not section.get("ranges")):
        raise ConfigError(f"{where}.groups must be a non-empty list")
    points: list[tuple[dict[str, Any], list[str]]] = []
    for number, group in enumerate(groups):
        gwhere = f"{where}.groups[{number}]" if "groups" in section else where
        points += _group_points(gwhere, group)
    return points


def _group_points(where: str, group: dict[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """One group's points: its grid's combinations, each on top of the group's fixed values."""
    for key in group:
        if key not in GROUP_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: fixed, grid)")
    group_fixed = group.get("fixed") or {}
    check_keys(group_fixed, f"{where}.fixed")
    check_keys(group.get("grid") or {}, f"{where}.grid")
    if "grid" in group and not group["grid"]:
        raise ConfigError(f"{where}.grid is empty")
    return [({**group_fixed, **point}, list(point)) for point in grid_points(group.get("grid") or {}, where)]
