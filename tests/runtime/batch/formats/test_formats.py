"""Every registered input format reads the same rows into the same predictions and rejects.

Each test runs once per format in the registry, against the same data written by that
format's writer (``conftest.WRITERS``): what one format promises, all of them do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dscloud.batch import ScoreJob, formats, run_local
from dscloud.batch.locations import Location
from dscloud.batch.plan import WorkUnit
from dscloud.errors import ConfigError
from dscloud.scorer import Scorer
from tests.runtime.batch.conftest import read_output, read_rejects
from tests.runtime.batch.formats.conftest import WRITERS

NAMES = formats.names()


def test_every_registered_format_has_a_writer_so_the_suite_runs_for_it() -> None:
    assert sorted(WRITERS) == sorted(NAMES)


def _with_bad_rows(users: pd.DataFrame, name: str) -> pd.DataFrame:
    """400 users whose tenure is text, a word in row 10 and nothing in row 20. In JSON Lines
    the good tenures stay numbers: a JSON string is text there, never a number (the JSON
    rule of ``/invocations``)."""
    frame = users.head(400).copy()
    tenure = frame["tenure_months"].astype(object)
    frame["tenure_months"] = tenure if name == "jsonl" else tenure.astype(str).astype(object)
    frame.loc[10, "tenure_months"] = "twelve"
    frame.loc[20, "tenure_months"] = None
    return frame


@pytest.mark.parametrize("name", NAMES)
def test_a_format_scores_like_the_core_and_rejects_bad_rows_with_reasons(
    name: str, users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    # given the same rows, two of them bad, in this format
    frame = _with_bad_rows(users, name)
    (tmp_path / "in").mkdir()
    WRITERS[name](frame, tmp_path / "in" / "users")

    # when scored in three shards
    job = make_job(tmp_path / "in", shard_count=3)
    run_local(job, workers=1)
    out, rejects = read_output(job.output), read_rejects(job.output)

    # then the good rows score as the core scores them, in input order
    good = users.head(400).drop(index=[10, 20])
    assert out["user_id"].tolist() == good["user_id"].tolist()
    expected = pd.read_parquet(_reference(good, tmp_path, make_job))
    np.testing.assert_array_equal(out["probability_1"], expected["probability_1"])
    # and the bad ones are rejected, with the column and the value in the reason
    reasons = dict(zip(rejects["user_id"], rejects["reason"], strict=True))
    assert set(reasons) == {frame.loc[10, "user_id"], frame.loc[20, "user_id"]}
    assert "'tenure_months'" in reasons[frame.loc[10, "user_id"]]
    assert "'twelve'" in reasons[frame.loc[10, "user_id"]]
    assert "'tenure_months' is null" in reasons[frame.loc[20, "user_id"]]
    assert dict(zip(rejects["user_id"], rejects["source_row"], strict=True)) == {
        frame.loc[10, "user_id"]: 10,
        frame.loc[20, "user_id"]: 20,
    }


def _reference(good: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]) -> Path:
    """The good rows scored from a Parquet file whose columns have the model's types."""
    (tmp_path / "typed").mkdir()
    WRITERS["parquet"](good, tmp_path / "typed" / "users")
    job = make_job(tmp_path / "typed", tmp_path / "typed-out")
    run_local(job, workers=1)
    return Path(job.output) / "part-00000-of-00001.parquet"


@pytest.mark.parametrize("name", NAMES)
def test_a_format_knows_its_columns_rows_and_pieces(
    name: str, users: pd.DataFrame, tmp_path: Path
) -> None:
    frame = users.head(250)
    path = WRITERS[name](frame, tmp_path / "users")
    fmt, location = formats.named(name), Location(str(tmp_path))

    assert formats.of_path(str(path)) is fmt
    assert fmt.columns(location, location.join(path.name)) == list(frame.columns)
    rows = fmt.rows(location, location.join(path.name))
    assert rows in (None, len(frame))  # None: only reading the rows would tell
    pieces = fmt.row_groups(location, location.join(path.name))
    assert pieces is None or sum(p.rows for p in pieces) == len(frame)


@pytest.mark.parametrize("name", NAMES)
def test_a_format_reads_a_whole_file_for_training_with_types_inferred(
    name: str, users: pd.DataFrame, tmp_path: Path
) -> None:
    frame = users.head(50)
    path = WRITERS[name](frame, tmp_path / "users")
    location = Location(str(tmp_path))

    table = formats.named(name).read_table(location, location.join(path.name))

    pd.testing.assert_frame_equal(table.to_pandas(), frame, check_dtype=False)


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_model_column_is_a_config_error_naming_it(
    name: str, users: pd.DataFrame, tmp_path: Path, churn_scorer: Scorer
) -> None:
    path = WRITERS[name](users.head(20).drop(columns=["age"]), tmp_path / "users")
    location = Location(str(tmp_path))
    unit = WorkUnit(path=location.join(path.name), format=name, weight=1)

    chunks = formats.named(name).chunks(location, unit, ["age"], churn_scorer.schema, 100)

    with pytest.raises(ConfigError, match="has no column 'age'"):
        next(iter(chunks))
