"""Populations: a zoo spec (grids of generating factors) expanded into members and trained with Ray Tune.

Each stage of a modality is one `Trainer.hyperparameter_search(backend="ray")` call whose search space is a
`tune.grid_search` over the stage's planned members (a member = one point of the grid or of a group); finetuning
runs one search per complete pretrained parent. Members land in the zoo layout of `zoo.layout`; complete ones are
skipped, incomplete ones resume from their Trainer state, failed ones are recorded and retried on the next run.

Planning (`spec`, `grid`, `plans`, `planner`) imports no training stack. Running: `search` (the stage's
hyperparameter search), `trials` (what a trial runs), `ray_runtime`, `progress`, `generation` (the stages in
order) and `cli` (`zoo generate`).
"""

from zoo.kinds import kind_defaults, member_name
from zoo.kinds.keys import READ_BY, check_keys_read
from zoo.population.cli import INTERRUPTED, cli_generate
from zoo.population.generation import drop_finished_states, generate
from zoo.population.grid import GROUP_KEYS
from zoo.population.planner import DEVICE_KEYS, _Planner, _planner, plan_member, plan_members
from zoo.population.plans import PlannedMember, StagePlan
from zoo.population.progress import Progress, duration, say
from zoo.population.ray_runtime import RAY_DIED
from zoo.population.search import resume_epoch
from zoo.population.spec import SPEC_KEYS, STAGE_KEYS, check_pack, check_zoo_dir, load_spec, override_pack, spec_hash

__all__ = [
    "DEVICE_KEYS", "GROUP_KEYS", "INTERRUPTED", "RAY_DIED", "READ_BY", "SPEC_KEYS", "STAGE_KEYS", "PlannedMember",
    "Progress", "StagePlan", "_Planner", "_planner", "check_keys_read", "check_pack", "check_zoo_dir", "cli_generate",
    "drop_finished_states", "duration", "generate", "kind_defaults", "load_spec", "member_name", "override_pack",
    "plan_member", "plan_members", "resume_epoch", "say", "spec_hash",
]
