"""Scoring shards locally: sharded equals unsharded, rejects with reasons, keys, manifests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.batch import (
    SUCCESS,
    ScoreJob,
    finalize,
    plan_job,
    read_failure,
    read_success,
    run_local,
    run_shard,
)
from dscloud.batch.locations import Location
from dscloud.envelope import Artifact
from dscloud.errors import ConfigError, DataError
from dscloud.schema import Schema
from dscloud.scorer import Scorer
from tests.runtime.batch.conftest import read_output, read_rejects

PREDICTIONS = ["label", "probability_0", "probability_1"]


def score_all(job: ScoreJob) -> pd.DataFrame:
    run_local(job, workers=1)
    return read_output(job.output)


@pytest.mark.parametrize("count", [2, 7, 40])
def test_sharded_output_equals_unsharded_row_for_row(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
    count: int,
) -> None:
    # given three Parquet files of 1,000 rows in row groups of 250 (7 and 40 > 3 files)
    data = write_files(users, files=3)

    # when
    whole = score_all(make_job(data, tmp_path / "whole"))
    sharded = score_all(make_job(data, tmp_path / "sharded", shard_count=count))

    # then
    assert len(whole) == len(users)
    assert whole["user_id"].tolist() == users["user_id"].tolist()
    pd.testing.assert_frame_equal(sharded, whole)


def test_predictions_are_the_scoring_cores(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    churn_scorer: Scorer,
) -> None:
    out = score_all(make_job(write_files(users, files=2)))

    expected = churn_scorer.score_records(users[example.FEATURES].to_dict("records"))
    assert expected.probabilities is not None and expected.label is not None
    np.testing.assert_allclose(out["probability_1"], expected.probabilities[:, 1], atol=1e-6)
    np.testing.assert_array_equal(out["label"], expected.label)
    assert set(out.columns) == {
        "user_id",
        *PREDICTIONS,
        "model_name",
        "model_version",
        "model_sha256",
    }
    assert set(out["model_name"]) == {"churn"}
    assert set(out["model_version"]) == {1}
    assert set(out["model_sha256"]) == {churn_scorer.sha256}


def test_csv_and_parquet_inputs_score_the_same(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
) -> None:
    from_parquet = score_all(make_job(write_files(users, files=2), tmp_path / "a"))
    csv = write_files(users, files=2, fmt="csv", name="csv")

    from_csv = score_all(make_job(csv, tmp_path / "b", shard_count=3))

    assert from_csv["user_id"].tolist() == from_parquet["user_id"].tolist()
    np.testing.assert_allclose(from_csv["probability_1"], from_parquet["probability_1"], atol=1e-6)


def test_bad_csv_rows_are_rejected_with_reasons_and_nothing_is_dropped(
    users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    # given a CSV with a word in a numeric column, a missing non-nullable value, and a
    # missing nullable one (age), which is fine
    frame = users.head(500).astype({"tenure_months": object})
    frame.loc[10, "tenure_months"] = "twelve"
    frame.loc[20, "monthly_charges"] = np.nan
    frame.loc[30, "age"] = np.nan
    frame.loc[40, "plan"] = None
    (tmp_path / "in").mkdir()
    frame.to_csv(tmp_path / "in" / "users.csv", index=False)

    # when
    job = make_job(tmp_path / "in" / "users.csv", shard_count=2)
    run_local(job, workers=1)
    out, rejects = read_output(job.output), read_rejects(job.output)

    # then every input row is in exactly one of the two
    bad = {frame.loc[i, "user_id"]: i for i in (10, 20, 40)}
    assert set(rejects["user_id"]) == set(bad)
    assert len(out) + len(rejects) == len(frame)
    assert set(out["user_id"]) | set(rejects["user_id"]) == set(frame["user_id"])
    reasons = dict(zip(rejects["user_id"], rejects["reason"], strict=True))
    assert "'tenure_months'" in reasons[frame.loc[10, "user_id"]]
    assert "'twelve'" in reasons[frame.loc[10, "user_id"]]
    assert "'monthly_charges' is null" in reasons[frame.loc[20, "user_id"]]
    assert "'plan' is null" in reasons[frame.loc[40, "user_id"]]
    rows = dict(zip(rejects["user_id"], rejects["source_row"], strict=True))
    assert rows == bad
    assert (
        rejects.loc[rejects["user_id"] == frame.loc[10, "user_id"], "tenure_months"].item()
        == "twelve"
    )
    success = json.loads((Path(job.output) / SUCCESS).read_text())
    assert success["rows"] == {"in": 500, "out": 497, "rejected": 3}


def test_unknown_categories_are_rejected_when_the_model_refuses_them(
    users: pd.DataFrame,
    churn_artifact: Artifact,
    tmp_path: Path,
    write_files: Callable[..., Path],
) -> None:
    # given a model whose plan column refuses unseen values
    schema = churn_artifact.envelope.schema
    strict = tuple(
        replace(c, allow_unknown=False) if c.name == "plan" else c for c in schema.columns
    )
    envelope = replace(
        churn_artifact.envelope,
        schema=Schema(columns=strict, outputs=schema.outputs, matrix_input=schema.matrix_input),
    )
    archive = Archive.open(tmp_path / "strict")
    dscloud.publish(Artifact(envelope=envelope, model=churn_artifact.model), archive)
    frame = users.head(300).copy()
    frame.loc[5, "plan"] = "platinum"
    data = write_files(frame, files=1)

    # when
    job = ScoreJob(
        model="churn@1", archive=archive.uri, input=str(data), output=str(tmp_path / "o")
    )
    run_local(job, workers=1)

    # then
    rejects = read_rejects(job.output)
    assert rejects["user_id"].tolist() == [frame.loc[5, "user_id"]]
    assert "one of ['basic', 'premium', 'standard'], got 'platinum'" in rejects["reason"].item()


def test_keys_are_configurable_and_default_to_source_file_and_row(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
) -> None:
    anonymous = write_files(users.drop(columns=["user_id"]).head(600), files=2)

    by_source = score_all(make_job(anonymous, tmp_path / "a", shard_count=2))
    by_plan = score_all(make_job(anonymous, tmp_path / "b", keys=("plan", "region")))

    assert by_source["source_row"].tolist() == list(range(300)) * 2
    assert by_source["source_file"].str.endswith(("users-000.parquet", "users-001.parquet")).all()
    assert (
        by_plan[["plan", "region"]].values.tolist()
        == users.head(600)[["plan", "region"]].values.tolist()
    )
    with pytest.raises(ConfigError, match="no column 'customer'"):
        run_local(make_job(anonymous, tmp_path / "c", keys=("customer",)), workers=1)


def test_a_missing_feature_column_fails_the_shard_and_publishes_nothing(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
) -> None:
    data = write_files(users.drop(columns=["age"]).head(100), files=1)
    job = make_job(data)

    with pytest.raises(ConfigError, match="no column 'age'"):
        run_local(job, workers=1)

    assert not any(p.name.startswith("part-") for p in Path(job.output).rglob("*"))


def test_success_is_written_by_the_last_shard_and_finalize_names_missing_ones(
    users: pd.DataFrame, write_files: Callable[..., Path], make_job: Callable[..., ScoreJob]
) -> None:
    job = make_job(write_files(users, files=3), shard_count=3)
    plan = plan_job(job)
    out = Location(job.output)

    run_shard(job, 2, plan=plan)
    run_shard(job, 0, plan=plan)
    assert not (Path(job.output) / SUCCESS).exists()
    with pytest.raises(ConfigError, match=r"1 of 3 shards have not finished .*shard 1"):
        finalize(out, 3)

    run_shard(job, 1, plan=plan)
    summary = json.loads((Path(job.output) / SUCCESS).read_text())
    assert summary["rows"] == {"in": 3000, "out": 3000, "rejected": 0}
    assert [p["path"] for p in summary["parts"]] == [
        f"part-{i:05d}-of-00003.parquet" for i in range(3)
    ]
    assert summary["model"]["version"] == 1
    assert finalize(out, 3) is not None  # idempotent
    assert not (Path(job.output) / "_temporary").exists()


def test_finalize_refuses_shards_scored_by_different_models(
    users: pd.DataFrame, write_files: Callable[..., Path], make_job: Callable[..., ScoreJob]
) -> None:
    # given shard 0 was scored by another model (as if the alias moved mid-run)
    job = make_job(write_files(users, files=2), shard_count=2)
    run_shard(job, 0)
    manifest = Path(job.output) / "_manifests" / "shard-00000-of-00002.json"
    data = json.loads(manifest.read_text())
    data["model"]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))

    # when / then
    with pytest.raises(ConfigError, match="disagree on the model"):
        run_shard(job, 1)
    assert not (Path(job.output) / SUCCESS).exists()


def test_a_complete_shard_is_not_redone(
    users: pd.DataFrame, write_files: Callable[..., Path], make_job: Callable[..., ScoreJob]
) -> None:
    job = make_job(write_files(users, files=1))
    first = run_shard(job, 0)
    part = Path(job.output) / "part-00000-of-00001.parquet"
    stamp = part.stat().st_mtime_ns

    again = run_shard(job, 0)

    assert again == first
    assert part.stat().st_mtime_ns == stamp


def test_workers_run_every_shard_in_a_process_pool(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
) -> None:
    data = write_files(users, files=3)
    whole = score_all(make_job(data, tmp_path / "whole"))

    manifests = run_local(make_job(data, tmp_path / "pool", shard_count=4), workers=2)

    assert [m.shard_index for m in manifests] == [0, 1, 2, 3]
    assert sum(m.rows_in for m in manifests) == len(users)
    pd.testing.assert_frame_equal(read_output(tmp_path / "pool"), whole)


def test_a_regressor_writes_its_value(
    tmp_path: Path, users: pd.DataFrame, write_files: Callable[..., Path]
) -> None:
    from sklearn.linear_model import LinearRegression

    X = users[["tenure_months", "monthly_charges"]]
    model = LinearRegression().fit(X, users["data_gb"])
    archive = Archive.open(tmp_path / "arch")
    dscloud.publish(dscloud.package(model, X.head(50), name="usage"), archive)
    data = write_files(users.head(200), files=1)

    job = ScoreJob(
        model="usage@1", archive=archive.uri, input=str(data), output=str(tmp_path / "o")
    )
    run_local(job, workers=1)

    out = read_output(job.output)
    np.testing.assert_allclose(out["value"], model.predict(X.head(200)), rtol=1e-4, atol=1e-3)
    assert "label" not in out.columns


def test_one_file_of_one_row_group_still_splits_across_shards(
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    make_job: Callable[..., ScoreJob],
    tmp_path: Path,
) -> None:
    data = write_files(users, files=1, row_group_size=len(users))
    whole = score_all(make_job(data, tmp_path / "whole"))

    manifests = run_local(make_job(data, tmp_path / "sharded", shard_count=4), workers=1)

    assert [m.rows_in for m in manifests] == [750, 750, 750, 750]
    pd.testing.assert_frame_equal(read_output(tmp_path / "sharded"), whole)


def all_bad_csv(users: pd.DataFrame, directory: Path, *, bad: int = 100) -> Path:
    """A CSV of 100 rows whose first ``bad`` have a word in a numeric column."""
    frame = users.head(100).astype({"tenure_months": object})
    frame.loc[: bad - 1, "tenure_months"] = "twelve"
    directory.mkdir()
    frame.to_csv(directory / "users.csv", index=False)
    return directory / "users.csv"


def test_a_run_rejecting_more_than_the_allowed_share_fails_without_success(
    users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    # given an input whose every row is rejected, and a run allowing at most half
    job = make_job(all_bad_csv(users, tmp_path / "in"), shard_count=2, max_rejected_share=0.5)

    # when / then the shard that finalizes fails, naming the share and the setting
    with pytest.raises(DataError, match=r"100 of 100 rows rejected \(100\.0%\).*50\.0%"):
        run_local(job, workers=1)
    out = Location(job.output)
    assert read_success(out) is None
    failure = read_failure(out)
    assert failure is not None
    assert failure["status"] == "failed"
    assert "DSC_MAX_REJECTED_SHARE" in failure["reason"]
    assert failure["rows"] == {"in": 100, "out": 0, "rejected": 100}
    assert len(pd.read_parquet(Path(job.output) / failure["rejects"][0]["path"])) > 0

    # and a re-run allowing every row to be rejected completes it (nothing re-scored)
    run_local(replace(job, max_rejected_share=1.0), workers=1)
    assert read_failure(out) is None
    assert read_success(out) is not None


def test_a_run_within_the_allowed_share_completes(
    users: pd.DataFrame, tmp_path: Path, make_job: Callable[..., ScoreJob]
) -> None:
    job = make_job(all_bad_csv(users, tmp_path / "in", bad=50), max_rejected_share=0.5)

    run_local(job, workers=1)

    success = read_success(Location(job.output))
    assert success is not None and success["status"] == "complete"
    assert success["rows"]["rejected"] == 50
