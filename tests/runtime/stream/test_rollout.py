"""A rollout on the online path: Kinesis events through the real handler, DynamoDB on moto,
the archive in a directory and in S3 on moto.

Shadow writes exactly what no rollout writes; canary entities get the candidate's
prediction, tagged with its version, at the configured share and the same in every handler;
one extra ONNX call per batch; a breach aborts exactly once among concurrent handlers; a
refused or failing candidate never costs a record; and the stream's comparison is the one
the core computes on the same rows.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

import dscloud
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.rollout import Rollout, Thresholds, start, status
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import comparison
from dscloud.scorer import Scorer
from dscloud.stream import handler as handler_module
from dscloud.stream.handler import StreamScorer
from dscloud.stream.rollout import ROLLOUT_METRICS, rollout_metrics
from tests.runtime.stream.conftest import (
    REGION,
    Aws,
    FakeContext,
    feature_rows,
    kinesis_event,
    payload,
    stream_scorer,
    table_items,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["dir", "s3"])
def archive(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    aws: Aws,
    churn_artifact: Artifact,
    churn_retrained: Artifact,
) -> Archive:
    """churn@1 behind ``production`` and churn@2 (retrained: the same interface, other
    predictions) as the candidate to be, in a directory or in S3 on the same moto as the
    stream's table and queues."""
    if request.param == "dir":
        store = Archive.open(tmp_path / "archive")
    else:
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="models")
        store = Archive.open("s3://models/team-a", s3_client=s3)
    dscloud.publish(churn_artifact, store)
    dscloud.publish(churn_retrained, store)
    store.promote("churn", 1, "production", by="tests")
    return store


def begin(archive: Archive, mode: str, share: float = 0.0, **limits: Any) -> Rollout:
    return start(
        archive,
        "churn",
        "production",
        2,
        mode=mode,
        share=share,
        thresholds=Thresholds(**limits),
        by="tests",
    )


def event_of(rows: list[dict[str, Any]], *, prefix: str = "e", at: str = "2024-05-01T12:00:00Z"):
    return kinesis_event([payload(f"{prefix}{i}", r, at) for i, r in enumerate(rows)])


