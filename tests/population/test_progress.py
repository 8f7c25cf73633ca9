"""What a run prints: off a terminal, one line per member, not per refresh; an earlier run's failures are not this
run's; the demo ends with the status table `zoo generate` prints."""

import io

from helpers.paths import ROOT
from helpers.zoo_factory import make_synthetic_zoo

from zoo import layout


def test_progress_off_a_terminal_prints_a_line_per_member_not_per_refresh(tmp_path):
    from zoo.population import PlannedMember, Progress

    members = make_synthetic_zoo(tmp_path / "zoo", junk=False, language=False)
    plans = [PlannedMember(m.modality, m.stage, m.config["kind"], m.name, {},
                           m.parent["member"] if m.parent else None, 2) for m in members]
    stream = io.StringIO()
    progress = Progress(tmp_path / "zoo", plans, stream=stream, log_every=3600)
    for _ in range(20):
        progress._refresh()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"zoo: done: {plan.relpath()}" for plan in plans)
    progress._refresh(final=True)
    assert stream.getvalue().splitlines()[-1] == f"zoo: {3 * len(plans)}/{3 * len(plans)} epochs, done {len(plans)} " \
        "running 0 failed 0 left 0"


def test_progress_ignores_an_earlier_runs_failures_and_reports_this_runs(tmp_path):
    """A rerun after a failed run: the old error.json files are not reported (they stay until each member's retry
    starts); a member that now succeeds is reported done, one that fails again reports its new failure once."""
    from helpers.zoo_factory import write_member

    from zoo.population import PlannedMember, Progress

    zoo = tmp_path / "zoo"
    retried, failing = (write_member(zoo, name, "vit-supervised", {"seed": 1}, epochs_done=1) for name in "ab")
    for member in (retried, failing):
        layout.record_failure(member.path, "RuntimeError: the earlier run's")
    plans = [PlannedMember("vision", "pretraining", "vit-pretrain", name, {}, None, 2) for name in "ab"]
    stream = io.StringIO()
    progress = Progress(zoo, plans, stream=stream, log_every=3600)
    progress._refresh(final=True)
    assert stream.getvalue().splitlines() == ["zoo: 4/6 epochs, done 0 running 2 failed 0 left 0"]
    for member in (retried, failing):  # the retries start: prepare_member clears the old failure
        layout.clear_failure(member.path)
    progress._refresh()
    write_member(zoo, "a", "vit-supervised", {"seed": 1})  # the retry of a completes
    layout.record_failure(failing.path, "RuntimeError: this run's")
    for _ in range(3):
        progress._refresh()
    progress._refresh(final=True)
    assert stream.getvalue().splitlines()[1:] == [
        "zoo: done: vision/pretraining/a", "zoo: failed (RuntimeError: this run's): vision/pretraining/b",
        "zoo: 5/6 epochs, done 1 running 0 failed 1 left 0"]


def test_demo_prints_the_status_table_once():
    demo = (ROOT / "recipes" / "demo.sh").read_text()
    commands = [line for line in demo.splitlines() if line.strip() and not line.lstrip().startswith(("#", "echo"))]
    assert sum("zoo generate" in line for line in commands) == 1  # it ends with the table
    assert not any("zoo status" in line for line in commands)
