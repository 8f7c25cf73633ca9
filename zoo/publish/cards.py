"""The cards of both repos (rendered from `hub_card/`) and the manifest."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from zoo import __version__, kinds, layout
from zoo.publish.columns import sort_label, text_value
from zoo.publish.common import MANIFEST_FORMAT, FileRecord
from zoo.publish.splits import SPLITS, ZooSplits
from zoo.publish.stage import ModelRepo, Placed, Selected

TEMPLATES = Path(__file__).resolve().parents[2] / "hub_card"  # the source tree; installed: zoo/hub_card
if not TEMPLATES.is_dir():
    TEMPLATES = Path(__file__).resolve().parents[1] / "hub_card"
DATASET_TEMPLATE = "dataset_card.md"
MODEL_TEMPLATE = "model_card.md"
DEFAULT_LICENSE = "apache-2.0"
LICENSE_NAMES = {"apache-2.0": "Apache License 2.0", "mit": "MIT License", "cc-by-4.0": "CC BY 4.0"}
MODEL_CARD_MAX_MEMBERS = 200


def _template(name: str) -> str:
    path = TEMPLATES / name
    if not path.is_file():
        raise ValueError(f"{path}: card template not found (hub_card/ of the transformer-zoo source tree)")
    return str(path)


def citation(repo_id: str, title: str) -> str:
    key = repo_id.replace("/", "-")
    return (f"@misc{{{key},\n  title = {{{{{title}}}: a transformer model zoo}},\n"
            f"  author = {{{repo_id.split('/')[0]}}},\n  howpublished = {{Hugging Face dataset {repo_id}}},\n"
            f"  note = {{Generated with transformer-zoo; in the spirit of model zoos and soups of transformer "
            f"models}}\n}}")


def _zoo_info(zoo_dir: Path) -> tuple[dict[str, Any], str | None]:
    try:
        data = layout.read_zoo_file(zoo_dir)
    except layout.LayoutError as err:
        raise ValueError(str(err)) from None
    if not data:
        return {}, None
    return data.get("spec") or {}, data.get("spec_hash")


def _grid(selected: list[Selected]) -> dict[str, list[str]]:
    values: dict[str, set[str]] = {}
    for item in selected:
        for key, value in item.member.factors.items():
            values.setdefault(str(key), set()).add(text_value(value) or "null")
    return {key: sorted(found, key=sort_label) for key, found in values.items()}


def _counts(selected: list[Selected]) -> list[dict[str, Any]]:
    counts = Counter((item.member.modality, item.member.stage, item.member.state) for item in selected)
    order = {name: pos for pos, name in enumerate(kinds.MODALITIES + kinds.STAGES + layout.STATES)}
    return [{"modality": m, "stage": s, "state": st, "count": n}
            for (m, s, st), n in sorted(counts.items(), key=lambda kv: tuple(order.get(k, 99) for k in kv[0]))]


def _table_docs(tables: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {"members": "member", "checkpoints": "checkpoint", "metrics": "member and epoch",
            "tensor_layouts": "tensor of a distinct tensor layout", "weights": "checkpoint",
            "weights_index": "tensor of a member"}
    return [{"name": name, "row": rows.get(name, "row"), "columns": [f"`{c}`" for c in schema]}
            for name, schema in tables.items()]


def _split_doc(selected: list[Selected], splits: ZooSplits) -> dict[str, Any]:
    """What the card says of the split: its settings, where it comes from, and the members in each split."""
    counts = Counter(splits.of(item.member) for item in selected)
    return {"seed": splits.seed, "split_by": splits.split_by, "from_file": splits.from_file,
            "fractions": "/".join(f"{100 * fraction:g}" for fraction in splits.fractions),
            "counts": [{"name": name, "members": counts.get(name, 0)} for name in SPLITS]}


def _config(name: str, files: dict[str, list[str]]) -> dict[str, Any]:
    """A config of the card's YAML: its parquet files per split (one path, or a list)."""
    data_files = [{"split": split, "path": paths if len(paths) > 1 else paths[0]} for split, paths in files.items()]
    return {"config_name": name, "data_files": data_files, **({"default": True} if name == "members" else {})}


def _example_kind(selected: list[Selected]) -> str:
    """The kind of the most members: the card's examples of the flat and layers formats select it."""
    counts = Counter(str(item.member.config.get("kind") or "") for item in selected)
    return counts.most_common(1)[0][0] if counts else ""


