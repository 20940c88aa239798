"""dscloud.batch.metrics: a completed run publishes its drift figures to CloudWatch (moto).

The job really calls ``PutMetricData`` (boto3 against moto's CloudWatch, in process); the
figures are read back with ``list_metrics`` / ``get_metric_statistics`` and compared with
the run's ``_SUCCESS``. What the stack's alarms watch is checked against the same publish in
tests/stacks/test_contract.py.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from moto import mock_aws

from dscloud.batch import MetricsTarget, ScoreJob, read_success, run_local
from dscloud.batch.locations import Location
from dscloud.batch.metrics import ALARMED_METRICS, ROWS_METRIC, publish_drift
from dscloud.stream.drift import StreamDrift

TARGET = MetricsTarget(namespace="dscloud", service="dsc-test-score")


@pytest.fixture
def cloudwatch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A CloudWatch client on moto (in process); the job's own client lands there too."""
    import boto3

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_CLOUDWATCH"):
        monkeypatch.delenv(variable, raising=False)
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def published(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every datapoint in the ``dscloud`` namespace: (metric, dimensions) -> its maximum."""
    now = datetime.now(UTC)
    found = {}
    for metric in client.list_metrics(Namespace=TARGET.namespace)["Metrics"]:
        points = client.get_metric_statistics(
            Namespace=TARGET.namespace,
            MetricName=metric["MetricName"],
            Dimensions=metric["Dimensions"],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=5),
            Period=3600,
            Statistics=["Maximum"],
        )["Datapoints"]
        dimensions = tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]))
        found[(metric["MetricName"], dimensions)] = max(p["Maximum"] for p in points)
    return found


def test_a_completed_run_publishes_its_drift_under_model_and_version(
    cloudwatch: Any,
    make_job: Callable[..., ScoreJob],
    write_files: Callable[..., Path],
    users: pd.DataFrame,
    tmp_path: Path,
) -> None:
    # given a job that publishes, scoring in two shards
    job = make_job(write_files(users), shard_count=2, metrics=TARGET)

    # when every shard has run
    run_local(job, workers=1)

    # then the merged figures of _SUCCESS are in CloudWatch, once per dimension set
    success = read_success(Location(job.output))
    assert success is not None
    drift = success["drift"]
    features = drift["features"]
    highest = {
        "DriftOutOfRangeShare": [f["out_of_range"] for f in features],
        "DriftUnseenShare": [f["unseen"] for f in features],
        "DriftMissingChange": [f["missing"]["change"] for f in features],
    }
    expected = {
        ROWS_METRIC: float(drift["rows"]),
        "DriftPredictionPsi": drift["prediction"]["psi"],
        "DriftWorstFeaturePsi": drift["worst_feature_psi"],
        **{
            name: max(v for v in values if v is not None)
            for name, values in highest.items()
            if any(v is not None for v in values)
        },
    }
    alarmed = (("model", "churn"), ("service", TARGET.service))
    versioned = tuple(sorted((*alarmed, ("version", "1"))))
    assert published(cloudwatch) == pytest.approx(
        {(name, dims): value for name, value in expected.items() for dims in (alarmed, versioned)}
    )
    assert expected[ROWS_METRIC] == success["rows"]["out"]
    # and _SUCCESS notes what was published where
    assert success["metrics"] == {
        "namespace": "dscloud",
        "dimensions": {"service": TARGET.service, "model": "churn"},
        "version": 1,
        "published": True,
        "metrics": pytest.approx(expected),
    }


def test_without_a_target_nothing_is_published_or_noted(
    cloudwatch: Any, make_job: Callable[..., ScoreJob], write_files: Callable[..., Path],
    users: pd.DataFrame,
) -> None:  # fmt: skip
    job = make_job(write_files(users))

    run_local(job, workers=1)

    success = read_success(Location(job.output))
    assert success is not None and "metrics" not in success
    assert cloudwatch.list_metrics(Namespace=TARGET.namespace)["Metrics"] == []


def test_a_run_without_drift_counts_notes_why_nothing_was_published(
    cloudwatch: Any, make_job: Callable[..., ScoreJob], write_files: Callable[..., Path],
    users: pd.DataFrame,
) -> None:  # fmt: skip
    job = make_job(write_files(users), drift=False, metrics=TARGET)

    run_local(job, workers=1)

    success = read_success(Location(job.output))
    assert success is not None
    assert success["metrics"]["published"] is False
    assert "no drift report" in success["metrics"]["reason"]
    assert cloudwatch.list_metrics(Namespace=TARGET.namespace)["Metrics"] == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cloudwatch_out_of_reach_does_not_fail_the_run(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    make_job: Callable[..., ScoreJob],
    write_files: Callable[..., Path],
    users: pd.DataFrame,
) -> None:
    # given CloudWatch at an address nothing listens on
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{_closed_port()}")
    job = make_job(write_files(users), metrics=TARGET)

    # when the run completes
    with caplog.at_level(logging.WARNING, logger="dscloud.batch.metrics"):
        manifests = run_local(job, workers=1)

    # then it is a success all the same, and the failure is logged and noted
    success = read_success(Location(job.output))
    assert success is not None and success["status"] == "complete"
    assert success["rows"]["out"] == sum(m.rows_out for m in manifests) > 0
    assert success["drift"] is not None
    assert success["metrics"]["published"] is False
    assert "127.0.0.1" in success["metrics"]["error"]
    assert "not published" in caplog.text


def test_batch_and_stream_publish_the_same_figures_under_the_same_names(
    cloudwatch: Any, churn_scorer: Any, fresh_sample: pd.DataFrame
) -> None:
    from tests.runtime.conftest import shifted

    # given the same shifted rows, scored by the same version
    frame = shifted(fresh_sample)
    records = [
        {k: (None if v != v else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    preds = churn_scorer.score_records(records)

    # when the stream counts them and publishes its window (EMF in the Lambda)...
    emitted: list[tuple[str, float, str]] = []
    stream = StreamDrift(
        lambda *m: emitted.append(m), window_seconds=0.0, min_rows=1, clock=lambda: 0.0
    )
    report = stream.add(churn_scorer, records, preds)
    assert report is not None
    # ...and a completed batch run publishes the same report from its _SUCCESS
    summary = {"model": {"name": "churn", "version": 1}, "drift": report.to_dict()}
    assert publish_drift(summary, TARGET)["published"] is True

    # then CloudWatch holds, under the alarmed dimensions, what the stream emitted
    alarmed = (("model", "churn"), ("service", TARGET.service))
    batch = {name: v for (name, dims), v in published(cloudwatch).items() if dims == alarmed}
    assert batch == pytest.approx({name: value for name, value, _ in emitted})
    assert set(ALARMED_METRICS) | {ROWS_METRIC} <= set(batch)
    assert batch["DriftWorstFeaturePsi"] > 0.25 and batch[ROWS_METRIC] == len(records)
