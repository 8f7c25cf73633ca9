"""What the publishing tests share: the repo they publish to, the files a zoo's model repo must hold, a card's
metadata, and a `zoo` command run in process with its output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from zoo import layout
from zoo.cli import main

REPO = "org/transformer-zoo"


def publishable_files(zoo: Path) -> dict[str, str]:
    """repo path -> sha256 of every file the model repo must hold (README aside), from the zoo itself."""
    out = {}
    for member in layout.scan_members(zoo):
        for epoch in member.checkpoints:
            folder = member.checkpoint_dir(epoch)
            for name in ("config.json", "model.safetensors", "preprocessor_config.json", "generation_config.json"):
                if (folder / name).is_file():
                    data = (folder / name).read_bytes()
                    out[f"{member.relpath}/{folder.name}/{name}"] = hashlib.sha256(data).hexdigest()
    return out


def card_metadata(text: str) -> dict:
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n")[1])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
