"""The tested environment: the lock against setup.cfg, untested majors refused, a member's environment recorded,
printed by `zoo env` and compared by `zoo status`."""

import configparser
import json
from pathlib import Path

import pytest
import transformers
from helpers.paths import ROOT
from helpers.zoo_factory import write_member
from packaging.requirements import Requirement
from packaging.version import Version

from zoo import environment, layout
from zoo.cli import main as zoo_main


def _setup_requirements() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    lines += config["options.extras_require"]["dev"].strip().splitlines()
    return [Requirement(line) for line in lines if line.strip()]


@pytest.mark.parametrize("lock", ["cpu.lock", "cuda.lock"])
def test_each_lock_pins_every_requirement_inside_the_ranges_of_setup_cfg(lock):
    pins = environment.read_lock(str(ROOT / "requirements" / lock))
    for requirement in _setup_requirements():
        name = environment.canonical(requirement.name)
        assert name in pins, f"{lock} lacks {name}"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (lock, name, pins[name])
    assert pins["torch"].startswith("2.")
    assert pins["torch"].endswith("+cpu") == (lock == "cpu.lock")


def test_installed_versions_follow_requirements_to_the_bottom():
    versions = environment.installed_versions()
    assert versions["transformers"] == transformers.__version__
    assert "tokenizers" in versions and "filelock" in versions  # needed through transformers / huggingface_hub
    assert "pytest" not in versions  # a dev extra, not asked for
    assert "pytest" in environment.installed_versions(extras=("dev",))


def test_an_untested_major_version_is_refused_with_its_name(monkeypatch):
    monkeypatch.delenv(environment.ALLOW_UNTESTED, raising=False)
    environment.check_tested_majors()  # the running environment is a tested one
    monkeypatch.setitem(environment.TESTED_MAJORS, "transformers", (4,))
    with pytest.raises(environment.UntestedVersionError, match=rf"transformers {transformers.__version__} "
                                                                 r"\(tested: 4\.x\)"):
        environment.check_tested_majors()
    monkeypatch.setenv(environment.ALLOW_UNTESTED, "1")
    environment.check_tested_majors()


def _member_with_environment(root: Path, packages: dict[str, str]) -> layout.MemberInfo:
    member = write_member(root, "m1", "vit-supervised", {"seed": 1})
    config = layout.read_member_config(member.path)
    config["provenance"] = {"environment": {"python": "3.11.7", "platform": "linux-x86_64",
                                            "transformer-zoo": "0.1.0", "packages": packages}}
    layout.write_member_config(member.path, config)
    return member


def test_zoo_env_prints_the_requirements_that_rebuild_a_member(tmp_path, capsys):
    recorded = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "tokenizers": "0.23.3"}
    member = _member_with_environment(tmp_path / "zoo", recorded)
    for path in (member.path, member.path / layout.checkpoint_name(0)):
        assert zoo_main(["env", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert [line for line in out if not line.startswith("#")] == [
            "tokenizers==0.23.3", "torch==2.13.0+cpu", "transformers==5.24.0"]
        assert any("Python 3.11.7" in line for line in out)
    assert zoo_main(["env", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a member folder" in err[0]


def test_a_member_trained_now_records_the_full_environment():
    from transformers import TrainingArguments

    from zoo.training import run_provenance

    record = run_provenance(TrainingArguments(output_dir="unused", use_cpu=True))["environment"]
    assert record["packages"] == environment.installed_versions()
    json.dumps(record)  # it goes into config.json


def test_status_warns_once_when_the_running_versions_differ(tmp_path, capsys):
    running = environment.installed_versions()
    zoo = tmp_path / "zoo"
    _member_with_environment(zoo, {**running})
    assert zoo_main(["status", str(zoo)]) == 0
    assert "other versions" not in capsys.readouterr().err
    other = write_member(zoo, "m2", "vit-supervised", {"seed": 2})
    config = layout.read_member_config(other.path)
    config["provenance"] = {"environment": {"packages": {**running, "transformers": "4.0.0"}}}
    layout.write_member_config(other.path, config)
    capsys.readouterr()
    assert zoo_main(["status", str(zoo)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1
    assert err[0].startswith("zoo: 1 of 2 members were trained under other versions")
    assert f"transformers 4.0.0 -> {transformers.__version__}" in err[0]


def test_the_drift_report_names_what_differs_from_a_lock(tmp_path, capsys):
    lock = tmp_path / "x.lock"
    lock.write_text(f"# comment\ntransformers==0.0.1\n    # via x\ntorch=={environment.installed_versions()['torch']}\n"
                    "--find-links /nowhere\n")
    assert environment.main(["--against", str(lock)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"1 package(s) differ from {lock}:"
    assert out[1].strip() == f"transformers 0.0.1 -> {transformers.__version__}"
