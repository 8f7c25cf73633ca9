"""Model soups of zoo members: uniform and greedy soups of a parent's finetuned children, and epoch averaging.

- uniform: the parameter-wise mean of the ingredients' last checkpoints;
- greedy (Wortsman et al. 2022): ingredients sorted by validation accuracy, each added to the running average only
  when the soup's validation accuracy does not drop; test accuracy is reported, never used for choosing;
- epochs: the mean of one member's last K checkpoints.

Ingredients must share an architecture: the same weight names and shapes, head type and data set. Children of one
parent that differ (e.g. linear and MLP heads) are split into compatible groups and the LARGEST group is souped (ties:
the group holding the best single member by validation accuracy); the other members are listed in the record under
`excluded` with the reason, and a line on stderr says so.

A soup is a normal checkpoint folder (`config.json` and `model.safetensors` from `save_pretrained`, the processor or
tokenizer files of an ingredient) plus `soup.json`: method, ingredients (member relpaths and checkpoints), excluded
members, and validation and test metrics of the soup and of its ingredients.

`--out` is never a zoo member's folder or inside one, and an existing `--out` is replaced only when it holds an
earlier soup of the same command (method, zoo, parent or member, --last). Evaluation is `zoo.studies.evaluation`'s.
Zoos are read through `zoo.layout` only; weights are read with safetensors, never pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from zoo import architectures, layout
from zoo.studies.evaluation import (
    TaskCache,
    data_arguments,
    evaluate_members,
    evaluate_model,
    load_model,
    model_architecture,
)
from zoo.studies.weights import read_weights as read_weight_file

SOUP_FORMAT = "transformer-zoo/soup/v1"
SOUP_FILE = "soup.json"
_SKIP_COPY = {"config.json", layout.WEIGHTS, SOUP_FILE, "generation_config.json"}


class SoupError(ValueError):
    """Bad soup input: an unknown member, no compatible ingredients, too few checkpoints."""


# ---------------------------------------------------------------- weights


def read_weights(checkpoint: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (`zoo.studies.weights.read_weights`); a missing or damaged file is a SoupError."""
    try:
        return read_weight_file(checkpoint)
    except (layout.LayoutError, OSError) as err:
        raise SoupError(str(err)) from None


def average_weights(checkpoints: Iterable[str | Path]) -> dict[str, np.ndarray]:
    """The parameter-wise mean of the checkpoints, streamed (one checkpoint in memory besides the float64 sum);
    floating tensors are averaged, integer buffers taken from the first checkpoint."""
    total: dict[str, np.ndarray] = {}
    dtypes: dict[str, Any] = {}
    count = 0
    for checkpoint in checkpoints:
        weights = read_weights(checkpoint)
        if count and set(weights) != set(total):
            raise SoupError(f"{checkpoint}: its weight names differ from the other ingredients'")
        for key, value in weights.items():
            if not count:
                dtypes[key] = value.dtype
                total[key] = value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value.copy()
            elif np.issubdtype(dtypes[key], np.floating):
                if value.shape != total[key].shape:
                    raise SoupError(f"{checkpoint}: {key} has shape {value.shape}, other ingredients "
                                    f"{total[key].shape}")
                total[key] += value
        count += 1
    if not count:
        raise SoupError("no checkpoints to average")
    return {key: (value / count).astype(dtypes[key]) if np.issubdtype(dtypes[key], np.floating) else value
            for key, value in total.items()}


