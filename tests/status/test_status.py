"""`zoo status`: a state and a reason per member, damage kept to the member it is in, and a start that imports no
training library."""

import json
import os
import subprocess
import sys

from helpers.paths import ROOT
from helpers.zoo_factory import make_synthetic_zoo

from zoo import layout
from zoo.cli import main as zoo_main


def test_status_says_why_and_survives_a_truncated_result_line(tmp_path, capsys):
    members = make_synthetic_zoo(tmp_path / "zoo", junk=False, language=False)
    zoo_dir = tmp_path / "zoo"
    by_name = {m.name: m for m in members}
    truncated = by_name["vit_sup_seed_0_optim_adamw"].path / layout.checkpoint_name(2) / layout.WEIGHTS
    truncated.write_bytes(truncated.read_bytes()[:-100])
    no_config = by_name["vit_con_seed_1_optim_sgd"].path / layout.MEMBER_CONFIG
    no_config.unlink()
    bad_results = by_name["ft_seed_10"].path / layout.RESULTS
    bad_results.write_text(bad_results.read_text()[:-20])  # a line cut by a crash
    planned = [{"member": m.relpath, "stage": m.stage, "epochs": 2} for m in members]
    layout.write_zoo_file(zoo_dir, {"name": "t"}, "0" * 16, planned=planned)

    assert zoo_main(["status", str(zoo_dir), "--json"]) == 0
    rows = {row["member"].split("/")[-1]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert len(rows) == len(members)
    assert rows["vit_sup_seed_0_optim_adamw"]["state"] == "incomplete"
    assert rows["vit_sup_seed_0_optim_adamw"]["reason"].startswith("checkpoint_000002/model.safetensors: ")
    assert rows["vit_con_seed_1_optim_sgd"]["reason"] == "no config.json"
    assert rows["ft_seed_10"]["state"] == "incomplete" and "result.json line 3" in rows["ft_seed_10"]["reason"]
    assert rows["ft_seed_10"]["epochs_done"] == 1  # the readable lines still count
    assert rows["ft_seed_11"]["state"] == "complete" and rows["ft_seed_11"]["reason"] is None
    assert zoo_main(["status", str(zoo_dir)]) == 0
    table = capsys.readouterr().out
    assert "reason" in table.splitlines()[0] and "no config.json" in table


def test_status_imports_nothing_heavy():
    code = ("import sys, zoo.cli, zoo.status; "
            "print(sorted(m for m in ('torch', 'transformers', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"
