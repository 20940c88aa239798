"""JSON Lines: what a typed, line-by-line format adds to the suite every format passes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dscloud.batch import ScoreJob, run_local
from dscloud.errors import DataError
from tests.runtime.batch.conftest import read_output, read_rejects


def _records(users: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in users.head(n).to_json(orient="records", lines=True).splitlines()
    ]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_a_word_among_numbers_is_one_rejected_row_not_a_failed_file(
    users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    # given numbers in tenure_months, one word among them, and a key missing in another
    records = _records(users, 300)
    records[7]["tenure_months"] = "abc"
    del records[9]["monthly_charges"]
    _write(tmp_path / "in" / "users.jsonl", [json.dumps(r) for r in records])
    typed = _write(
        tmp_path / "typed" / "users.jsonl", [json.dumps(r) for r in _records(users, 300)]
    )

    # when
    job = make_job(tmp_path / "in", shard_count=2)
    run_local(job, workers=1)
    out, rejects = read_output(job.output), read_rejects(job.output)
    reference = make_job(typed, tmp_path / "typed-out")
    run_local(reference, workers=1)

    # then the two rows are rejected with their reasons and the rest score as typed input
    reasons = dict(zip(rejects["source_row"], rejects["reason"], strict=True))
    assert sorted(reasons) == [7, 9]
    assert "'abc'" in reasons[7] and "'tenure_months'" in reasons[7]
    assert "column 'monthly_charges' is missing" in reasons[9]  # the core's JSON reason
    expected = read_output(reference.output)
    expected = expected[~expected["user_id"].isin(rejects["user_id"])].reset_index(drop=True)
    assert out["user_id"].tolist() == expected["user_id"].tolist()
    np.testing.assert_array_equal(out["probability_1"], expected["probability_1"])


def test_blank_lines_are_skipped_and_rows_count_records(
    users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    records = _records(users, 5)
    records[3]["plan"] = None
    lines = [json.dumps(r) for r in records]
    lines.insert(2, "")
    lines.insert(4, "   ")
    _write(tmp_path / "in" / "users.jsonl.gz", lines)

    job = make_job(tmp_path / "in")
    run_local(job, workers=1)

    assert read_output(job.output)["user_id"].tolist() == [
        r["user_id"] for i, r in enumerate(records) if i != 3
    ]
    assert read_rejects(job.output)["source_row"].tolist() == [3]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("{not json", "line 3 is not JSON"),
        ('["a", "list"]', "line 3 is a JSON list"),
    ],
)
def test_a_line_that_is_not_an_object_fails_the_file_naming_the_line(
    bad: str, says: str, users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    lines = [json.dumps(r) for r in _records(users, 4)]
    lines.insert(2, bad)
    path = _write(tmp_path / "in" / "users.ndjson", lines)

    with pytest.raises(DataError) as error:
        run_local(make_job(tmp_path / "in"), workers=1)

    assert says in str(error.value)
    assert str(path) in str(error.value)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_a_file_without_records_has_no_rows(
    users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    _write(tmp_path / "in" / "a.jsonl", [json.dumps(r) for r in _records(users, 3)])
    _write(tmp_path / "in" / "b.jsonl", ["", "  "])

    job = make_job(tmp_path / "in", shard_count=2)
    run_local(job, workers=1)

    assert len(read_output(job.output)) == 3
