"""The Lambda handler against in-process moto: outcomes per record, faults, idempotency."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from dscloud.archive import Archive
from dscloud.errors import PayloadError
from dscloud.stream import handler as handler_module
from dscloud.stream.sinks import WRITTEN
from tests.runtime.stream.conftest import (
    POISON,
    Aws,
    FakeContext,
    Throttling,
    drain_queue,
    feature_rows,
    kinesis_event,
    mixed_payloads,
    payload,
    stream_scorer,
    table_items,
    table_sink,
)


def failed_sequences(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_valid_records_are_scored_and_written(archive: Archive, aws: Aws) -> None:
    # given
    rows = feature_rows(20)
    event = kinesis_event([payload(f"e{i}", r) for i, r in enumerate(rows)])
    app = stream_scorer(archive, aws)
    # when
    response = app.handle(event, FakeContext())
    # then
    assert response == {"batchItemFailures": []}
    items = table_items(aws)
    assert sorted(items) == sorted(f"e{i}" for i in range(20))
    expected = app.live.scorer.score_records(rows)
    item = items["e3"]
    assert float(item["score"]["N"]) == pytest.approx(float(expected.probabilities[3][1]))
    assert int(item["label"]["N"]) == int(expected.label[3])
    assert set(item["probabilities"]["M"]) == {"0", "1"}
    assert item["model_name"]["S"] == "churn"
    assert item["model_version"]["N"] == "1"
    assert item["model_sha256"]["S"] == app.live.scorer.sha256
    assert item["event_time"]["S"] == "2024-05-01T12:00:00.000000Z"
    assert item["sequence_number"]["S"] == event["Records"][3]["kinesis"]["sequenceNumber"]


def test_poison_records_go_to_rejects_with_reason_and_payload(archive: Archive, aws: Aws) -> None:
    mixed, good = mixed_payloads(10)
    response = stream_scorer(archive, aws).handle(kinesis_event(mixed), FakeContext())

    assert response == {"batchItemFailures": []}
    assert set(table_items(aws)) == good
    rejects = drain_queue(aws.sqs, aws.rejects_url)
    assert len(rejects) == len(POISON)
    by_payload = {base64.b64decode(r["payload_base64"]): r for r in rejects}
    for poison, word in POISON:
        assert word in by_payload[poison]["reason"]
        assert by_payload[poison]["model"]["version"] == 1
        assert by_payload[poison]["source"]["shard_id"] == "shardId-000000000000"


def test_bad_base64_is_a_reject(archive: Archive, aws: Aws) -> None:
    event = kinesis_event([payload("e1", feature_rows(1)[0])])
    event["Records"][0]["kinesis"]["data"] = "%%%not-base64%%%"
    response = stream_scorer(archive, aws).handle(event, FakeContext())
    assert response == {"batchItemFailures": []}
    assert len(drain_queue(aws.sqs, aws.rejects_url)) == 1


def test_throttled_writes_are_reported_from_the_first_failure(archive: Archive, aws: Aws) -> None:
    # given: every put for entity e5 is throttled, including the in-invocation retries
    throttled = Throttling(aws.dynamodb, lambda _n, kw: kw["Item"]["entity_id"]["S"] == "e5")
    mixed = [payload(f"e{i}", r) for i, r in enumerate(feature_rows(10))]
    mixed.insert(8, POISON[0][0])  # a reject after the failure: deferred, not sent twice
    mixed.insert(2, POISON[1][0])  # a reject before it: sent now
    event = kinesis_event(mixed)
    app = stream_scorer(archive, aws, dynamodb=throttled)
    table_sink(app).sleep = lambda _s: None
    # when
    response = app.handle(event, FakeContext())
    # then: only e5 is reported; Lambda redelivers from it
    e5_seq = next(
        r["kinesis"]["sequenceNumber"]
        for r in event["Records"]
        if b'"e5"' in base64.b64decode(r["kinesis"]["data"])
    )
    assert failed_sequences(response) == [e5_seq]
    assert throttled.throttled == table_sink(app).attempts
    assert "e5" not in table_items(aws)
    assert len(drain_queue(aws.sqs, aws.rejects_url)) == 1


def test_throttling_that_clears_is_absorbed_by_in_invocation_retries(
    archive: Archive, aws: Aws
) -> None:
    throttled = Throttling(aws.dynamodb, lambda n, _kw: n <= 5)
    app = stream_scorer(archive, aws, dynamodb=throttled)
    table_sink(app).sleep = lambda _s: None
    rows = feature_rows(12)
    response = app.handle(kinesis_event([payload(f"e{i}", r) for i, r in enumerate(rows)]), None)
    assert response == {"batchItemFailures": []}
    assert throttled.throttled == 5
    assert len(table_items(aws)) == 12


def test_an_entirely_throttled_batch_is_reported_not_raised(archive: Archive, aws: Aws) -> None:
    app = stream_scorer(archive, aws, dynamodb=Throttling(aws.dynamodb, lambda _n, _kw: True))
    table_sink(app).sleep = lambda _s: None
    event = kinesis_event([payload(f"e{i}", r) for i, r in enumerate(feature_rows(3))])
    response = app.handle(event, FakeContext())
    assert failed_sequences(response) == [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


def test_duplicate_delivery_is_idempotent(archive: Archive, aws: Aws) -> None:
    mixed, good = mixed_payloads(8)
    event = kinesis_event(mixed)
    app = stream_scorer(archive, aws)
    first = app.handle(event, FakeContext())
    before = table_items(aws)
    second = app.handle(event, FakeContext())  # the same batch again
    after = table_items(aws)

    assert first == second == {"batchItemFailures": []}
    assert set(after) == good
    strip = {"scored_at"}
    assert {k: {a: v for a, v in i.items() if a not in strip} for k, i in before.items()} == {
        k: {a: v for a, v in i.items() if a not in strip} for k, i in after.items()
    }
    assert len(drain_queue(aws.sqs, aws.rejects_url)) == len(POISON)  # FIFO dedup


def test_an_older_event_never_overwrites_a_newer_one(archive: Archive, aws: Aws) -> None:
    old, new = feature_rows(2)
    app = stream_scorer(archive, aws)
    app.handle(kinesis_event([payload("e1", new, "2024-05-02T00:00:00Z")]), None)
    newer_score = table_items(aws)["e1"]["score"]
    # a late record for the same entity, from an earlier time (and a zone offset)
    late = kinesis_event([payload("e1", old, "2024-05-01T23:00:00-00:30")], first_sequence=7)
    assert app.handle(late, None) == {"batchItemFailures": []}
    item = table_items(aws)["e1"]
    assert item["score"] == newer_score
    assert item["event_time"]["S"] == "2024-05-02T00:00:00.000000Z"


def test_within_a_batch_the_newest_event_per_entity_wins(archive: Archive, aws: Aws) -> None:
    a, b, c = feature_rows(3)
    event = kinesis_event(
        [
            payload("e1", a, "2024-05-01T10:00:00Z"),
            payload("e1", b, "2024-05-01T12:00:00Z"),
            payload("e1", c, "2024-05-01T11:00:00Z"),
        ]
    )
    app = stream_scorer(archive, aws)
    assert app.handle(event, None) == {"batchItemFailures": []}
    item = table_items(aws)["e1"]
    assert item["sequence_number"]["S"] == event["Records"][1]["kinesis"]["sequenceNumber"]


def test_output_stream_gets_the_written_predictions(archive: Archive, aws: Aws) -> None:
    aws.kinesis.create_stream(StreamName="scores", ShardCount=1)
    app = stream_scorer(archive, aws, output_stream="scores")
    rows = feature_rows(4)
    app.handle(kinesis_event([payload(f"e{i}", r) for i, r in enumerate(rows)]), None)
    shard = aws.kinesis.list_shards(StreamName="scores")["Shards"][0]["ShardId"]
    it = aws.kinesis.get_shard_iterator(
        StreamName="scores", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out = [json.loads(r["Data"]) for r in aws.kinesis.get_records(ShardIterator=it)["Records"]]
    assert sorted(o["entity_id"] for o in out) == ["e0", "e1", "e2", "e3"]
    assert all(o["model"]["name"] == "churn" and 0 <= o["score"] <= 1 for o in out)


def test_the_alias_is_followed_after_the_refresh_interval(
    archive: Archive, aws: Aws, churn_artifact: Any
) -> None:
    now = [0.0]
    app = stream_scorer(archive, aws, refresh_seconds=30.0)
    app.clock = lambda: now[0]
    app._refreshed_at = 0.0
    archive.publish(churn_artifact.envelope, churn_artifact.model)
    archive.promote("churn", 2, "production", by="tests")
    event = kinesis_event([payload("e1", feature_rows(1)[0])])

    now[0] = 10.0
    app.handle(event, None)
    assert table_items(aws)["e1"]["model_version"]["N"] == "1"
    now[0] = 31.0
    app.handle(event, None)
    assert table_items(aws)["e1"]["model_version"]["N"] == "2"


def test_the_lambda_entry_point_uses_the_configured_scorer(
    archive: Archive, aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    handler_module.configure(stream_scorer(archive, aws))
    handler_module.metrics.clear_metrics()
    try:
        event = kinesis_event([payload("e1", feature_rows(1)[0]), b"{bad"])
        response = handler_module.handler(event, FakeContext())
    finally:
        handler_module.configure(None)
    assert response == {"batchItemFailures": []}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    written = [m["PredictionsWritten"] for m in emf if "PredictionsWritten" in m]
    assert written in ([1.0], [[1.0]])


def test_settings_without_a_table_are_refused(archive: Archive, aws: Aws) -> None:
    from dscloud.errors import ConfigError
    from dscloud.settings import Settings
    from dscloud.stream.handler import StreamScorer

    with pytest.raises(ConfigError, match="DSC_PREDICTIONS_TABLE"):
        StreamScorer.from_settings(
            Settings(archive=archive.uri, models=("churn@production",)),
            dynamodb=aws.dynamodb,
            sqs=aws.sqs,
        )


@pytest.mark.parametrize(
    ("data", "word"),
    [
        (payload("p-range", feature_rows(1)[0], "9999-12-31T23:59:59-01:00"), "event_time"),
        (
            payload("p-digits", {"tenure_months": 0}).replace(b"0}", b"1" * 5000 + b"}"),
            "cannot be decoded",
        ),
    ],
    ids=["event-time-out-of-range", "json-value-error"],
)
def test_a_record_that_fails_to_decode_is_rejected_not_retried(
    archive: Archive, aws: Aws, data: bytes, word: str
) -> None:
    # given: the bad record sits between two good ones
    rows = feature_rows(2)
    event = kinesis_event([payload("e0", rows[0]), data, payload("e1", rows[1])])
    # when
    response = stream_scorer(archive, aws).handle(event, FakeContext())
    # then: nothing blocks the shard, the good records are written, the bad one is a reject
    assert response == {"batchItemFailures": []}
    assert set(table_items(aws)) == {"e0", "e1"}
    (reject,) = drain_queue(aws.sqs, aws.rejects_url)
    assert word in reject["reason"]
    assert base64.b64decode(reject["payload_base64"]) == data


def test_an_entity_id_over_the_key_limit_in_bytes_is_rejected_not_retried(
    archive: Archive, aws: Aws
) -> None:
    # given: 700 characters, but 2100 bytes of UTF-8 (DynamoDB's key limit is 2048 bytes)
    rows = feature_rows(2)
    long_id = "\u4e2d" * 700
    event = kinesis_event([payload("e0", rows[0]), payload(long_id, rows[1])])
    # when
    response = stream_scorer(archive, aws).handle(event, FakeContext())
    # then
    assert response == {"batchItemFailures": []}
    assert set(table_items(aws)) == {"e0"}
    (reject,) = drain_queue(aws.sqs, aws.rejects_url)
    assert "entity_id" in reject["reason"]


def test_several_large_poison_records_are_all_rejected_with_their_payloads(
    archive: Archive, aws: Aws
) -> None:
    # given: six records of 180 KB that are not JSON; their bodies (~240 KB each) add up
    # to more than SQS's 1 MiB batch limit
    poison = [bytes([65 + k]) * 180_000 for k in range(6)]
    event = kinesis_event([payload("e0", feature_rows(1)[0]), *poison])
    # when
    response = stream_scorer(archive, aws).handle(event, FakeContext())
    # then
    assert response == {"batchItemFailures": []}
    rejects = drain_queue(aws.sqs, aws.rejects_url)
    assert sorted(base64.b64decode(r["payload_base64"]) for r in rejects) == poison


class Recording:
    """A third sink (a topic, say): one class with ``write`` is all a new output needs.

    Keeps what it is given; refuses ``refuse`` as invalid and fails ``fail`` transiently.
    """

    def __init__(self, *, refuse: str = "", fail: str = "") -> None:
        self.got: list[str] = []
        self.refuse, self.fail = refuse, fail

    def write(self, predictions: Any, *, deadline: float | None = None) -> list[Any]:
        outcomes: list[Any] = []
        for p in predictions:
            self.got.append(p.entity_id)
            if p.entity_id == self.refuse:
                outcomes.append(PayloadError("the topic refuses it", field="entity_id"))
            elif p.entity_id == self.fail:
                outcomes.append(RuntimeError("the topic is down"))
            else:
                outcomes.append(WRITTEN)
        return outcomes


def test_a_new_sink_gets_what_the_table_wrote_and_its_outcomes_are_the_records(
    archive: Archive, aws: Aws
) -> None:
    # given the table, then a new sink that refuses e2 and fails e4 transiently
    app = stream_scorer(archive, aws)
    topic = Recording(refuse="e2", fail="e4")
    app.sinks.append(topic)
    # a stale record (e0's event is older than what the table holds) and a superseded one
    rows = feature_rows(6)
    app.handle(kinesis_event([payload("e0", rows[0], event_time="2030-01-01T00:00:00Z")]), None)
    topic.got.clear()
    records = [payload(f"e{i}", r) for i, r in enumerate(rows)]
    records.insert(4, payload("e3", rows[0]))  # e3 again, later: the first e3 is superseded
    event = kinesis_event(records)

    # when
    response = app.handle(event, FakeContext())

    # then the sink got what the table wrote, in order: not stale e0, not the first e3
    assert topic.got == ["e1", "e2", "e3", "e4", "e5"]
    # its invalid item is a reject with its reason; its transient failure is retried from e4
    bodies = drain_queue(aws.sqs, aws.rejects_url)
    assert [(b["entity_id"], b["reason"]) for b in bodies] == [("e2", "the topic refuses it")]
    e4 = next(r for r in event["Records"] if b'"e4"' in base64.b64decode(r["kinesis"]["data"]))
    assert failed_sequences(response) == [e4["kinesis"]["sequenceNumber"]]
    assert set(table_items(aws)) == {"e0", "e1", "e2", "e3", "e4", "e5"}


def test_sinks_run_in_order_and_a_stale_write_goes_no_further(archive: Archive, aws: Aws) -> None:
    app = stream_scorer(archive, aws)
    first, second = Recording(), Recording()
    app.sinks.extend([first, second])
    row = feature_rows(1)[0]
    app.handle(kinesis_event([payload("e1", row, event_time="2030-01-01T00:00:00Z")]), None)

    app.handle(kinesis_event([payload("e1", row, event_time="2029-01-01T00:00:00Z")]), None)

    assert first.got == second.got == ["e1"]  # the older event stopped at the table
