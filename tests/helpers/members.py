"""What a test reads of the members it trained: the only member of a folder, a checkpoint's weights."""

from pathlib import Path

from safetensors.numpy import load_file

from zoo import layout


def only_member(folder: Path) -> layout.MemberInfo:
    members = layout.scan_members(folder)
    assert len(members) == 1, [m.relpath for m in members]
    return members[0]


def weights(checkpoint: Path) -> dict:
    return load_file(str(checkpoint / layout.WEIGHTS))
