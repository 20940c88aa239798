"""`dsc score`: shards from AWS Batch's environment, --finalize, --workers, errors, progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dscloud.archive import Archive
from dscloud.cli import main


@pytest.fixture
def data(users: pd.DataFrame, write_files: Callable[..., Path]) -> Path:
    return write_files(users.head(1000), files=2)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, archive: Archive) -> pytest.MonkeyPatch:
    for key in ("AWS_BATCH_JOB_ARRAY_INDEX", "DSC_SHARD_COUNT", "DSC_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DSC_ARCHIVE", archive.uri)
    return monkeypatch


def test_array_job_children_take_their_shard_from_the_environment(
    data: Path, tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores"
    env.setenv("DSC_SHARD_COUNT", "2")

    # the second child finishes first: no _SUCCESS yet
    env.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")
    assert main(["score", "churn@production", "--input", str(data), "--output", str(out)]) == 0
    first = capsys.readouterr()
    assert "shard 1 of 2: 500 rows in, 500 scored, 0 rejected with churn@1" in first.out
    assert "not complete yet" in first.err
    assert not (out / "_SUCCESS").exists()

    env.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "0")
    assert main(["score", "churn@production", "--input", str(data), "--output", str(out)]) == 0
    assert "run complete" in capsys.readouterr().out
    assert json.loads((out / "_SUCCESS").read_text())["rows"]["out"] == 1000


def test_finalize_reports_missing_shards_then_writes_success(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores"
    args = ["score", "churn@production", "--input", str(data), "--output", str(out)]
    assert main([*args, "--shard-index", "0", "--shard-count", "3"]) == 0
    capsys.readouterr()

    assert main(["score", "--finalize", "--output", str(out), "--shard-count", "3"]) == 2
    assert "2 of 3 shards have not finished (no manifest for shard 1, 2)" in capsys.readouterr().err

    for i in (1, 2):
        assert main([*args, "--shard-index", str(i), "--shard-count", "3"]) == 0
    capsys.readouterr()
    assert main(["score", "--finalize", "--output", str(out), "--shard-count", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == {"in": 1000, "out": 1000, "rejected": 0}


def test_workers_run_all_shards_and_refuse_a_shard_index(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores"
    args = ["score", "churn@production", "--input", str(data), "--output", str(out)]

    assert main([*args, "--workers", "2", "--shard-index", "1"]) == 2
    assert "cannot be combined with --shard-index" in capsys.readouterr().err

    assert main([*args, "--workers", "2", "--key", "user_id", "plan"]) == 0
    assert "2 shards: 1,000 rows in" in capsys.readouterr().out
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert pd.read_parquet(out / parts[0]).columns[:2].tolist() == ["user_id", "plan"]


def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()

    code = main(
        [
            "score",
            "churn@production",
            "--input",
            str(tmp_path / "empty"),
            "--output",
            str(tmp_path / "o"),
        ]
    )

    assert code == 2
    assert "no data files found" in capsys.readouterr().err


def test_a_run_rejecting_too_many_rows_exits_non_zero(
    users: pd.DataFrame, tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a CSV whose every row has a word in a numeric column
    frame = users.head(40).astype({"tenure_months": object})
    frame["tenure_months"] = "twelve"
    frame.to_csv(tmp_path / "users.csv", index=False)
    out = tmp_path / "scores"
    args = ["score", "churn@production", "--input", str(tmp_path / "users.csv")]

    # when / then: the default share fails the run, with the reason on stderr
    assert main([*args, "--output", str(out)]) == 1
    assert "40 of 40 rows rejected" in capsys.readouterr().err
    assert not (out / "_SUCCESS").exists()
    assert json.loads((out / "_FAILED").read_text())["status"] == "failed"

    # the flag and the environment variable both set it; a share outside 0..1 is refused
    assert main([*args, "--output", str(out), "--max-rejected-share", "1"]) == 0
    env.setenv("DSC_MAX_REJECTED_SHARE", "1")
    assert main([*args, "--output", str(tmp_path / "other")]) == 0
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main([*args, "--output", str(out), "--max-rejected-share", "1.5"])
    assert refused.value.code == 2
    assert "expected a number in 0..1" in capsys.readouterr().err
