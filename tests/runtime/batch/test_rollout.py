"""`dsc score NAME@ALIAS` following the alias's rollout: shadow columns beside the serving
version's, canary rows routed by key, the comparison in the manifests and ``_SUCCESS``,
one guard-rail abort per run, refused candidates that never score. Against a directory
archive and an S3 archive (moto server), with Parquet, CSV and JSON Lines inputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dscloud
from dscloud.archive import Archive
from dscloud.batch import ScoreJob, finalize, guard_run, read_success, run_local
from dscloud.batch.following import KEY_SEPARATOR, PREFIX
from dscloud.batch.locations import Location
from dscloud.batch.manifest import list_manifests, read_manifest
from dscloud.envelope import Artifact
from dscloud.errors import ConfigError
from dscloud.rollout import Thresholds, abort, routes_to_candidate, start, status
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import comparison
from tests.runtime.batch.conftest import REGION, read_output, read_rejects

SERVING_COLUMNS = [
    "user_id",
    "label",
    "probability_0",
    "probability_1",
    "model_name",
    "model_version",
    "model_sha256",
]


@pytest.fixture(params=["dir", "s3"])
def two_versions(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    churn_artifact: Artifact,
    churn_retrained: Artifact,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Archive]:
    """churn@1 behind production and churn@2 (retrained: other predictions), in a directory
    archive and in an S3 archive on the moto server (the workers reach it by endpoint)."""
    if request.param == "dir":
        archive = Archive.open(tmp_path / "archive")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        bucket = request.getfixturevalue("bucket")
        archive = Archive.open(f"s3://{bucket}/archive")
    dscloud.publish(churn_artifact, archive)
    dscloud.publish(churn_retrained, archive)
    archive.promote("churn", 1, "production", by="tests")
    yield archive


@pytest.fixture
def job_on(tmp_path: Path) -> Callable[..., ScoreJob]:
    def make(archive: Archive, input: Path, output: str = "out", **fields: Any) -> ScoreJob:
        job = ScoreJob(
            model="churn@production",
            archive=archive.uri,
            input=str(input),
            output=str(tmp_path / output),
            chunk_rows=300,
            log_seconds=3600.0,
        )
        return replace(job, **fields)

    return make


def audit_events(archive: Archive, event: str) -> list[dict[str, Any]]:
    return [r for r in archive.audit("churn") if r["event"] == event]


def manifests(output: str) -> list[Any]:
    location = Location(output)
    success = read_success(location)
    assert success is not None
    paths = list_manifests(location, success["shard_count"])
    return [read_manifest(location, paths[i]) for i in sorted(paths)]


def without_latency(counts: dict[str, Any]) -> dict[str, Any]:
    """Counts that do not depend on how rows were cut into calls (latency bins count calls)."""
    out = json.loads(json.dumps(counts))
    for role in out["versions"].values():
        role.pop("latency")
    return out


# -- shadow ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_shadow_keeps_the_serving_columns_byte_for_byte(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
    fmt: str,
) -> None:
    # given the same input scored without a rollout, then with churn@2 in shadow
    frame = users.head(900)
    data = _write(write_files, frame, fmt)
    plain = job_on(two_versions, data, "plain", shard_count=2)
    run_local(plain, workers=1)
    start(two_versions, "churn", "production", 2, mode="shadow")

    # when
    shadow = job_on(two_versions, data, "shadow", shard_count=2)
    run_local(shadow, workers=1)

    # then the serving version's columns are the no-rollout table, byte for byte
    before = _parts(plain.output)
    after = _parts(shadow.output)
    assert after.column_names[: len(before.column_names)] == before.column_names
    assert after.select(before.column_names).equals(before)
    served = after.select(before.column_names)
    assert _ipc_bytes(served) == _ipc_bytes(before)
    # and the candidate's outputs follow, for the same rows, from version 2
    extra = after.column_names[len(before.column_names) :]
    assert extra == [
        f"{PREFIX}label",
        f"{PREFIX}probability_0",
        f"{PREFIX}probability_1",
        f"{PREFIX}model_version",
        f"{PREFIX}reason",
    ]
    got = after.to_pandas()
    assert set(got["model_version"]) == {1} and set(got[f"{PREFIX}model_version"]) == {2}
    candidate = dscloud.Scorer(two_versions.load("churn@2"))
    expected = candidate.score_records(
        frame.set_index("user_id").loc[got["user_id"]].reset_index().to_dict(orient="records")
    )
    np.testing.assert_allclose(
        got[f"{PREFIX}probability_1"], expected.probabilities[:, 1], rtol=1e-6
    )
    assert (got[f"{PREFIX}probability_1"] != got["probability_1"]).any()  # they do differ


def test_shadow_run_records_its_comparison_and_status_merges_it(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    # given
    data = write_files(users.head(1200), files=3)
    start(two_versions, "churn", "production", 2, mode="shadow")

    # when three shards in two processes score it
    job = job_on(two_versions, data, shard_count=3)
    run_local(job, workers=2)

    # then each shard's manifest carries its comparison, and _SUCCESS the merged figures
    shards = manifests(job.output)
    merged = sum(
        (Comparison.from_dict(m.rollout["comparison"]) for m in shards[1:]),
        Comparison.from_dict(shards[0].rollout["comparison"]),
    )
    success = read_success(Location(job.output))
    assert success is not None
    assert success["rollout"]["mode"] == "shadow" and success["rollout"]["candidate"] == 2
    assert success["rollout"]["comparison"]["rows_compared"] == 1200
    assert success["rollout"]["counts"] == merged.to_dict()
    # and the archive holds one record per shard, merged by `dsc rollout status`
    assert len(audit_events(two_versions, "rollout-compare")) == 3
    _, rollout = status(two_versions, "churn", "production")
    assert rollout is not None
    recorded = comparison(two_versions, "churn", "production", rollout)
    assert recorded is not None and recorded.to_dict() == merged.to_dict()


def test_three_shards_compare_as_one_pass(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    data = write_files(users.head(1500), files=3)
    start(two_versions, "churn", "production", 2, mode="shadow")

    one = job_on(two_versions, data, "one", shard_count=1, chunk_rows=10_000)
    three = job_on(two_versions, data, "three", shard_count=3)
    run_local(one, workers=1)
    run_local(three, workers=1)

    counts = [read_success(Location(j.output))["rollout"]["counts"] for j in (one, three)]
    assert counts[0]["rows_compared"] == 1500
    assert without_latency(counts[0]) == without_latency(counts[1])


# -- canary ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_canary_rows_are_answered_by_the_version_their_key_routes_to(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
    fmt: str,
) -> None:
    # given a canary at 20%
    data = _write(write_files, users, fmt)
    rollout = start(two_versions, "churn", "production", 2, mode="canary", share=0.2)

    # when one run cuts the input in one shard, another in three
    one = job_on(two_versions, data, "one", shard_count=1)
    three = job_on(two_versions, data, "three", shard_count=3)
    run_local(one, workers=1)
    run_local(three, workers=2)

    # then the schema is the no-rollout one, and each row names the version that scored it
    got = read_output(one.output)
    assert list(got.columns) == SERVING_COLUMNS
    expected = [
        2 if routes_to_candidate(u, 0.2, rollout.salt("churn", "production")) else 1
        for u in got["user_id"]
    ]
    assert got["model_version"].tolist() == expected
    shas = {1: two_versions.envelope("churn@1").sha256, 2: two_versions.envelope("churn@2").sha256}
    assert got["model_sha256"].astype(str).tolist() == [shas[v] for v in expected]
    # and the share is within 4 standard deviations of 20% of 3,000 users
    share = float(np.mean(np.asarray(expected) == 2))
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / len(got)) ** 0.5
    # and the same version per user whatever the shard count
    by_user = got.set_index("user_id")
    other = read_output(three.output).set_index("user_id").loc[by_user.index]
    assert other["model_version"].tolist() == by_user["model_version"].tolist()
    pd.testing.assert_frame_equal(other, by_user)
    # and the candidate's rows carry the candidate's predictions
    candidate = dscloud.Scorer(two_versions.load("churn@2"))
    routed = got[got["model_version"] == 2]
    rows = users.set_index("user_id").loc[routed["user_id"]].reset_index()
    preds = candidate.score_records(rows.to_dict(orient="records"))
    np.testing.assert_allclose(routed["probability_1"], preds.probabilities[:, 1], rtol=1e-6)


def test_canary_without_key_columns_is_refused_naming_the_option(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    data = write_files(users.drop(columns=["user_id"]).head(300), files=1)
    start(two_versions, "churn", "production", 2, mode="canary", share=0.2)

    with pytest.raises(ConfigError, match=r"--key COL.*--no-rollout"):
        run_local(job_on(two_versions, data), workers=1)

    # and --no-rollout scores it with the serving version alone
    run_local(job_on(two_versions, data, rollout=False), workers=1)
    out = job_on(two_versions, data).output
    assert set(read_output(out)["model_version"]) == {1}
    assert read_success(Location(out))["rollout"] is None


def test_canary_routes_by_several_key_columns_joined(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    frame = users.head(600).assign(country=lambda f: np.where(f.index % 2, "de", "fr"))
    data = write_files(frame, files=1)
    rollout = start(two_versions, "churn", "production", 2, mode="canary", share=0.5)

    job = job_on(two_versions, data, keys=("user_id", "country"))
    run_local(job, workers=1)

    got = read_output(job.output)
    salt = rollout.salt("churn", "production")
    expected = [
        2 if routes_to_candidate(f"{u}{KEY_SEPARATOR}{c}", 0.5, salt) else 1
        for u, c in zip(got["user_id"], got["country"], strict=True)
    ]
    assert got["model_version"].tolist() == expected


# -- guard rails and refusals ------------------------------------------------------------------


def test_a_breaching_candidate_is_aborted_exactly_once(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    # given a shadow whose candidate disagrees more than allowed
    data = write_files(users.head(1500), files=3)
    start(
        two_versions,
        "churn",
        "production",
        2,
        mode="shadow",
        thresholds=Thresholds(max_disagreement=0.0, min_rows=100),
    )

    # when three array children score one shard each (each pins on its own), and the run
    # is finalized again afterwards (`dsc score --finalize`)
    job = job_on(two_versions, data, shard_count=3)
    for i in range(3):
        run_local(job, workers=1, shards=[i])
    finalize(Location(job.output), 3, judge=guard_run(two_versions.uri))

    # then the rollout was aborted once, by the run, with the figures that tripped it
    (aborted,) = audit_events(two_versions, "rollout-abort")
    assert aborted["by"] == "dsc score" and "disagreement rate" in aborted["why"]
    assert aborted["figures"]["rows_compared"] == 1500
    _, rollout = status(two_versions, "churn", "production")
    assert rollout is None and two_versions.resolve("churn@production") == 1
    # and the run completed with the pair it pinned, and says what happened
    success = read_success(Location(job.output))
    assert success is not None and success["status"] == "complete"
    assert success["rollout"]["candidate"] == 2 and success["rollout"]["breaches"]
    assert success["rollout"]["aborted"]["why"] == aborted["why"]
    assert f"{PREFIX}label" in read_output(job.output).columns
    assert len(audit_events(two_versions, "rollout-compare")) == 3


def test_a_rollout_within_its_thresholds_is_left_running(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    data = write_files(users.head(600), files=1)
    start(two_versions, "churn", "production", 2, mode="shadow", thresholds=Thresholds(0.5, 0.9))
    job = job_on(two_versions, data)
    run_local(job, workers=1)
    assert audit_events(two_versions, "rollout-abort") == []
    assert read_success(Location(job.output))["rollout"]["breaches"] == []
    assert status(two_versions, "churn", "production")[1] is not None


def test_a_refused_candidate_never_scores_a_row(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    # given a canary whose candidate's bytes were changed after it was admitted
    data = write_files(users.head(900), files=3)
    start(two_versions, "churn", "production", 2, mode="canary", share=0.5)
    key = "models/churn/versions/2/model.onnx"
    tagged = two_versions.store.get_tagged(key)
    assert tagged is not None
    two_versions.store.swap(key, tagged[0][:-1] + b"\x00", tagged[1])

    # when
    job = job_on(two_versions, data, shard_count=3)
    run_local(job, workers=2)

    # then every row is the serving version's, and the run says why
    got = read_output(job.output)
    assert len(got) == 900 and set(got["model_version"]) == {1}
    assert list(got.columns) == SERVING_COLUMNS
    success = read_success(Location(job.output))
    assert success is not None
    assert "churn@2 refused" in success["rollout"]["refused"]
    assert "sha256" in success["rollout"]["refused"]
    assert success["rollout"]["comparison"] is None
    assert audit_events(two_versions, "rollout-compare") == []


def test_a_canary_row_the_candidate_refuses_is_in_the_rejects_naming_it(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    # given a bad row, and a canary that routes every key to the candidate
    frame = users.head(300).astype({"support_calls": object})
    frame.loc[5, "support_calls"] = "lots"
    data = write_files(frame, files=1, fmt="csv")
    start(two_versions, "churn", "production", 2, mode="canary", share=1.0)

    job = job_on(two_versions, data)
    run_local(job, workers=1)

    rejects = read_rejects(job.output)
    assert len(rejects) == 1 and rejects["user_id"].tolist() == [frame.loc[5, "user_id"]]
    assert rejects["reason"].iloc[0].startswith("candidate churn@2: ")
    assert set(read_output(job.output)["model_version"]) == {2}


def test_a_rollout_that_changes_mid_run_never_mixes_in_one_success(
    two_versions: Archive,
    users: pd.DataFrame,
    write_files: Callable[..., Path],
    job_on: Callable[..., ScoreJob],
) -> None:
    data = write_files(users.head(600), files=2)
    start(two_versions, "churn", "production", 2, mode="shadow")
    job = job_on(two_versions, data, shard_count=2)
    run_local(job, workers=1, shards=[0])

    # when the rollout ends before the second array child starts
    abort(two_versions, "churn", "production", reason="operator")
    with pytest.raises(ConfigError, match="shards disagree on the rollout"):
        run_local(job, workers=1, shards=[1])
    assert read_success(Location(job.output)) is None


@pytest.mark.parametrize("two_versions", ["s3"], indirect=True)
def test_output_and_archive_on_s3(
    users: pd.DataFrame,
    s3_endpoint: str,
    bucket: str,
    two_versions: Archive,
    job_on: Callable[..., ScoreJob],
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    body = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(users.head(600), preserve_index=False), body)
    s3.put_object(Bucket=bucket, Key="users/part-0.parquet", Body=body.getvalue().to_pybytes())
    start(two_versions, "churn", "production", 2, mode="canary", share=0.3)

    job = replace(
        job_on(two_versions, Path("unused")),
        input=f"s3://{bucket}/users/",
        output=f"s3://{bucket}/scores/",
        shard_count=2,
        s3_endpoint=s3_endpoint,
    )
    run_local(job, workers=2)

    got = read_output(job.output, s3_endpoint=s3_endpoint)
    assert set(got["model_version"]) == {1, 2}
    success = read_success(Location(job.output, s3_endpoint=s3_endpoint))
    assert success is not None and success["rollout"]["comparison"]["rows_compared"] == 600


# -- helpers ------------------------------------------------------------------------------------


def _write(write_files: Callable[..., Path], frame: pd.DataFrame, fmt: str) -> Path:
    if fmt != "jsonl":
        return write_files(frame, files=3, fmt=fmt)
    directory = write_files(frame.head(0), files=1, fmt="csv", name="jsonl-input")
    for p in directory.iterdir():
        p.unlink()
    step = -(-len(frame) // 3)
    for i in range(3):
        part = frame.iloc[i * step : (i + 1) * step]
        part.to_json(directory / f"users-{i:03d}.jsonl", orient="records", lines=True)
    return directory


def _parts(output: str) -> pa.Table:
    location = Location(output)
    success = read_success(location)
    assert success is not None
    return pa.concat_tables(pq.read_table(location.join(p["path"])) for p in success["parts"])


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return sink.getvalue().to_pybytes()
