"""A record that only its own bytes make fail is a reject with its payload and reason,
whatever the batch size and whether or not the event source mapping bisects."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from dscloud.archive import Archive
from dscloud.scorer import Scorer
from dscloud.stream import handler as handler_module
from dscloud.stream.local import put_payloads
from dscloud.stream.mapping import EventSourceMapping
from dscloud.stream.runner import EventSourceRunner
from tests.runtime.stream.conftest import (
    Aws,
    FakeContext,
    drain_queue,
    feature_rows,
    kinesis_event,
    payload,
    stream_scorer,
    table_items,
    table_sink,
)

#: A crash no schema rule catches: the scoring call raises whenever this value is in it.
CRASH_TENURE = 31337


@pytest.fixture
def crashing_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime fails a whole call when one record in it has ``CRASH_TENURE``."""
    score_records = Scorer.score_records

    def scoring(self: Scorer, records: Any) -> Any:
        if any(r.get("tenure_months") == CRASH_TENURE for r in records):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : crash")
        return score_records(self, records)

    monkeypatch.setattr(Scorer, "score_records", scoring)


@pytest.fixture
def app(archive: Archive, aws: Aws, crashing_scorer: None) -> Iterator[Any]:
    scorer = stream_scorer(archive, aws)
    table_sink(scorer).sleep = lambda _s: None
    handler_module.configure(scorer)
    yield handler_module.handler
    handler_module.configure(None)


def poisoned(n_good: int) -> tuple[list[bytes], dict[bytes, str]]:
    """``n_good`` valid records with three poison records among them, and the words each
    poison record's reason must contain."""
    rows = feature_rows(n_good + 3)
    good = [payload(f"e{i:04d}", row) for i, row in enumerate(rows[:n_good])]
    surrogate = payload("p-surrogate", {**rows[-1], "region": "\ud800"})
    crash = payload("p-crash", {**rows[-2], "tenure_months": CRASH_TENURE})
    bad_json = b'{"entity_id": "p-json", "features": '
    poison = {surrogate: "surrogate", crash: "RUNTIME_EXCEPTION", bad_json: "JSON"}
    mixed = list(good)
    for k, record in enumerate(poison):
        mixed.insert((k * 7 + 3) % (len(mixed) + 1), record)
    return mixed, poison


@pytest.mark.parametrize("batch_size", [1, 16, 100])
@pytest.mark.parametrize("bisect", [True, False], ids=["bisect", "no-bisect"])
def test_records_that_crash_scoring_are_rejected_with_payload_and_reason(
    aws: Aws, app: Any, batch_size: int, bisect: bool
) -> None:
    # given 40 good records and three that fail on their bytes alone
    mixed, poison = poisoned(40)
    put_payloads(aws.kinesis, aws.stream, mixed)
    mapping = EventSourceMapping(
        batch_size=batch_size,
        bisect_batch_on_error=bisect,
        report_batch_item_failures=True,
        retry_attempts=2,
        on_failure=aws.failures_url,
    )

    # when the local event source mapping drains the stream through the Lambda handler
    report = EventSourceRunner(aws.kinesis, aws.stream, app, mapping, sqs=aws.sqs).run()

    # then every good record is scored, and each poison record is one reject with its bytes
    assert report.stopped == "drained"
    assert set(table_items(aws)) == {f"e{i:04d}" for i in range(40)}
    rejects = drain_queue(aws.sqs, aws.rejects_url)
    by_payload = {base64.b64decode(r["payload_base64"]): r["reason"] for r in rejects}
    assert len(rejects) == len(poison)
    assert set(by_payload) == set(poison)
    for record, word in poison.items():
        assert word in by_payload[record], (record, by_payload[record])
    assert drain_queue(aws.sqs, aws.failures_url) == []


def test_a_broken_runtime_is_retried_not_rejected(
    aws: Aws, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a scorer that crashes on every call, goldens included
    app = stream_scorer(archive, aws)

    def broken(self: Scorer, records: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : session is broken")

    monkeypatch.setattr(Scorer, "score_records", broken)
    monkeypatch.setattr(Scorer, "golden_outputs", broken)
    event = kinesis_event([payload("e1", feature_rows(1)[0]), payload("e2", feature_rows(2)[1])])

    # when / then: the invocation fails (Lambda retries it); nothing is rejected
    with pytest.raises(RuntimeError, match="session is broken"):
        app.handle(event, FakeContext())
    assert drain_queue(aws.sqs, aws.rejects_url) == []
    assert table_items(aws) == {}
