"""Factories for the manual's tests: the README's quickstart, run once as a reader would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.pages import page


@dataclass(frozen=True)
class Quickstart:
    """What running the README's Python block left behind."""

    archive: Path
    env: dict[str, str]
    stdout: str


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Quickstart:
    """The README's Python block, run in a fresh directory with ``DSC_ARCHIVE`` set;
    fails the test when the block fails."""
    (block,) = page("README.md").fenced("python")
    work = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "DSC_ARCHIVE": str(work / "archive")}
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=work, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"the README's Python quickstart fails:\n{done.stderr}"
    return Quickstart(work / "archive", env, done.stdout)
