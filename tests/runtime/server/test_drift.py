"""The server's drift: per-version rolling counts over real HTTP, as JSON and in /metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from dscloud import example
from dscloud.baseline import Baseline
from dscloud.envelope import Artifact
from tests.runtime.conftest import counted, shifted
from tests.runtime.server.conftest import Server, publish_all


def records_of(frame: Any) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame[example.FEATURES].to_dict("records")
    ]


@pytest.fixture(scope="module")
def drift_server(
    tmp_path_factory: pytest.TempPathFactory, churn_artifact: Artifact
) -> Iterator[Server]:
    """churn (with a baseline) and plain (the same model packaged before baselines)."""
    data = {k: v for k, v in churn_artifact.envelope.data.items() if k != "baseline"}
    plain = Artifact(
        envelope=replace(churn_artifact.envelope, name="plain", data=data),
        model=churn_artifact.model,
    )
    root = tmp_path_factory.mktemp("drift")
    server = Server(
        publish_all(root / "archive", churn_artifact, plain),
        ["churn@production", "plain@production"],
        root / "server.log",
    )
    yield server
    server.stop()


def test_requests_add_up_to_the_figures_of_one_pass(
    drift_server: Server, churn_scorer: Any
) -> None:
    frame = shifted(example.churn_data(1200, seed=5))
    rows = records_of(frame)
    with drift_server.client() as client:
        for start in range(0, 1000, 100):
            body = {"dataframe_records": rows[start : start + 100]}
            r = client.post("/invocations", params={"model": "churn"}, json=body)
            assert r.status_code == 200, r.text
        for row in rows[1000:]:  # one row per request, through the OIP endpoint
            inputs = [
                {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP32",
                 "data": [v]}
                for k, v in row.items()
            ]  # fmt: skip
            assert client.post("/v2/models/churn/infer", json={"inputs": inputs}).status_code == 200
        bad = {"dataframe_records": [{**rows[0], "age": "old"}]}
        r = client.post("/invocations", params={"model": "churn"}, json=bad)
        assert r.status_code == 400  # refused whole: nothing of it is counted
        report = client.get("/v2/models/churn/drift").json()
        metrics = client.get("/metrics").text

    baseline = Baseline.of(churn_scorer.envelope.data)
    assert baseline is not None
    expected = json.loads(json.dumps(counted(baseline, churn_scorer, frame).report().to_dict()))
    assert {k: v for k, v in report.items() if k not in {"model", "version", "window_seconds"}} == (
        expected
    )
    assert report["model"] == "churn" and report["window_seconds"] == 300.0
    assert report["worst_feature"] in {"age", "plan"} and report["worst_feature_psi"] > 0.25

    worst = expected["features"][0]
    line = f'dsc_drift_psi{{model="churn",version="1",feature="{worst["name"]}"}} '
    assert float(next(x for x in metrics.splitlines() if x.startswith(line)).split()[-1]) == (
        pytest.approx(worst["psi"], rel=1e-5)
    )
    assert 'dsc_drift_rows{model="churn",version="1"} 1200' in metrics
    assert 'feature="(prediction)"' in metrics
    assert 'dsc_drift_rows{model="plain"' not in metrics


def test_a_version_without_baseline_scores_and_says_it_has_no_drift(
    drift_server: Server,
) -> None:
    rows = records_of(example.churn_data(3, seed=1))
    with drift_server.client() as client:
        r = client.post("/invocations", params={"model": "plain"}, json={"dataframe_records": rows})
        assert r.status_code == 200
        r = client.get("/v2/models/plain/drift")
    assert r.status_code == 404 and "no training baseline" in r.json()["error"]