def render_dataset_card(*, repo_id: str, model_repos: list[str], title: str, description: str, license_id: str,
                        selected: list[Selected], table_files: dict[str, dict[str, list[str]]],
                        table_columns: dict[str, list[str]], spec_yaml: str, spec_hash: str | None,
                        plots: list[dict[str, Any]], splits: ZooSplits, with_weights: bool, branches: bool,
                        endpoint: str) -> str:
    """The dataset card; `table_files` gives each config's parquet files per split."""
    from huggingface_hub import DatasetCard, DatasetCardData

    configs = [_config(name, files) for name, files in table_files.items()]
    n_checkpoints = sum(len(item.epochs) for item in selected)
    card_data = DatasetCardData(
        license=license_id, pretty_name=title, tags=["model-zoo", "transformer-zoo", "weight-space-learning"],
        size_categories=[_size_category(len(selected))], configs=configs,
    )
    card = DatasetCard.from_template(
        card_data, template_path=_template(DATASET_TEMPLATE), title=title, description=description,
        repo_id=repo_id, model_repos=[{"id": rid, "url": f"{endpoint}/{rid}"} for rid in model_repos],
        branches=branches,
        n_members=len(selected), n_checkpoints=n_checkpoints, counts=_counts(selected),
        tables=_table_docs(table_columns), with_weights=with_weights, spec_yaml=spec_yaml, spec_hash=spec_hash,
        split=_split_doc(selected, splits), example_kind=_example_kind(selected),
        grid=_grid(selected), plots=[{"path": p["path"], "title": p["title"]} for p in plots],
        license_name=LICENSE_NAMES.get(license_id, license_id), citation=citation(repo_id, title),
    )
    return str(card).rstrip("\n") + "\n"


def render_model_card(*, repo_id: str, repo: ModelRepo, n_repos: int, title: str, license_id: str,
                      endpoint: str) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    # No `base_model`: the repo holds a whole population; a finetuned member's base is another subfolder of this
    # same repo, which the metadata field cannot express.
    card_data = ModelCardData(license=license_id, library_name="transformers", datasets=[repo_id],
                              tags=["model-zoo", "transformer-zoo"])
    last: dict[str, Placed] = {}
    epochs: dict[str, list[int]] = {}
    for cp in repo.checkpoints:
        last[cp.member.relpath] = cp
        epochs.setdefault(cp.member.relpath, []).append(cp.epoch)
    shown = [{"name": cp.member.name, "modality": cp.member.modality, "stage": cp.member.stage,
              "kind": cp.member.config.get("kind") or "", "epochs": epochs[rel], "last": cp.subfolder,
              "ref": cp.ref} for rel, cp in list(last.items())[:MODEL_CARD_MAX_MEMBERS]]
    card = ModelCard.from_template(
        card_data, template_path=_template(MODEL_TEMPLATE), title=title, repo_id=repo_id,
        model_repo_id=repo.repo_id, dataset_url=f"{endpoint}/datasets/{repo_id}", n_members=len(last),
        n_checkpoints=len(repo.checkpoints), members=shown, members_left_out=max(0, len(last) - len(shown)),
        n_repos=n_repos, branches=any(cp.ref for cp in repo.checkpoints),
        license_name=LICENSE_NAMES.get(license_id, license_id), citation=citation(repo_id, title),
    )
    return str(card).rstrip("\n") + "\n"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def zoo_card_info(zoo_dir: Path) -> dict[str, Any]:
    """Title, description, license, spec and spec hash of a zoo, from its zoo.json."""
    spec, spec_hash = _zoo_info(zoo_dir)
    return {"title": str(spec.get("name") or zoo_dir.resolve().name), "description": str(spec.get("description") or ""),
            "license_id": str(spec.get("license") or DEFAULT_LICENSE).lower(), "spec": spec, "spec_hash": spec_hash}


def build_manifest(*, repo_id: str, dataset_files: list[FileRecord], repos: list[ModelRepo],
                   repo_files: dict[str, list[FileRecord]], heads: dict[str, str],
                   ref_heads: dict[tuple[str, str], str], selected: list[Selected],
                   branch: str = "main") -> dict[str, Any]:
    """Every file of every repo (size, sha256, git blob id), every checkpoint's location, and every member's planned
    checkpoints, so `zoo verify` can tell missing, extra and altered checkpoints apart. Each model repo records the
    commit the tables pin (`revision`) and the branch it was published to (`branch`), whose head is what a reader
    gets without a revision."""
    return {
        "format": MANIFEST_FORMAT,
        "generator": f"transformer-zoo {__version__}",
        "dataset_repo": repo_id,
        "dataset_files": [record.as_dict() for record in sorted(dataset_files, key=lambda r: r.path)],
        "model_repos": [
            {"repo": repo.repo_id, "local_folder": repo.local_folder, "revision": heads[repo.repo_id], "branch": branch,
             "files": [record.as_dict() for record in sorted(repo_files[repo.repo_id], key=lambda r: r.path)]}
            for repo in repos
        ],
        "members": [{"member_path": item.relpath, "state": item.member.state,
                     "planned": item.member.planned_checkpoints} for item in selected],
        "checkpoints": [
            {"member_path": cp.member.relpath, "epoch": cp.epoch, "repo": cp.repo, "subfolder": cp.subfolder,
             "files": sorted(cp.records), **({"ref": cp.ref, "ref_commit": ref_heads[(cp.repo, cp.ref)]}
                                             if cp.ref else {})}
            for repo in repos for cp in repo.checkpoints
        ],
    }
