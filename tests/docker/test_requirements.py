"""Every requirements file under docker/ is complete, exact and locked.

An image installs exactly what its file pins: a distribution pip would pull in that the
file does not pin (``cloudpickle`` for the batch image's ``joblib``, once) would be whatever
the index served on the day of the build. Two checks:

- offline, always: each file is exact pins only, and its committed ``.lock`` (hashes, made
  by ``docker/lock.py``) pins the same versions;
- with the fetched wheels (``make images-test``): pip resolves the file plus the runtime's
  extras for that image from ``wheels/`` alone, and everything it would install is pinned.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
WHEELS = ROOT / "wheels"

#: Each requirements file and the runtime extras the image installs on top of it.
EXTRAS = {
    "requirements-serving.txt": "serve",
    "requirements-batch.txt": "batch,export",
    "requirements-lambda.txt": "stream",
    "requirements-lambda-image.txt": "stream",
    "requirements-build.txt": None,
}


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docker_lock", DOCKER / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def test_every_requirements_file_is_checked() -> None:
    assert {p.name for p in DOCKER.glob("requirements-*.txt")} == set(EXTRAS)


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_requirements_are_exact_pins(name: str) -> None:
    pins = lock.pins(DOCKER / name)
    assert pins, f"{name} pins nothing"


def test_a_range_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "requirements-x.txt"
    bad.write_text("numpy==2.4.6\nboto3>=1.34\n")
    with pytest.raises(ValueError, match=r"requirements-x.txt:2: 'boto3>=1.34' is not an exact"):
        lock.pins(bad)


@pytest.mark.parametrize("name", lock.IMAGE_REQUIREMENTS)
def test_lock_pins_what_the_file_pins(name: str) -> None:
    # given
    requirements = DOCKER / name
    locked = requirements.with_suffix(".lock")
    # then: same names and versions, and a sha256 for each
    assert lock.pins(locked) == lock.pins(requirements), (
        f"{locked.name} is stale: run .venv/bin/python docker/lock.py"
    )
    text = locked.read_text()
    assert text.count("--hash=sha256:") == len(lock.pins(requirements))


def unpinned(requirements: Path, extras: str | None) -> tuple[dict[str, str], set[str]]:
    """Resolve ``requirements`` (and ``./runtime[extras]``) from ``wheels/`` alone, as the
    image build does; returns what pip would install that the file does not pin
    (name -> version), and what the file pins that pip would not install."""
    assert sys.version_info[:2] == (3, 11), "the images run Python 3.11; resolve with it"
    report = Path(tempfile.mkdtemp()) / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--no-index", "--find-links", str(WHEELS), "--report", str(report)]
    command += ["-r", str(requirements)]
    if extras:
        command.append(f"{ROOT / 'runtime'}[{extras}]")
    # the machine's pip settings (extra indexes, constraints) must not take part
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"pip cannot resolve {requirements.name}:\n{result.stderr}")
    installs = json.loads(report.read_text())["install"]
    shutil.rmtree(report.parent)
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in installs
    }
    resolved.pop("dscloud", None)
    pins = lock.pins(requirements)
    extra = {name: version for name, version in resolved.items() if pins.get(name) != version}
    return extra, set(pins) - set(resolved)


@pytest.fixture(scope="module")
def wheels() -> Path:
    if not any(WHEELS.glob("setuptools-*.whl")):
        pytest.fail("wheels/ is empty: run docker/fetch-wheels.sh (make images does)")
    return WHEELS


@pytest.mark.images
@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_pip_installs_only_what_the_file_pins(wheels: Path, name: str) -> None:
    # when
    extra, unused = unpinned(DOCKER / name, EXTRAS[name])
    # then
    assert extra == {}, f"{name}: pip also installs {extra}; pin them"
    assert unused == set(), f"{name}: pins {sorted(unused)} that nothing requires"


@pytest.mark.images
def test_an_unpinned_dependency_fails_the_check(wheels: Path, tmp_path: Path) -> None:
    # given: the batch file as it was, without cloudpickle (joblib requires it)
    text = (DOCKER / "requirements-batch.txt").read_text()
    broken = tmp_path / "requirements-batch.txt"
    broken.write_text("".join(line for line in text.splitlines(True) if "cloudpickle" not in line))
    # when
    extra, _ = unpinned(broken, EXTRAS["requirements-batch.txt"])
    # then
    assert set(extra) == {"cloudpickle"}