def without_timestamps(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Table items without ``scored_at``, the one attribute two runs never share."""
    return {k: {a: v for a, v in item.items() if a != "scored_at"} for k, item in items.items()}


def empty_table(aws: Aws) -> None:
    for entity in table_items(aws):
        aws.dynamodb.delete_item(TableName=aws.table, Key={"entity_id": {"S": entity}})


def audit(archive: Archive, event: str) -> list[dict[str, Any]]:
    return [r for r in archive.audit("churn") if r["event"] == event]


class CountingSession:
    """An ONNX Runtime session that counts its ``run`` calls (and can be made to fail)."""

    def __init__(self, session: Any, *, fail: bool = False) -> None:
        self._session = session
        self.fail = fail
        self.runs = 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.runs += 1
        if self.fail:
            raise RuntimeError("injected: the candidate's session crashed")
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def sessions(app: StreamScorer) -> tuple[CountingSession, CountingSession]:
    """Count the serving version's and the candidate's session calls from now on."""
    assert app.live.following is not None
    current, candidate = app.live.scorer, app.live.following[1]
    current.session = CountingSession(current.session)  # type: ignore[assignment]
    candidate.session = CountingSession(candidate.session)  # type: ignore[assignment]
    return current.session, candidate.session  # type: ignore[return-value]


# -- shadow ---------------------------------------------------------------------------------


def test_shadow_writes_what_no_rollout_writes_with_one_more_onnx_call(
    archive: Archive, aws: Aws
) -> None:
    # given the table a stream without a rollout writes
    rows = feature_rows(300, seed=3)
    stream_scorer(archive, aws).handle(event_of(rows), FakeContext())
    expected = without_timestamps(table_items(aws))
    empty_table(aws)

    # when the same batch goes through a stream following a shadow rollout
    begin(archive, "shadow")
    app = stream_scorer(archive, aws)
    current, candidate = sessions(app)
    response = app.handle(event_of(rows), FakeContext())

    # then the table is identical, item by item, and the candidate ran once on every row
    assert response == {"batchItemFailures": []}
    assert without_timestamps(table_items(aws)) == expected
    assert (current.runs, candidate.runs) == (1, 1)
    assert app.rollouts is not None and app.rollouts.total is not None
    figures = app.rollouts.total.figures()
    assert figures["rows_compared"] == 300
    assert figures["disagreements"] > 0  # the candidate really is another model


# -- canary ---------------------------------------------------------------------------------


def test_canary_entities_get_the_candidates_prediction_tagged_with_its_version(
    archive: Archive, aws: Aws
) -> None:
    # given a canary at 30% and 2,000 entities in four batches
    rollout = begin(archive, "canary", 0.3)
    rows = feature_rows(2000, seed=4)
    app = stream_scorer(archive, aws)
    assert app.live.following is not None
    candidate = app.live.following[1]
    for at in range(0, 2000, 500):
        batch = [payload(f"e{i}", rows[i]) for i in range(at, at + 500)]
        assert app.handle(kinesis_event(batch), FakeContext()) == {"batchItemFailures": []}

    # then every entity the rollout routes is answered by the candidate, the rest by v1
    items = table_items(aws)
    assert len(items) == 2000
    current_preds = app.live.scorer.score_records(rows)
    candidate_preds = candidate.score_records(rows)
    routed = 0
    for i in range(2000):
        item = items[f"e{i}"]
        answers = rollout.answers("churn", "production", f"e{i}")
        routed += answers
        by = candidate if answers else app.live.scorer
        preds = candidate_preds if answers else current_preds
        assert item["model_version"]["N"] == str(by.version)
        assert item["model_sha256"]["S"] == by.sha256
        assert float(item["score"]["N"]) == pytest.approx(float(preds.probabilities[i][1]))
        assert int(item["label"]["N"]) == int(preds.label[i])
    # within six standard deviations of the configured share
    tolerance = 6 * (0.3 * 0.7 / 2000) ** 0.5
    assert abs(routed / 2000 - 0.3) < tolerance


def test_an_entity_keeps_its_version_across_handlers_and_batches(
    archive: Archive, aws: Aws
) -> None:
    # given a canary at 50% and two handlers (two containers, each loading its own models)
    begin(archive, "canary", 0.5)
    rows = feature_rows(400, seed=5)
    first, second = stream_scorer(archive, aws), stream_scorer(archive, aws)

    # when each scores the same entities, the second with newer events
    first.handle(event_of(rows), FakeContext())
    written_first = {k: v["model_version"]["N"] for k, v in table_items(aws).items()}
    second.handle(event_of(rows[::-1], at="2024-05-02T12:00:00Z"), FakeContext())
    items = table_items(aws)

    # then every entity was answered by the same version both times
    assert {v["event_time"]["S"][:10] for v in items.values()} == {"2024-05-02"}
    assert {k: v["model_version"]["N"] for k, v in items.items()} == written_first
    assert set(written_first.values()) == {"1", "2"}


# -- guard rails ----------------------------------------------------------------------------


def test_a_breach_aborts_exactly_once_between_concurrent_handlers(
    archive: Archive, aws: Aws
) -> None:
    # given a rollout that tolerates no disagreement after 50 rows, and two handlers
    rollout = begin(archive, "shadow", max_disagreement=0.0, min_rows=50)
    apps = [stream_scorer(archive, aws) for _ in range(2)]
    rows = feature_rows(400, seed=6)
    barrier = threading.Barrier(2)
    responses: list[dict[str, Any]] = []

    def container(i: int) -> None:
        barrier.wait()
        responses.append(apps[i].handle(event_of(rows, prefix=f"c{i}-"), FakeContext()))

    # when both see the breach in the same moment
    threads = [threading.Thread(target=container, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then one abort is written, with the figures that tripped it, and nothing is lost
    assert responses == [{"batchItemFailures": []}] * 2
    aborts = audit(archive, "rollout-abort")
    assert len(aborts) == 1
    assert aborts[0]["why"].startswith("guard rail: disagreement rate")
    assert aborts[0]["by"] == "stream:dscloud-stream"
    assert aborts[0]["figures"]["rows_compared"] == 400
    record, after = status(archive, "churn", "production")
    assert after is None and record["version"] == 1
    # both recorded their counts, and both stopped following at once
    recorded = comparison(archive, "churn", "production", rollout)
    assert recorded is not None and recorded.rows_compared == 800
    assert [app.live.following for app in apps] == [None, None]
    assert len(table_items(aws)) == 800


def test_figures_within_the_thresholds_abort_nothing_and_are_recorded_per_window(
    archive: Archive, aws: Aws
) -> None:
    rollout = begin(archive, "canary", 0.2, max_disagreement=1.0, max_error_rate=0.0)
    app = stream_scorer(archive, aws, rollout_window_seconds=60.0)
    assert app.rollouts is not None and app.rollouts.window_seconds == 60.0  # the setting
    now = [0.0]
    app.rollouts.clock = lambda: now[0]
    rows = feature_rows(300, seed=7)

    for t, part in ((0.0, rows[:100]), (30.0, rows[100:200])):
        now[0] = t
        app.handle(event_of(part, prefix=f"t{t:.0f}-"), FakeContext())
    assert audit(archive, "rollout-compare") == []  # the window is not over
    now[0] = 61.0
    app.handle(event_of(rows[200:], prefix="t61-"), FakeContext())

    records = audit(archive, "rollout-compare")
    assert len(records) == 1 and records[0]["rollout_id"] == rollout.id
    recorded = comparison(archive, "churn", "production", rollout)
    assert recorded is not None and recorded.rows_compared == 300
    assert status(archive, "churn", "production")[1] == rollout
    assert audit(archive, "rollout-abort") == []


# -- refused and failing candidates ----------------------------------------------------------


def test_a_candidate_tampered_after_the_start_never_writes(archive: Archive, aws: Aws) -> None:
    # given a canary at 100% whose candidate's bytes change after it was admitted
    begin(archive, "canary", 1.0)
    key = "models/churn/versions/2/model.onnx"
    tagged = archive.store.get_tagged(key)
    assert tagged is not None
    archive.store.swap(key, tagged[0][:-1] + b"\x00", tagged[1])

    app = stream_scorer(archive, aws)
    response = app.handle(event_of(feature_rows(50)), FakeContext())

    assert response == {"batchItemFailures": []}
    assert app.live.following is None and "sha256" in (app.live.last_error or "")
    assert {item["model_version"]["N"] for item in table_items(aws).values()} == {"1"}
    assert audit(archive, "rollout-compare") == []


def test_a_failing_candidate_call_costs_no_record_and_counts_as_its_errors(
    archive: Archive, aws: Aws
) -> None:
    # given a canary at 100% whose candidate crashes on every call
    begin(archive, "canary", 1.0)
    app = stream_scorer(archive, aws)
    _, candidate = sessions(app)
    candidate.fail = True
    rows = feature_rows(120, seed=8)

    response = app.handle(event_of(rows), FakeContext())

    # then the serving version's predictions are written, under its own version
    assert response == {"batchItemFailures": []}
    items = table_items(aws)
    assert len(items) == 120 and {i["model_version"]["N"] for i in items.values()} == {"1"}
    assert app.rollouts is not None and app.rollouts.total is not None
    versions = app.rollouts.total.figures()["versions"]
    assert versions["candidate"]["errors"] == 120 and versions["candidate"]["error_rate"] == 1.0
    assert versions["current"]["errors"] == 0


# -- the seam with the core, and the metrics ------------------------------------------------


def comparable(counts: Comparison) -> dict[str, Any]:
    """The counts without call latencies (two runs never share those)."""
    data = counts.to_dict()
    for version in data["versions"].values():
        del version["latency"]
    return data


def test_the_stream_compares_as_the_core_does_on_the_same_rows(
    archive: Archive, aws: Aws, churn_artifact: Artifact, churn_retrained: Artifact
) -> None:
    begin(archive, "shadow")
    rows = feature_rows(500, seed=9)
    app = stream_scorer(archive, aws)
    for at in range(0, 500, 125):  # four batches
        app.handle(event_of(rows[at : at + 125], prefix=f"b{at}-"), FakeContext())

    direct = Comparison(1, 2)
    direct.add(
        Scorer(churn_artifact).score_records(rows),
        Scorer(churn_retrained).score_records(rows),
        inputs=rows,
    )
    assert app.rollouts is not None and app.rollouts.total is not None
    assert comparable(app.rollouts.total) == comparable(direct)
    assert direct.disagreements > 0


def test_the_lambda_entry_point_publishes_a_window_as_emf_naming_both_versions(
    archive: Archive, aws: Aws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module.metrics.provider, "service", "dsc-recs-dev-scorer")
    begin(archive, "shadow")
    app = stream_scorer(archive, aws, rollout_window_seconds=60.0)
    assert app.rollouts is not None
    now = [0.0]
    app.rollouts.clock = lambda: now[0]
    handler_module.configure(app)
    rows = feature_rows(40, seed=10)
    try:
        handler_module.handler(event_of(rows[:20]), FakeContext())
        now[0] = 61.0
        handler_module.handler(event_of(rows[20:], prefix="f"), FakeContext())
    finally:
        handler_module.configure(None)

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    blobs = [m for m in emf if "RolloutRowsCompared" in m]
    assert len(blobs) == 1
    blob = blobs[0]
    declared = blob["_aws"]["CloudWatchMetrics"][0]
    assert {m["Name"] for m in declared["Metrics"]} == {name for name, _ in ROLLOUT_METRICS}
    assert sorted(declared["Dimensions"][0]) == [
        "candidate_version",
        "current_version",
        "model",
        "service",
    ]
    assert (blob["model"], blob["current_version"], blob["candidate_version"]) == (
        "churn",
        "1",
        "2",
    )
    assert blob["service"] == "dsc-recs-dev-scorer"
    recorded = comparison(archive, "churn", "production", status(archive, "churn", "production")[1])
    assert recorded is not None
    expected = {name: value for name, value, _ in rollout_metrics(recorded)}
    for name, value in expected.items():  # EMF writes a metric's values as a list
        assert blob[name] in (value, [value]), name
    assert expected["RolloutRowsCompared"] == 40
    # the invocation's own metrics keep the one dimension the drift alarms filter on
    others = next(m for m in emf if "RecordsReceived" in m)
    assert others["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


@pytest.mark.parametrize("page", ["docs/rollout.md", "docs/operations.md"])
def test_the_docs_name_every_rollout_metric(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    for name, _ in ROLLOUT_METRICS:
        assert f"`{name}`" in text, f"{page} does not name {name}"


def test_a_batch_split_around_a_crashing_record_is_compared_row_for_row(
    archive: Archive,
    aws: Aws,
    monkeypatch: pytest.MonkeyPatch,
    churn_artifact: Artifact,
    churn_retrained: Artifact,
) -> None:
    # given a record that crashes any scoring call it is in (the handler halves the batch
    # around it, so the serving version's outputs come from several calls)
    score_records = Scorer.score_records

    def scoring(self: Scorer, records: Any) -> Any:
        if any(r.get("tenure_months") == 31337 for r in records):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : crash")
        return score_records(self, records)

    rollout = begin(archive, "canary", 0.5)
    rows = feature_rows(60, seed=11)
    app = stream_scorer(archive, aws)
    monkeypatch.setattr(Scorer, "score_records", scoring)
    batch = [payload(f"e{i}", r) for i, r in enumerate(rows)]
    batch.insert(23, payload("p-crash", {**rows[0], "tenure_months": 31337}))

    assert app.handle(kinesis_event(batch), FakeContext()) == {"batchItemFailures": []}

    # then the candidate compared exactly the 60 written rows, in their order
    monkeypatch.undo()
    direct = Comparison(1, 2)
    candidate_preds = Scorer(churn_retrained).score_records(rows)
    direct.add(Scorer(churn_artifact).score_records(rows), candidate_preds, inputs=rows)
    assert app.rollouts is not None and app.rollouts.total is not None
    assert comparable(app.rollouts.total) == comparable(direct)
    items = table_items(aws)
    assert "p-crash" not in items and len(items) == 60
    for i in range(60):
        if rollout.answers("churn", "production", f"e{i}"):
            item = items[f"e{i}"]
            assert item["model_version"]["N"] == "2"
            assert float(item["score"]["N"]) == pytest.approx(
                float(candidate_preds.probabilities[i][1])
            )
