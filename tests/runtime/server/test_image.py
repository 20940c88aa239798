"""The serving image's requirements: installed alone into a fresh venv, they serve.

A dependency missing from docker/requirements-serving.txt fails here, not in a deployed
image. The same file pins the image's packages, and scikit-learn is not among them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from dscloud.archive import Archive
from tests.runtime.server.conftest import Server

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "docker" / "requirements-serving.txt"


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(ROOT / "runtime")], check=True, timeout=300)
    return venv


def test_requirements_are_pinned_and_without_scikit_learn() -> None:
    lines = [
        line.strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all("==" in line for line in lines)
    names = {line.split("==")[0].lower().replace("_", "-") for line in lines}
    assert {"onnxruntime", "starlette", "uvicorn", "orjson", "numpy"} <= names
    assert not names & {"scikit-learn", "skl2onnx", "pandas", "mlflow"}


@pytest.mark.slow
def test_server_runs_from_the_image_requirements_alone(
    image_venv: Path, archive: Archive, tmp_path: Path, churn_rows: list[dict[str, Any]]
) -> None:
    python = str(image_venv / "bin" / "python")
    # the venv holds no training libraries, and what it holds is consistent
    assert subprocess.run([python, "-c", "import sklearn"], capture_output=True).returncode != 0
    subprocess.run([python, "-m", "pip", "check"], check=True, capture_output=True)
    # when
    server = Server(archive, ["churn@production"], tmp_path / "log", python=python)
    try:
        ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        scored = httpx.post(
            f"{server.url}/invocations", json={"dataframe_records": churn_rows}, timeout=30
        )
    finally:
        server.stop()
    # then
    assert ready.status_code == 200
    assert scored.status_code == 200
    assert len(scored.json()["predictions"]) == len(churn_rows)
