"""requirements.lock (what `make install` installs) must satisfy pyproject.toml: every dependency and dev
dependency pinned, at a version its specifier allows, with hashes; and the lock closed under the declared
requirements of what it pins. Regenerate with `bash scripts/lock.sh` (see README, Dependencies)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**default_environment(), "extra": extra}) for extra in extras or {""})


def test_every_declared_dependency_is_pinned_within_its_specifier() -> None:
    pins = locked()
    assert len(pins) > 20
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: run `bash scripts/lock.sh`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement}: run `bash scripts/lock.sh`")


def test_every_pin_has_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 6)[-1])
    pinned = [b for b in blocks if PIN.match(b)]
    assert pinned and all("--hash=sha256:" in block for block in pinned)


def test_the_lock_is_closed_under_the_requirements_of_what_it_pins() -> None:
    """Walks from pyproject's requirements (with their extras) through the installed metadata of each locked
    package: every requirement met on this platform must be pinned, at an allowed version."""
    pins = locked()
    queue = [(r, set(r.extras)) for r in declared()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, extras = queue.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        assert name in pins, f"{name} (needed via {requirement}) is missing from requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its own requirements cannot be read
        if Version(distribution.version) != pins[name]:
            continue  # another version is installed here; its metadata says nothing about the pinned one
        for text in distribution.requires or []:
            child = Requirement(text)
            if _applies(child, extras):
                queue.append((child, set(child.extras)))
    assert len(seen) >= len(declared())
