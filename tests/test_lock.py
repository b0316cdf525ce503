"""The locks (`make lock`) agree with pyproject.toml: every declared dependency is pinned at a version its
range admits, torch at the version constraints.txt pins and without a build label, and no CUDA package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"requirements.lock": [], "requirements-dev.lock": ["dev", "plot"]}


def pins(name: str) -> dict[str, Version]:
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def declared(extras: list[str]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    return reqs + [Requirement(r) for extra in extras for r in PROJECT["optional-dependencies"][extra]]


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_pins_every_declared_dependency_in_its_range(lock: str) -> None:
    pinned = pins(lock)
    for req in declared(LOCKS[lock]):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{lock} lacks {req.name}: run `make lock`"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{lock}: {name}=={pinned[name]} not {req}"


def test_the_dev_lock_agrees_with_the_service_lock() -> None:
    service, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {name: dev.get(name) for name in service} == service


@pytest.mark.parametrize("lock", LOCKS)
def test_torch_is_pinned_as_constraints_says_without_a_build(lock: str) -> None:
    (wanted,) = re.findall(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    torch = pins(lock)["torch"]
    assert torch == Version(wanted) and torch.local is None  # the build comes from TORCH_INDEX_URL
    text = (ROOT / lock).read_text()
    assert not re.search(r"^(nvidia-|triton)", text, re.M)  # a CPU resolution: no CUDA packages
    assert not re.search(r"file:/|^\S+ @ ", text, re.M)  # nothing that names a machine's paths
