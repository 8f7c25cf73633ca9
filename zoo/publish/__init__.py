"""Publish a zoo to the Hugging Face Hub (or a local folder), and verify a published zoo.

`zoo publish ZOO --repo-id org/name` makes:

- the dataset repo `org/name`: parquet tables under `data/` (configs `members`, `checkpoints`, `metrics`, and with
  `--with-weights` `weights` and `weights_index`), declared in the card's YAML `configs:` so `load_dataset(repo, name)`
  works without a script; every member's split (train, validation or test: the zoo's `splits.json`, else the
  default assignment) is a column of `members` and a named split of `weights`; the card, performance plots under
  `plots/`, `spec.yaml` and `manifest.json` (size, sha256 and git blob id of every file of every repo, and every
  checkpoint's location);
- the model repo (`org/name-models` by default; `-00`, `-01`, ... when the zoo needs more than `--max-repo-files`):
  every published checkpoint folder at its member's zoo path (folders split into `shard_NNNN` folders past
  `--max-folder-entries`), so `from_pretrained(repo, subfolder=...)` loads it, and with `--branches` one branch per
  checkpoint whose root holds it alone, so `from_pretrained(repo, revision=...)` loads it too.

The `checkpoints` table gives each row's `model_repo`, `subfolder`, `subfolder_revision` and `revision`: nobody
computes a location. The model repos are pushed first and the tables name their commits, so they never point at
checkpoints that are not there yet. Pushes commit only what differs from what the target holds, at most
`--commit-files` files per commit, retry 429 and 5xx answers as `Retry-After` says, and can keep to a
`--request-budget`: an unchanged zoo makes no commit, and a rerun after a kill uploads only what had not landed.

With `--local-dir` the repos are written as folders (`dataset/`, `models/`, `models.refs/<branch>/`) into a partial
folder that replaces the old ones only once everything is written; the tables' `local_folder` column says which
folder holds a row's model repo, so `from_pretrained(<dir>/<local_folder>, subfolder=...)` loads it (see
docs/publishing.md). `zoo verify` checks the commits the tables pin and the heads a reader gets without a revision.

Modules: `stage` (what is published, and where), `splits` (each member's split), `columns` (typed parquet columns
and files), `tables`, `plots`, `cards` (cards and manifest), `push` (the local-folder and Hub targets behind one
interface, and `sync`), `budget` (the Hub request budget), `scratch` (the staging and partial folders, named after
host and pid), `publisher` (`publish`), `verify`.
"""

from zoo.publish.budget import RequestBudget
from zoo.publish.columns import typed_column, write_parquet
from zoo.publish.common import FileRecord, check_repo_id, default_model_repo_id
from zoo.publish.publisher import PublishReport, cli_publish, publish
from zoo.publish.push import HubTarget, LocalTarget, Target, sync
from zoo.publish.scratch import LocalPublish, remove_stale_staging
from zoo.publish.splits import ZooSplits, zoo_splits
from zoo.publish.stage import Selected, checkpoint_files, plan_layout, ref_name, select_members, shard_folders
from zoo.publish.tables import build_tables, num_parameters, write_weight_tables
from zoo.publish.verify import VerifyReport, cli_verify, verify

__all__ = [
    "FileRecord", "HubTarget", "LocalPublish", "LocalTarget", "PublishReport", "RequestBudget", "Selected", "Target",
    "VerifyReport", "ZooSplits", "build_tables", "check_repo_id", "checkpoint_files", "cli_publish", "cli_verify",
    "default_model_repo_id", "num_parameters", "plan_layout", "publish", "ref_name", "remove_stale_staging",
    "select_members", "shard_folders", "sync", "typed_column", "verify", "write_parquet", "write_weight_tables",
    "zoo_splits",
]
