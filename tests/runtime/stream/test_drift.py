"""Drift on the online path: batches add up across invocations, published once per window."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from dscloud import example
from dscloud.archive import Archive
from dscloud.baseline import Baseline
from dscloud.drift_report import metric_figures
from dscloud.stream import handler as handler_module
from dscloud.stream.drift import ALARMED_METRICS, StreamDrift
from tests.runtime.conftest import counted, shifted
from tests.runtime.stream.conftest import (
    Aws,
    FakeContext,
    feature_rows,
    kinesis_event,
    payload,
    stream_scorer,
)


def records_of(frame: Any) -> list[dict[str, Any]]:
    """The frame's feature rows as a producer sends them (JSON: NaN becomes null)."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame[example.FEATURES].to_dict("records")
    ]


def test_batches_add_up_and_publish_once_per_window_the_figures_of_one_pass(
    archive: Archive, aws: Aws, churn_scorer
) -> None:
    frame = shifted(example.churn_data(1000, seed=7))
    rows = records_of(frame)
    now = [0.0]
    published: list[tuple[str, float, str]] = []
    app = stream_scorer(archive, aws)
    app.drift = StreamDrift(
        lambda *m: published.append(m), window_seconds=60.0, min_rows=500, clock=lambda: now[0]
    )
    for start in range(0, 900, 100):  # nine batches of 100 records, 5 s apart
        now[0] = start / 20
        batch = [payload(f"e{start + i}", r) for i, r in enumerate(rows[start : start + 100])]
        app.handle(kinesis_event(batch), FakeContext())
        assert published == [], "no PSI of a batch, nor of a window not yet over"
    now[0] = 95.0
    batch = [payload(f"e{900 + i}", r) for i, r in enumerate(rows[900:])]
    app.handle(kinesis_event(batch), FakeContext())

    baseline = Baseline.of(churn_scorer.envelope.data)
    assert baseline is not None
    expected = metric_figures(counted(baseline, churn_scorer, frame).report().to_dict())
    assert published == expected
    values = {name: value for name, value, _ in published}
    assert values["DriftRows"] == 1000 and values["DriftWorstFeaturePsi"] > 0.25
    assert app.drift.counts is not None and app.drift.counts.rows == 0  # a new window


def test_a_quiet_window_keeps_counting_until_it_has_enough_rows(archive: Archive, aws: Aws) -> None:
    now = [0.0]
    published: list[tuple[str, float, str]] = []
    app = stream_scorer(archive, aws)
    app.drift = StreamDrift(
        lambda *m: published.append(m), window_seconds=1.0, min_rows=50, clock=lambda: now[0]
    )
    rows = feature_rows(60)
    for t, start in ((0.0, 0), (5.0, 20), (6.0, 40)):
        assert published == []  # at 5 s the window is over, but 40 rows are too few
        now[0] = t
        batch = [payload(f"e{start + i}", r) for i, r in enumerate(rows[start : start + 20])]
        app.handle(kinesis_event(batch), None)
    assert dict((n, v) for n, v, _ in published)["DriftRows"] == 60


def test_the_lambda_entry_point_emits_drift_metrics_as_emf(
    archive: Archive, aws: Aws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in Lambda, where the stack sets POWERTOOLS_SERVICE_NAME before the module loads.
    monkeypatch.setattr(handler_module.metrics.provider, "service", "dsc-recs-dev-scorer")
    app = stream_scorer(archive, aws, drift_window_seconds=60.0, drift_min_rows=5)
    assert (app.drift.window_seconds, app.drift.min_rows) == (60.0, 5)  # from the settings
    now = [0.0]
    app.drift.clock = lambda: now[0]
    handler_module.configure(app)
    handler_module.metrics.clear_metrics()
    rows = feature_rows(8)
    try:
        handler_module.handler(kinesis_event([payload("e0", rows[0])]), FakeContext())
        now[0] = 61.0
        event = kinesis_event([payload(f"e{i}", r) for i, r in enumerate(rows[1:], start=1)])
        handler_module.handler(event, FakeContext())
    finally:
        handler_module.configure(None)
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    blob = next(m for m in emf if "DriftPredictionPsi" in m)
    assert blob["DriftRows"] in (8.0, [8.0])
    names = {d["Name"] for d in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {*ALARMED_METRICS, "DriftOutOfRangeShare"} <= names
    # The one dimension the stacks' alarms filter on (stacks/online.py).
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert blob["service"] == "dsc-recs-dev-scorer"
