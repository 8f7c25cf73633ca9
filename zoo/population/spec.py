"""Zoo specs: the YAML schema, reading and checking a spec into one `StagePlan` per stage section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from zoo import kinds, layout
from zoo.arguments import ConfigError, check_keys, load_yaml
from zoo.kinds.keys import check_keys_read
from zoo.population.grid import stage_points
from zoo.population.plans import StagePlan

SPEC_KEYS = {"name", "description", "license", "resources", *kinds.MODALITIES}
STAGE_KEYS = {"recipe", "config", "fixed", "grid", "groups", "from_checkpoint", "ranges", "optuna", "pack",
              "pack_mode"}
PACK_MODES = ("auto", "vmap", "loop")


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> tuple[dict[str, Any], list[StagePlan]]:
    """Read and check a zoo spec; expand every stage into its grid points (finetuning not yet per parent)."""
    path = Path(path)
    spec = load_yaml(path)
    for key in spec:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{path}: unknown spec key {key!r} (known: {', '.join(sorted(SPEC_KEYS))})")
    if not any(spec.get(m) for m in kinds.MODALITIES):
        raise ConfigError(f"{path}: the spec names no modality ({' or '.join(kinds.MODALITIES)})")
    stages = [plan for modality in kinds.MODALITIES
              for plan in _load_modality(path, modality, spec.get(modality) or {})]
    _check_parent_stages(path, stages)
    return spec, stages


def _load_modality(path: Path, modality: str, section: dict[str, Any]) -> list[StagePlan]:
    """The stage plans of one modality's section, in the order of `kinds.STAGES`."""
    for stage in section:
        if stage not in kinds.STAGES:
            raise ConfigError(f"{path}: {modality}.{stage} is not a stage ({', '.join(kinds.STAGES)})")
    stages: list[StagePlan] = []
    for stage in kinds.STAGES:
        # a stage is one section, or a list of sections of different kinds (GPT-2 beside BERT)
        sections = section.get(stage) or []
        sections = sections if isinstance(sections, list) else [sections]
        for number, stage_section in enumerate(sections):
            where = f"{path}: {modality}.{stage}" + (f"[{number}]" if len(sections) > 1 else "")
            stages.append(_load_stage(where, path, modality, stage, stage_section or {}))
    return stages


def _check_parent_stages(path: Path, stages: list[StagePlan]) -> None:
    """Every finetuning stage has a pretraining stage of its parent kind in the same modality."""
    pretraining_kinds = {(plan.modality, plan.kind) for plan in stages if kinds.is_pretraining(plan.stage)}
    for plan in stages:
        parent_kind = kinds.get(plan.kind).parent_kind
        if kinds.is_finetuning(plan.stage) and (plan.modality, parent_kind) not in pretraining_kinds:
            raise ConfigError(f"{path}: {plan.modality}.{plan.stage} ({plan.kind}) needs a {plan.modality}."
                              f"{kinds.PRETRAINING} stage of recipe {parent_kind!r}")


def _load_stage(where: str, path: Path, modality: str, stage: str, section: dict[str, Any]) -> StagePlan:
    """One stage section of a spec, checked: its kind, base config, grid points, and Optuna ranges."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: a stage must be a mapping (recipe, config, fixed, grid, ...)")
    for key in section:
        if key not in STAGE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(STAGE_KEYS))})")
    kind = section.get("recipe") or kinds.default_for(modality, stage).name
    fitting = [k.name for k in kinds.REGISTRY.values() if k.modality == modality and k.stage == stage]
    if kind not in fitting:
        raise ConfigError(f"{where}.recipe must be one of {', '.join(fitting)}, got {kind!r}")
    ranges, optuna_trials = _stage_ranges(where, section)
    check_keys_read(where, kinds.get(kind), section)
    pack, pack_mode = section.get("pack", 1), section.get("pack_mode", "auto")
    check_pack(f"{where}.pack", pack)
    if pack_mode not in PACK_MODES:
        raise ConfigError(f"{where}.pack_mode must be auto, vmap or loop, got {pack_mode!r}")
    return StagePlan(modality, stage, kind, _stage_base(where, path, section), stage_points(where, section),
                     _from_checkpoint(where, stage, section), ranges=ranges, optuna_trials=optuna_trials,
                     pack=pack, pack_mode=pack_mode, where=where)


def _from_checkpoint(where: str, stage: str, section: dict[str, Any]) -> Any:
    """The stage's `from_checkpoint` as given ('last' by default); `plan_members` checks it against the parents."""
    if "from_checkpoint" in section and not kinds.is_finetuning(stage):
        raise ConfigError(f"{where}.from_checkpoint: only a finetuning stage starts from a parent's checkpoint")
    value = section.get("from_checkpoint", "last")
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def check_pack(where: str, pack: Any) -> None:
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"{where} must be a whole number of members >= 1, got {pack!r}")


def override_pack(stages: list[StagePlan], pack: int | None) -> None:
    """`--pack K`: every stage trains K members at once (None: each stage keeps its own `pack`)."""
    if pack is None:
        return
    check_pack("--pack", pack)
    for plan in stages:
        plan.pack = pack


def _stage_base(where: str, path: Path, section: dict[str, Any]) -> dict[str, Any]:
    """The stage's base config: its config file (relative to the spec, or to the working folder) + `fixed`."""
    base: dict[str, Any] = {}
    if section.get("config"):
        config_path = Path(section["config"])
        if not config_path.is_absolute():
            candidates = [path.parent / config_path, Path.cwd() / config_path]
            config_path = next((c for c in candidates if c.is_file()), candidates[0])
        base = load_yaml(config_path)
        check_keys(base, str(config_path))
    fixed = section.get("fixed") or {}
    check_keys(fixed, f"{where}.fixed")
    return {**base, **fixed}


def _stage_ranges(where: str, section: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """Optuna: the ranges to sample from and how many members to sample."""
    ranges = section.get("ranges") or {}
    check_keys(ranges, f"{where}.ranges")
    for key, spec in ranges.items():
        if not isinstance(spec, dict) or not ({"choices"} <= set(spec) or {"low", "high"} <= set(spec)):
            raise ConfigError(f"{where}.ranges.{key} needs low and high (and optional log), or choices")
        if "choices" in spec and not spec["choices"]:
            raise ConfigError(f"{where}.ranges.{key}.choices is an empty list")
    optuna = section.get("optuna") or {}
    if optuna and not ranges:
        raise ConfigError(f"{where}.optuna needs ranges to sample from")
    if set(optuna) - {"n_trials"}:
        raise ConfigError(f"{where}.optuna: unknown key {sorted(set(optuna) - {'n_trials'})[0]!r} (known: n_trials)")
    return ranges, int(optuna.get("n_trials", 0))


def check_zoo_dir(zoo_dir: Path, spec: dict[str, Any]) -> None:
    """Refuse a zoo folder made from another spec, or a non-empty folder that holds no zoo."""
    existing = layout.read_zoo_file(zoo_dir)
    if existing is not None and existing["spec_hash"] != spec_hash(spec):
        raise ConfigError(f"--zoo-dir {zoo_dir} holds a zoo made from a different spec "
                          f"({existing['spec'].get('name', '?')!r}); use another folder")
    if existing is None and zoo_dir.is_dir() and any(p for p in zoo_dir.iterdir() if not p.name.startswith(".")):
        raise ConfigError(f"--zoo-dir {zoo_dir} is not empty and holds no zoo.json")
