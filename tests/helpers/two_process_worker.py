"""Run by tests/training/test_distributed.py under `torchrun --nproc_per_node 2`: trains members one after the other
in the same process group, through `zoo.runs.recipe_main` (the body of every recipe script).

Usage: two_process_worker.py JOBS.json REPORT_DIR. Each job is {"kind", "argv", "nan_on_rank"?}; an argv item
"@last:<folder>" becomes the last checkpoint of the only member in <folder>. Each process writes
REPORT_DIR/rank<N>.json: per job its exit code or exception, and how often this process wrote a member's files.
"""

import faulthandler
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root: zoo

from zoo import layout  # noqa: E402
from zoo.runs import recipe_main  # noqa: E402
from zoo.training import Objective  # noqa: E402

writes: Counter = Counter()
JOB_DEADLINE_S = 240


def counting(name):
    original = getattr(layout, name)

    def wrapper(*args, **kwargs):
        writes[name] += 1
        return original(*args, **kwargs)

    setattr(layout, name, wrapper)


for _name in ("write_member_config", "append_result", "write_checkpoint", "record_failure"):
    counting(_name)


def poison_rank(rank: int) -> None:
    """Every objective's training loss becomes NaN in process `rank` only."""
    for cls in Objective.__subclasses__():
        original = cls.training_loss

        def training_loss(self, model, inputs, _original=original):
            loss, correct, count = _original(self, model, inputs)
            return (loss * math.nan, correct, count) if int(os.environ["RANK"]) == rank else (loss, correct, count)

        cls.training_loss = training_loss


def resolve(item: str) -> str:
    if item.startswith("@last:"):
        (member,) = layout.scan_members(item.removeprefix("@last:"))
        return str(member.checkpoint_dir())
    return item


def main() -> int:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    report = []
    for job in jobs:
        if "nan_on_rank" in job:
            poison_rank(job["nan_on_rank"])
        before, start = dict(writes), time.time()
        # a job that hangs (e.g. the ranks in different collectives) prints every thread's stack and ends the process
        faulthandler.dump_traceback_later(JOB_DEADLINE_S, exit=True)
        try:
            outcome = recipe_main(job["kind"], [resolve(item) for item in job["argv"]])
        except Exception as err:  # noqa: BLE001 - reported to the test
            outcome = f"{type(err).__name__}: {err}"
        faulthandler.cancel_dump_traceback_later()
        report.append({"outcome": outcome, "writes": {k: writes[k] - before.get(k, 0) for k in writes},
                       "seconds": round(time.time() - start, 1)})
    out = Path(sys.argv[2]) / f"rank{os.environ['RANK']}.json"
    out.write_text(json.dumps({"world_size": int(os.environ["WORLD_SIZE"]), "jobs": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
