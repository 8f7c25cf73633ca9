"""Training one member: `ZooTrainer` (a `transformers.Trainer`), the objectives and the `MemberWriter` callback.

An *objective* (`objectives`) holds what differs between member kinds: the training loss (with augmentation on the
batch), the evaluation step, and the metric names. The trainer (`trainer`) keeps per-epoch training sums on the
device (no host sync per step); the `MemberWriter` callback (`writer`) turns each evaluation into a `result.json`
line and, on planned epochs, an atomic `checkpoint_0000XY/` folder. `processes` joins a launcher's processes into
one group, `rng` saves and restores random states, `provenance` records where a member was trained.
"""

from zoo.training.metrics import accuracy_metrics
from zoo.training.objectives import (
    CausalLM,
    Contrastive,
    ImageClassification,
    MaskedLM,
    Objective,
    SequenceClassification,
    unwrap,
)
from zoo.training.processes import check_process_group, is_main_process, join_cpu_processes
from zoo.training.provenance import run_provenance
from zoo.training.resume import RESUME_WEIGHTS
from zoo.training.rng import isolated_rng, rng_state, set_rng_state
from zoo.training.trainer import ZooTrainer
from zoo.training.writer import MemberWriter, TrainingDiverged

__all__ = [
    "RESUME_WEIGHTS",
    "CausalLM",
    "Contrastive",
    "ImageClassification",
    "MaskedLM",
    "MemberWriter",
    "Objective",
    "SequenceClassification",
    "TrainingDiverged",
    "ZooTrainer",
    "accuracy_metrics",
    "check_process_group",
    "is_main_process",
    "isolated_rng",
    "join_cpu_processes",
    "rng_state",
    "run_provenance",
    "set_rng_state",
    "unwrap",
]
