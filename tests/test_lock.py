"""The lock files install exactly what pyproject.toml asks for, the image gets the versions the
tests ran with, and no pinned version is one with a known advisory."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)")


def pins(path: Path) -> dict[str, Version]:
    """{package: version} of a lock file; every pin must carry at least one hash."""
    text = path.read_text()
    found: dict[str, Version] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match is None:
            continue
        name = canonicalize_name(match.group(1).split("[")[0])
        assert "--hash=sha256:" in block, f"{path.name}: {name} has no hash"
        found[name] = Version(match.group(2))
    return found


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements.lock", ("dev", "postgres")), ("requirements-prod.lock", ("postgres",))],
)
def test_every_declared_dependency_is_pinned_within_its_range(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(ROOT / lock)
    for requirement in declared(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} does not pin {name}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )
    assert "setuptools" in pinned, "the build backend is installed from the lock too"


def test_the_image_gets_the_tested_versions() -> None:
    tested = pins(ROOT / "requirements.lock")
    image = pins(ROOT / "requirements-prod.lock")
    differing = {n: (v, tested.get(n)) for n, v in image.items() if tested.get(n) != v}
    assert not differing, f"requirements-prod.lock differs from requirements.lock: {differing}"
    assert "pytest" not in image


@pytest.mark.parametrize(
    ("package", "floor"),
    [("jinja2", "3.1.6"), ("h11", "0.16.0"), ("cryptography", "42.0.4"), ("starlette", "0.47.2")],
)
def test_no_version_with_a_known_advisory(package: str, floor: str) -> None:
    for lock in ("requirements.lock", "requirements-prod.lock"):
        assert pins(ROOT / lock)[package] >= Version(floor), (lock, package)


def test_the_installed_package_holds_every_module(tmp_path: Path) -> None:
    """A non-editable install (the Docker image) has every package of the tree, not only the
    ones an editable install happens to find."""
    import subprocess
    import sys
    import zipfile

    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("trialpath-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(path.relative_to(ROOT))
        for top in ("trialpath", "workflows", "activities")
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected - names == set()
    assert {"worker.py", "starter.py", "trialpath/journey.toml"} <= names
