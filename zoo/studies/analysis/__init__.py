"""Diversity and performance analysis of a zoo (`zoo analyze`).

`zoo analyze ZOO --out DIR` writes `DIR/report.md`, figures as `DIR/figures/*.png` and every number as
`DIR/tables/<name>.parquet` and `.csv`:

- members: one row per member (short id used in the figures, stage, kind, parent, pretraining mode, factors, final
  metric);
- curves: the members' result.json lines (learning curves, one panel per modality and stage);
- factor_summary: final metrics per modality, stage and kind (a supervised accuracy and a contrastive retrieval
  accuracy are never pooled), and per generating factor value;
- soups: per parent, test metrics of the best ingredient (by validation accuracy), the uniform soup, the greedy soup
  and the epoch-averaged best ingredient (soups computed in memory with `zoo.studies.soups`, not written);
- weight_pairs / weight_summary: pairwise L2 distance and cosine similarity of flattened shared weights, within and
  across parents, per pretraining mode (a Gram matrix built from slices of one parameter tensor at a time);
- layer_norms: per-layer weight norms at every checkpoint; distance_travelled: L2 distance of a finetuned member's
  backbone from its parent's checkpoint, per epoch;
- behaviour_pairs: pairwise prediction agreement and linear CKA of the last hidden representation (CLS token for ViT,
  last non-pad token for GPT-2) on the test split, per data set.

`--weights-only` keeps the sections that need no data and no model (performance from result.json, weight space):
for zoos of thousands of members. Pairwise metrics use at most `--max-members` members per group (an even sample
along the sorted member paths; `--weights-only` defaults to DEFAULT_WEIGHTS_ONLY_CAP); memory then holds the tables,
one tensor slice and the n x n matrices, whatever the zoo's size.

Weights are read with safetensors (never pickle); names are mapped so that a parent's keys (`encoder.*`, `h.*`)
match its children's (`vit.encoder.*`, `transformer.h.*`), see `zoo.studies.weights`.

Modules: `lineage` (short ids, parents, lineage order, samples), `tables` (the members, curves and factor-summary
tables), `report` (the report folder writer), `plots` (figure helpers), one module per section (`performance`,
`soup_comparison`, `weight_space`, `behaviour`) and `cli` (`analyze`, the sections in order).
"""

from zoo.studies.analysis.behaviour import behaviour_section, linear_cka
from zoo.studies.analysis.cli import DEFAULT_WEIGHTS_ONLY_CAP, AnalysisError, analyze, cli_analyze
from zoo.studies.analysis.lineage import even_sample, lineage_order, member_ids, parent_name, pretraining_mode
from zoo.studies.analysis.performance import performance_section
from zoo.studies.analysis.plots import JITTER, strip_box
from zoo.studies.analysis.report import MAX_NAME, Report, safe_name
from zoo.studies.analysis.soup_comparison import soups_section
from zoo.studies.analysis.tables import POOL_KEYS, curve_table, factor_summary, member_table
from zoo.studies.analysis.weight_space import checkpoint_norms, weight_section

__all__ = [
    "DEFAULT_WEIGHTS_ONLY_CAP", "JITTER", "MAX_NAME", "POOL_KEYS", "AnalysisError", "Report", "analyze",
    "behaviour_section", "checkpoint_norms", "cli_analyze", "curve_table", "even_sample", "factor_summary",
    "linear_cka", "lineage_order", "member_ids", "member_table", "parent_name", "performance_section",
    "pretraining_mode", "safe_name", "soups_section", "strip_box", "weight_section",
]
