"""The software environment a member is trained in: recorded with every member, checked against what runs now.

A member reproduces bit for bit only under the versions it was trained with. Each member's config.json records
every installed distribution that transformer-zoo depends on, directly or not (`installed_versions`);
`zoo env <member>` prints them as pip requirements, and `zoo status` says when the running versions differ.

The library keeps version ranges (setup.cfg); the project's lock files (requirements/*.lock) pin what its tests
passed with. `check_tested_majors` refuses, at import of `zoo`, a major release of a core dependency that the
project has never been tested with (set ZOO_ALLOW_UNTESTED_VERSIONS=1 to try it anyway).
This module imports nothing else of `zoo`.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from typing import Any

DISTRIBUTION = "transformer-zoo"
ALLOW_UNTESTED = "ZOO_ALLOW_UNTESTED_VERSIONS"
# Major releases of the core dependencies that the test suite has passed with.
TESTED_MAJORS: dict[str, tuple[int, ...]] = {
    "torch": (2,),
    "transformers": (5,),
    "datasets": (4, 5),
    "huggingface_hub": (1, 2),
    "accelerate": (1,),
    "safetensors": (0,),
    "ray": (2,),
}
# The versions that decide a member's arithmetic, compared first when environments differ.
KEY_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "safetensors", "numpy")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


class UntestedVersionError(ImportError):
    """A core dependency at a major version the project has not been tested with."""


def canonical(name: str) -> str:
    """PEP 503 name: `Huggingface_Hub` and `huggingface-hub` are the same distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _major(version: str) -> int | None:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def untested_versions() -> list[str]:
    """`name version (tested: majors)` for each installed core dependency outside its tested majors."""
    found = []
    for name, majors in TESTED_MAJORS.items():
        version = _version(name)
        if version is not None and _major(version) not in majors:
            tested = " or ".join(f"{m}.x" for m in majors)
            found.append(f"{name} {version} (tested: {tested})")
    return found


def check_tested_majors() -> None:
    """Refuse untested major versions of the core dependencies, unless ZOO_ALLOW_UNTESTED_VERSIONS is set."""
    if os.environ.get(ALLOW_UNTESTED, "").lower() in ("1", "true", "yes"):
        return
    untested = untested_versions()
    if untested:
        raise UntestedVersionError(
            f"transformer-zoo has not been tested with {', '.join(untested)}; install the tested versions "
            f"(pip install -r requirements/cpu.lock, or the version ranges of setup.cfg) or set "
            f"{ALLOW_UNTESTED}=1 to run anyway")


def _requirement_names(requirement: str, extras: set[str]) -> tuple[str, set[str]] | None:
    """The distribution a requirement line names and the extras it asks for, when its marker applies."""
    spec, _, marker = requirement.partition(";")
    match = _NAME.match(spec)
    if match is None:
        return None
    if marker.strip() and not _marker_applies(marker, extras):
        return None
    asked = {e.strip() for e in (match.group(2) or "").strip("[]").split(",") if e.strip()}
    return match.group(1), asked


def _marker_applies(marker: str, extras: set[str]) -> bool:
    from packaging.markers import Marker

    marker_obj = Marker(marker)
    return any(marker_obj.evaluate({"extra": extra}) for extra in (extras or {""}))


def installed_versions(root: str = DISTRIBUTION, extras: tuple[str, ...] = ()) -> dict[str, str]:
    """Every installed distribution that `root` needs, directly or not, with its version (sorted by name)."""
    found: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, set(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, asked = todo.pop()
        key = (canonical(name), frozenset(asked))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if canonical(name) != canonical(root):
            found[canonical(dist.metadata["Name"])] = dist.version
        for requirement in dist.requires or []:
            parsed = _requirement_names(requirement, asked)
            if parsed is not None:
                todo.append(parsed)
    return dict(sorted(found.items()))


def environment_record() -> dict[str, Any]:
    """What a member records of the environment it was trained in."""
    return {"python": platform.python_version(), "platform": f"{platform.system().lower()}-{platform.machine()}",
            "transformer-zoo": _version(DISTRIBUTION), "packages": installed_versions()}


def requirements_lines(record: dict[str, Any]) -> list[str]:
    """pip requirement lines that rebuild a recorded environment."""
    return [f"{name}=={version}" for name, version in sorted(record.get("packages", {}).items())]


def differences(recorded: dict[str, str], running: dict[str, str]) -> list[str]:
    """`name recorded -> running` for each package whose version differs, the key packages first."""
    names = sorted(set(recorded) | set(running), key=lambda n: (n not in KEY_PACKAGES, n))
    return [f"{name} {recorded.get(name, 'absent')} -> {running.get(name, 'absent')}"
            for name in names if recorded.get(name) != running.get(name)]


def read_lock(path: str) -> dict[str, str]:
    """`name==version` pins of a lock file (comments, options and markers left out)."""
    pins = {}
    for line in open(path, encoding="utf-8"):
        spec = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in spec and not spec.startswith("-"):
            name, version = spec.split("==", 1)
            pins[canonical(name.split("[", 1)[0])] = version.strip()
    return pins


def main(argv: list[str] | None = None) -> int:
    """Print how the running environment differs from a lock file, and its untested major versions."""
    import argparse

    parser = argparse.ArgumentParser(prog="zoo.environment", description=main.__doc__)
    parser.add_argument("--against", required=True, help="lock file, e.g. requirements/cpu.lock")
    args = parser.parse_args(argv)
    locked = read_lock(args.against)
    running = installed_versions(extras=("dev",))
    diffs = differences(locked, {name: running.get(name, "absent") for name in locked})
    print(f"{len(diffs)} package(s) differ from {args.against}" + (":" if diffs else ""))
    for line in diffs:
        print(f"  {line}")
    for line in untested_versions():
        print(f"untested major version: {line}")
    return 0

