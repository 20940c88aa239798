"""A shard killed mid-write and re-run leaves exactly one complete part and no temporaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from dscloud.batch import ScoreJob, run_local, run_shard
from tests.runtime.batch.conftest import read_output

ROOT = Path(__file__).resolve().parents[3]


def start_shard(job: ScoreJob, patch: str) -> subprocess.Popen[bytes]:
    """Shard 0 of ``job`` in a child process, after running ``patch`` (a sabotage)."""
    code = textwrap.dedent(
        f"""
        import os, time
        from dscloud.batch import ScoreJob, run_shard
        from dscloud.batch import locations, writer
        {patch}
        run_shard(ScoreJob(**{asdict(job)!r}), 0)
        """
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


def published(output: Path) -> list[str]:
    return sorted(
        str(p.relative_to(output)) for p in output.rglob("*.parquet") if "_temporary" not in p.parts
    )


def temporaries(output: Path) -> list[Path]:
    return sorted((output / "_temporary").glob("*")) if (output / "_temporary").exists() else []


@pytest.fixture
def expected(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
) -> tuple[ScoreJob, pd.DataFrame]:
    """A 2-shard job over 3,000 rows, and what an uninterrupted run outputs."""
    data = write_files(users, files=2)
    clean = make_job(data, tmp_path / "clean", shard_count=2, keys=None)
    run_local(clean, workers=1)
    return make_job(data, tmp_path / "out", shard_count=2), read_output(clean.output)


def test_a_crash_after_the_temporary_write_publishes_nothing_and_a_rerun_recovers(
    expected: tuple[ScoreJob, pd.DataFrame],
) -> None:
    job, want = expected
    output = Path(job.output)

    # given shard 0 dies the moment it tries to publish its finished temporary part
    crash = start_shard(
        job,
        "locations.Location.publish = lambda self, temp, final: os._exit(9)",
    )
    assert crash.wait(timeout=120) == 9
    assert published(output) == []
    assert len(temporaries(output)) == 1

    # when both shards run (shard 0 again)
    run_shard(job, 0)
    run_shard(job, 1)

    # then
    assert published(output) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert temporaries(output) == []
    pd.testing.assert_frame_equal(read_output(output), want)


def test_a_shard_killed_mid_write_and_rerun_leaves_exactly_one_complete_part(
    expected: tuple[ScoreJob, pd.DataFrame],
) -> None:
    job, want = expected
    output = Path(job.output)

    # given shard 0 writes slowly, chunk by chunk, and is SIGKILLed once its part is open
    slow = start_shard(
        job,
        """
        _write = writer.PartWriter.write
        def write(self, table):
            _write(self, table)
            time.sleep(0.2)
        writer.PartWriter.write = write
        """,
    )
    deadline = time.monotonic() + 120
    while not temporaries(output) and slow.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.poll() is None, "the shard finished before it could be killed"
    os.kill(slow.pid, signal.SIGKILL)
    slow.wait(timeout=30)
    assert published(output) == []
    assert temporaries(output)

    # when
    run_shard(job, 0)
    run_shard(job, 1)

    # then
    assert published(output) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert temporaries(output) == []
    pd.testing.assert_frame_equal(read_output(output), want)