def weight_signature(checkpoint: str | Path) -> str:
    """A digest of what makes checkpoints averageable: weight names, shapes and dtypes, and the head type."""
    header = layout.read_safetensors_header(Path(checkpoint) / layout.WEIGHTS)
    shapes = sorted((key, tuple(info["shape"]), info["dtype"]) for key, info in header.items() if key != "__metadata__")
    config = layout.read_json(Path(checkpoint) / "config.json")
    head = config.get("zoo_head") or {}
    text = json.dumps([shapes, config.get("architectures"), head.get("type")], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- choosing ingredients


def _name(member: layout.MemberInfo) -> str:
    return member.relpath or member.name


def find(zoo_dir: str | Path, name: str, what: str) -> layout.MemberInfo:
    try:
        return layout.find_member(zoo_dir, name)
    except layout.LayoutError as err:
        raise SoupError(f"{what} {name!r}: {err}") from None


def children(zoo_dir: str | Path, parent: str) -> tuple[layout.MemberInfo, list[layout.MemberInfo]]:
    """The parent member and its finetuned children (by the parent's name or zoo-relative path)."""
    parent_member = find(zoo_dir, parent, "parent")
    found = {m.relpath: m for key in {parent, parent_member.name, parent_member.relpath}
             for m in layout.children_of(zoo_dir, key)}
    return parent_member, [found[key] for key in sorted(found)]


def compatible_groups(members: list[layout.MemberInfo], tasks: TaskCache | None = None
                      ) -> tuple[list[list[layout.MemberInfo]], list[dict[str, str]]]:
    """Complete members with checkpoints grouped by weight signature and data set, largest group first; and the
    members left out for having no usable checkpoint."""
    groups: dict[str, list[layout.MemberInfo]] = {}
    excluded = []
    for member in members:
        if member.state != "complete":
            excluded.append({"member": _name(member), "reason": f"{member.state}, not complete"})
            continue
        try:
            signature = weight_signature(member.checkpoint_dir())
            data = data_arguments(member).dataset
        except (layout.LayoutError, OSError) as err:
            excluded.append({"member": _name(member), "reason": f"unreadable checkpoint ({err})"})
            continue
        groups.setdefault(f"{signature}:{data}", []).append(member)
    ordered = sorted(groups.values(), key=lambda group: -len(group))
    return ordered, excluded


def _describe(member: layout.MemberInfo) -> str:
    head = (layout.read_json(member.checkpoint_dir() / "config.json").get("zoo_head") or {}).get("type", "?")
    return f"{model_architecture(member.checkpoint_dir())}, {head} head"


# ---------------------------------------------------------------- soups in memory


@dataclasses.dataclass
class Soup:
    method: str
    weights: dict[str, np.ndarray]
    template: Path
    ingredients: list[dict[str, Any]]
    metrics: dict[str, float]
    excluded: list[dict[str, str]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _ingredient(member: layout.MemberInfo, epoch: int, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    return {"member": _name(member), "name": member.name, "checkpoint": layout.checkpoint_name(epoch),
            **(metrics or {})}


def pick_group(members: list[layout.MemberInfo], what: str) -> tuple[list[layout.MemberInfo], list[dict[str, str]]]:
    """The largest compatible group of `members` (see the module docstring) and the members left out."""
    groups, excluded = compatible_groups(members)
    if not groups:
        raise SoupError(f"{what}: no complete member with a checkpoint to soup")
    chosen = groups[0]
    ties = [group for group in groups if len(group) == len(chosen)]
    if len(ties) > 1:  # prefer the group with the earliest-sorted path, stable and explainable
        chosen = min(ties, key=lambda group: min(m.relpath for m in group))
    for group in groups:
        if group is not chosen:
            for member in group:
                excluded.append({"member": _name(member), "reason": f"incompatible architecture ({_describe(member)}"
                                 f" vs the souped {_describe(chosen[0])})"})
    return chosen, excluded


def uniform_soup(members: list[layout.MemberInfo], tasks: TaskCache | None = None, batch_size: int = 256,
                 evaluate: bool = True, what: str = "soup") -> Soup:
    """The mean of the largest compatible group's last checkpoints."""
    chosen, excluded = pick_group(members, what)
    weights = average_weights(m.checkpoint_dir() for m in chosen)
    template = chosen[0].checkpoint_dir()
    metrics: dict[str, float] = {}
    ingredient_metrics: dict[str, dict[str, float]] = {}
    if evaluate and model_architecture(template) in architectures.CLASSIFIERS:
        tasks = tasks or TaskCache()
        ingredient_metrics = evaluate_members(chosen, tasks, batch_size)
        metrics = evaluate_model(load_model(template, weights), tasks.get(chosen[0]), batch_size=batch_size)
    ingredients = [_ingredient(m, m.checkpoints[-1], ingredient_metrics.get(m.relpath)) for m in chosen]
    return Soup("uniform", weights, template, ingredients, metrics, excluded)


def greedy_soup(members: list[layout.MemberInfo], tasks: TaskCache | None = None, batch_size: int = 256,
                what: str = "soup", uniform: bool = True) -> Soup:
    """Greedy soup on the validation split; test metrics are computed for the result, never used to choose."""
    chosen, excluded = pick_group(members, what)
    template = chosen[0].checkpoint_dir()
    if model_architecture(template) not in architectures.CLASSIFIERS:
        raise SoupError(f"{what}: greedy soups need classifiers, {_name(chosen[0])} is a "
                        f"{model_architecture(template)}")
    tasks = tasks or TaskCache()
    task = tasks.get(chosen[0])
    scores = evaluate_members(chosen, tasks, batch_size)
    order = sorted(chosen, key=lambda m: (-scores[m.relpath]["validation_acc"], scores[m.relpath]["validation_loss"],
                                          m.relpath))
    best = order[0]
    total = {k: v.astype(np.float64) for k, v in read_weights(best.checkpoint_dir()).items()}
    dtypes = {k: v.dtype for k, v in read_weights(best.checkpoint_dir()).items()}

    def mean_of(sums: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        return {k: (v / count).astype(dtypes[k]) for k, v in sums.items()}

    in_soup = [best]
    soup_val = scores[best.relpath]["validation_acc"]
    trail = [{"member": _name(best), "validation_acc": soup_val, "added": True}]
    for candidate in order[1:]:
        weights = read_weights(candidate.checkpoint_dir())
        trial = {k: total[k] + weights[k] for k in total}
        model = load_model(template, mean_of(trial, len(in_soup) + 1))
        val = evaluate_model(model, task, ("validation",), batch_size)["validation_acc"]
        del model
        added = val >= soup_val
        trail.append({"member": _name(candidate), "validation_acc": val, "added": added})
        if added:
            total, soup_val = trial, val
            in_soup.append(candidate)
    weights = mean_of(total, len(in_soup))
    metrics = evaluate_model(load_model(template, weights), task, batch_size=batch_size)
    ingredients = [_ingredient(m, m.checkpoints[-1], scores[m.relpath]) for m in in_soup]
    extra: dict[str, Any] = {
        "candidates": [_ingredient(m, m.checkpoints[-1], scores[m.relpath]) for m in order],
        "greedy_trail": trail,
        "best_ingredient": {"member": _name(best), **scores[best.relpath]},
    }
    if uniform and len(chosen) > 1:
        uniform_weights = average_weights(m.checkpoint_dir() for m in chosen)
        extra["uniform_soup"] = evaluate_model(load_model(template, uniform_weights), task, batch_size=batch_size)
    return Soup("greedy", weights, template, ingredients, metrics, excluded, extra)


def epoch_soup(member: layout.MemberInfo, last: int, tasks: TaskCache | None = None, batch_size: int = 256,
               evaluate: bool = True) -> Soup:
    """The mean of the member's last `last` checkpoints (all of them when it has fewer)."""
    if last < 1:
        raise SoupError(f"--last must be >= 1, got {last}")
    if not member.checkpoints:
        raise SoupError(f"member {_name(member)}: has no checkpoint")
    epochs = member.checkpoints[-last:]
    for epoch in epochs:
        problem = layout.verify_checkpoint(member.checkpoint_dir(epoch))
        if problem:
            raise SoupError(f"member {_name(member)}: {problem}")
    weights = average_weights(member.checkpoint_dir(epoch) for epoch in epochs)
    template = member.checkpoint_dir(epochs[-1])
    metrics: dict[str, float] = {}
    ingredient_metrics: dict[int, dict[str, float]] = {}
    if evaluate and model_architecture(template) in architectures.CLASSIFIERS:
        tasks = tasks or TaskCache()
        task = tasks.get(member, template)
        for epoch in epochs:
            ingredient_metrics[epoch] = evaluate_model(load_model(member.checkpoint_dir(epoch)), task,
                                                       batch_size=batch_size)
        metrics = evaluate_model(load_model(template, weights), task, batch_size=batch_size)
    ingredients = [_ingredient(member, epoch, ingredient_metrics.get(epoch)) for epoch in epochs]
    extra = {"requested_last": last, "used_last": len(epochs)}
    return Soup("epochs", weights, template, ingredients, metrics, extra=extra)


# ---------------------------------------------------------------- writing


def write_soup(soup: Soup, out: str | Path, **record: Any) -> Path:
    """Write `soup` as a loadable checkpoint folder with its soup.json; returns the folder."""
    import torch
    import transformers

    from zoo.models import save_pretrained

    out = Path(out)
    model = load_model(soup.template, soup.weights).to("cpu")
    with layout.atomic_dir(out) as tmp:
        save_pretrained(model, tmp)
        for item in soup.template.iterdir():
            if item.is_file() and item.name not in _SKIP_COPY and not item.name.startswith("."):
                shutil.copy2(item, tmp / item.name)
        layout.atomic_write_json(tmp / SOUP_FILE, {
            "format": SOUP_FORMAT,
            "method": soup.method,
            **record,
            "ingredients": soup.ingredients,
            "excluded": soup.excluded,
            **{key: value for key, value in soup.metrics.items()},
            **soup.extra,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        })
    return out


def read_soup(folder: str | Path) -> dict[str, Any]:
    return layout.read_json(Path(folder) / SOUP_FILE)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def check_out(out: str | Path, command: dict[str, Any]) -> None:
    """Refuse an --out inside a zoo member's folder, or an existing one that is not an earlier soup of `command`."""
    out = Path(out)
    resolved = out.resolve()
    for folder in (resolved, *resolved.parents):
        if layout.is_member_dir(folder):
            raise SoupError(f"--out {out}: inside the zoo member folder {folder}; write soups outside members")
    if out.exists() or out.is_symlink():
        try:
            earlier = read_soup(out).get("command") if out.is_dir() else None
        except layout.LayoutError:
            earlier = None
        if earlier != command:
            raise SoupError(f"--out {out}: exists and is not an earlier soup of this command; remove it or choose "
                            "another folder")


def _soup_of(args, zoo_dir: Path, tasks: TaskCache) -> tuple[Soup, dict[str, Any]]:
    """The soup the command line asks for, and the command's record; --out is checked before any work."""
    command: dict[str, Any] = {"method": args.method, "zoo": str(zoo_dir.resolve())}
    if args.method == "epochs":
        if not args.member:
            raise SoupError("--method epochs averages one member's checkpoints: give --member")
        member = find(zoo_dir, args.member, "member")
        command.update(member=_name(member), last=args.last)
        check_out(args.out, command)
        soup = epoch_soup(member, args.last, tasks, args.batch_size)
        if soup.extra["used_last"] < args.last:
            print(f"zoo soup: {member.name} has {soup.extra['used_last']} checkpoints; averaging all of them",
                  file=sys.stderr)
        return soup, command
    if not args.parent:
        raise SoupError(f"--method {args.method} soups the finetuned children of one parent: give --parent")
    parent, members = children(zoo_dir, args.parent)
    if not members:
        raise SoupError(f"parent {args.parent!r}: has no finetuned children under {zoo_dir}")
    command["parent"] = _name(parent)
    check_out(args.out, command)
    what = f"children of {parent.name}"
    soup = uniform_soup(members, tasks, args.batch_size, what=what) if args.method == "uniform" else \
        greedy_soup(members, tasks, args.batch_size, what=what)
    for item in soup.excluded:
        print(f"zoo soup: left out {item['member']}: {item['reason']}", file=sys.stderr)
    return soup, command


def cli_soup(args) -> int:
    zoo_dir = Path(args.zoo_dir)
    if not zoo_dir.is_dir():
        raise SoupError(f"{zoo_dir}: not a folder")
    soup, command = _soup_of(args, zoo_dir, TaskCache())
    record = {"zoo": str(zoo_dir), **{key: command[key] for key in ("parent", "member") if key in command},
              "command": command}
    folder = write_soup(soup, args.out, **record)
    print(f"{args.method} soup of {len(soup.ingredients)} ingredient(s) written to {folder}")
    for item in soup.ingredients:
        print(f"  {item['member']}/{item['checkpoint']}  val_acc {_fmt(item.get('validation_acc'))}  "
              f"test_acc {_fmt(item.get('test_acc'))}")
    if soup.metrics:
        print(f"  soup: val_acc {_fmt(soup.metrics.get('validation_acc'))}  test_acc "
              f"{_fmt(soup.metrics.get('test_acc'))}")
    if "best_ingredient" in soup.extra:
        print(f"  best ingredient test_acc {_fmt(soup.extra['best_ingredient'].get('test_acc'))}"
              + (f", uniform soup test_acc {_fmt(soup.extra['uniform_soup'].get('test_acc'))}"
                 if "uniform_soup" in soup.extra else ""))
    return 0
