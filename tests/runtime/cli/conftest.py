"""Factories for the command line's tests: `dsc` in-process on a fresh archive.

The command groups' tests also use the adapters' factories, imported from their folders.
"""

from __future__ import annotations

import pytest

from dscloud.cli import main
from tests.runtime.batch.conftest import users, write_files
from tests.runtime.stream.conftest import aws_env

__all__ = ["aws_env", "dsc", "two_versions", "users", "write_files"]


@pytest.fixture
def dsc(tmp_path, capsys):
    """Run `dsc --archive <tmp> ...` in-process; returns (exit code, stdout, stderr)."""
    archive = tmp_path / "archive"

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--archive", str(archive), *argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    run.archive = archive  # type: ignore[attr-defined]
    return run


@pytest.fixture
def two_versions(dsc):
    assert dsc("example", "train", "--seed", "1", "--rows", "1500")[0] == 0
    assert dsc("example", "train", "--seed", "2", "--rows", "1500", "--C", "0.1")[0] == 0
    return dsc
