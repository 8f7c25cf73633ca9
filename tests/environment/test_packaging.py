"""The packages a wheel ships: every package of zoo/ is listed in setup.cfg (an editable install would hide one
that is missing)."""

import configparser

from helpers.paths import ROOT


def test_every_package_of_zoo_is_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "zoo").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
    assert "zoo.hub_card" in listed and (ROOT / "hub_card").is_dir()
