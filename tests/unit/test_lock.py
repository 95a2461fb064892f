"""The lock files (requirements/*.lock, written by `make lock`) agree with pyproject.toml, pin
exactly, keep out the compromised Lightning releases, and are what `make install` installed."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DEV_LOCK = ROOT / "requirements" / "dev.lock"
LAB_LOCK = ROOT / "requirements" / "notebooks.lock"
# GHSA-w37p-236h-pfx3: published compromised (a credential stealer that runs on import).
COMPROMISED = {"lightning": ["2.6.2", "2.6.3"], "pytorch-lightning": ["2.6.2", "2.6.3"]}


def read_lock(path: Path) -> dict[str, Version]:
    """{normalised name: pinned version}; every entry must be `name==version` with hashes."""
    text = path.read_text().replace("\\\n", " ")  # join the `\` continuations of the hashes
    pins: dict[str, Version] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()  # `--hash=sha256:...` holds no '#'
        if not line:
            continue
        spec, *options = line.split()
        assert options and all(o.startswith("--hash=sha256:") for o in options), raw[:120]
        req = Requirement(spec)
        (pin,) = req.specifier  # exactly one clause
        assert pin.operator == "==" and "*" not in pin.version, f"{path.name}: {spec}"
        assert req.url is None and not req.extras and req.marker is None, f"{path.name}: {spec}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}: {name} twice"
        pins[name] = Version(pin.version)
    return pins


def pyproject_requirements(*extras: str) -> list[Requirement]:
    """The project's dependencies and those of `extras`, following mnist_lab[x] self-references."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own, optional = canonicalize_name(project["name"]), project["optional-dependencies"]
    reqs, todo, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, optional[extra]):
            if canonicalize_name(r.name) == own:
                todo += sorted(r.extras)
            else:
                reqs.append(r)
    return reqs


@pytest.fixture(scope="module")
def dev_pins() -> dict[str, Version]:
    return read_lock(DEV_LOCK)


@pytest.fixture(scope="module")
def lab_pins() -> dict[str, Version]:
    return read_lock(LAB_LOCK)


@pytest.mark.parametrize(
    ("lock", "extras"), [(DEV_LOCK, ("dev",)), (LAB_LOCK, ("dev", "notebooks"))], ids=["dev", "lab"]
)
def test_the_lock_satisfies_pyproject(lock: Path, extras: tuple[str, ...]):
    """Edit a range in pyproject.toml without `make lock` and this fails."""
    pins = read_lock(lock)
    reqs = pyproject_requirements(*extras)
    assert {"torch", "lightning", "pytest", "mlflow", "pip-tools"} <= {
        canonicalize_name(r.name) for r in reqs
    }
    locked = {r: pins.get(canonicalize_name(r.name)) for r in reqs}
    wrong = [
        f"{r} (locked: {v or 'missing'})"
        for r, v in locked.items()
        if (r.marker is None or r.marker.evaluate())
        and (v is None or not r.specifier.contains(v, prereleases=True))
    ]
    assert not wrong, f"{lock.name} is out of date: run `make lock`. {wrong}"


def test_notebooks_lock_is_dev_lock_plus_jupyterlab(dev_pins, lab_pins):
    assert {n: lab_pins.get(n) for n in dev_pins} == dev_pins
    assert "jupyterlab" in lab_pins and "jupyterlab" not in dev_pins  # `make install` stays lean
    assert dev_pins["torch"] == Version("2.14.1") and dev_pins["torchvision"] == Version("0.29.1")
    assert {"pip", "setuptools"} <= dev_pins.keys()  # --allow-unsafe: the build tools too


def test_the_compromised_lightning_releases_are_excluded(dev_pins, lab_pins):
    deps = {canonicalize_name(r.name): r for r in pyproject_requirements()}
    for name, versions in COMPROMISED.items():
        assert name in deps, f"pyproject.toml must exclude {name} {versions} itself"
        spec: SpecifierSet = deps[name].specifier
        for v in versions:
            assert spec.contains(v, prereleases=True) is False, f"{name}{spec} admits {v}"
            assert dev_pins[name] != Version(v) and lab_pins[name] != Version(v)


def test_the_running_environment_is_the_locked_one(dev_pins):
    """`make install` installed the lock: every locked version is the installed one (pip and
    setuptools aside: upgrading pip in the venv is harmless)."""
    wrong = {}
    for name, pin in dev_pins.items():
        if name in ("pip", "setuptools"):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed == "missing" or Version(installed) != pin:
            wrong[name] = f"{installed} installed, {pin} locked"
    assert not wrong, f"run `make install` (it installs {DEV_LOCK.name}): {wrong}"
