"""The local event source mapping against moto, with faults injected.

Every run ends with the same audit: each record put is in the predictions table, in the
rejects queue with a reason, or inside a range sent to the on-failure queue; no reject is
sent twice; and each shard's checkpoint is its last record.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dscloud.archive import Archive
from dscloud.errors import ConfigError
from dscloud.stream import handler as handler_module
from dscloud.stream.local import put_payloads
from dscloud.stream.mapping import EventSourceMapping, ShardRecord
from dscloud.stream.runner import EventSourceRunner, RunReport, _failed_from, load_handler
from tests.runtime.stream.conftest import (
    POISON,
    Aws,
    Throttling,
    drain_queue,
    feature_rows,
    mixed_payloads,
    payload,
    stream_scorer,
    table_items,
    table_sink,
)

SAFE = EventSourceMapping(
    batch_size=10,
    bisect_batch_on_error=True,
    report_batch_item_failures=True,
    retry_attempts=5,
)


@dataclass
class Audit:
    table: dict[str, dict[str, Any]]
    rejects: list[dict[str, Any]]
    given_up: list[dict[str, Any]]
    in_range: set[str] = field(default_factory=set)


Put = tuple[str, str]  # (shard_id, sequence_number)


def audit(aws: Aws, puts: list[Put], report: RunReport, payloads: list[bytes]) -> Audit:
    """Check that no record is lost or rejected twice and checkpoints reached the end.

    A record is accounted for when it is the table's item for its entity, or the table
    holds a newer one for that entity (it was superseded), or it is in the rejects queue,
    or inside a range given up on.
    """
    table = table_items(aws)
    rejects = drain_queue(aws.sqs, aws.rejects_url)
    given_up = drain_queue(aws.sqs, aws.failures_url)
    written = {(i["shard_id"]["S"], i["sequence_number"]["S"]) for i in table.values()}
    rejected = [(r["source"]["shard_id"], r["source"]["sequence_number"]) for r in rejects]
    assert len(rejected) == len(set(rejected)), "a reject was sent twice"
    assert not written & set(rejected), "a record is both written and rejected"
    in_range: set[Put] = set()
    for message in given_up:
        info = message["KinesisBatchInfo"]
        lo, hi = int(info["startSequenceNumber"]), int(info["endSequenceNumber"])
        in_range |= {p for p in puts if p[0] == info["shardId"] and lo <= int(p[1]) <= hi}
    superseded = set()
    for put, data in zip(puts, payloads, strict=True):
        item = table.get(_entity(data) or "")
        if item is not None and int(item["sequence_number"]["S"]) > int(put[1]):
            superseded.add(put)
    lost = set(puts) - written - set(rejected) - in_range - superseded
    assert not lost, f"{len(lost)} records neither written, rejected nor given up on"
    for shard in report.shards.values():
        assert shard.checkpoint == max((p[1] for p in puts if p[0] == shard.shard_id), key=int)
    assert report.stopped == "drained"
    return Audit(table, rejects, given_up, in_range)


def _entity(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc.get("entity_id") if isinstance(doc, dict) else None


@pytest.fixture
def scorer_handler(archive: Archive, aws: Aws) -> Any:
    """The real Lambda entry point, configured with a moto-backed scorer."""
    app = stream_scorer(archive, aws)
    table_sink(app).sleep = lambda _s: None
    handler_module.configure(app)
    yield handler_module.handler
    handler_module.configure(None)


def runner(aws: Aws, handler: Any, mapping: EventSourceMapping = SAFE, **kw: Any) -> Any:
    return EventSourceRunner(aws.kinesis, aws.stream, handler, mapping, sqs=aws.sqs, **kw)


def with_failures_queue(aws: Aws, mapping: EventSourceMapping) -> EventSourceMapping:
    return EventSourceMapping(**{**mapping.__dict__, "on_failure": aws.failures_url})


def test_poison_records_and_throttling(archive: Archive, aws: Aws) -> None:
    # given: 60 records with poison mixed in, and a table that throttles every 7th put
    mixed, good = mixed_payloads(60)
    sequences = put_payloads(aws.kinesis, aws.stream, mixed)
    throttled = Throttling(aws.dynamodb, lambda n, _kw: n % 7 == 0)
    app = stream_scorer(archive, aws, dynamodb=throttled)
    table_sink(app).attempts = 1  # no in-invocation retry: every throttle reaches the runner
    handler_module.configure(app)
    try:
        # when
        report = runner(aws, handler_module.handler, with_failures_queue(aws, SAFE)).run()
    finally:
        handler_module.configure(None)
    # then
    result = audit(aws, sequences, report, mixed)
    assert throttled.throttled > 0
    assert report.shards["shardId-000000000000"].retries > 0
    assert set(result.table) == good
    assert len(result.rejects) == len(POISON)
    assert result.given_up == []


def test_a_crash_after_side_effects_is_retried_without_duplicates(
    aws: Aws, scorer_handler: Any
) -> None:
    # given: the first three invocations die after doing their work (before returning)
    mixed, good = mixed_payloads(40)
    sequences = put_payloads(aws.kinesis, aws.stream, mixed)
    calls = [0]

    def crashing(event: dict[str, Any], context: Any) -> Any:
        calls[0] += 1
        response = scorer_handler(event, context)
        if calls[0] <= 3:
            raise RuntimeError("the container died before answering")
        return response

    # when
    report = runner(aws, crashing, with_failures_queue(aws, SAFE)).run()
    # then
    result = audit(aws, sequences, report, mixed)
    assert set(result.table) == good
    assert len(result.rejects) == len(POISON)  # re-sent after each crash, deduplicated
    assert report.shards["shardId-000000000000"].bisections > 0


def test_a_record_that_always_crashes_is_isolated_and_given_up_on(
    aws: Aws, scorer_handler: Any
) -> None:
    # given: a record that kills the handler whenever it is in the batch
    rows = feature_rows(30)
    payloads = [payload(f"e{i:04d}", r) for i, r in enumerate(rows)]
    payloads.insert(13, payload("boom", rows[0]))
    sequences = put_payloads(aws.kinesis, aws.stream, payloads)

    def crashing(event: dict[str, Any], context: Any) -> Any:
        if any(b'"boom"' in base64.b64decode(r["kinesis"]["data"]) for r in event["Records"]):
            raise MemoryError("out of memory")
        return scorer_handler(event, context)

    mapping = with_failures_queue(aws, EventSourceMapping(**{**SAFE.__dict__, "retry_attempts": 2}))
    # when
    report = runner(aws, crashing, mapping).run()
    # then: bisection narrowed it down to exactly that record, all others were scored
    result = audit(aws, sequences, report, payloads)
    assert result.in_range == {sequences[13]}
    assert result.given_up[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert len(result.table) == 30


def test_duplicate_delivery_changes_nothing(aws: Aws, scorer_handler: Any) -> None:
    # given: a producer that sent everything twice, and a mapping replayed from the start
    mixed, good = mixed_payloads(25)
    sequences = put_payloads(aws.kinesis, aws.stream, mixed + mixed)
    first = runner(aws, scorer_handler).run()
    before = {k: v["score"] for k, v in table_items(aws).items()}
    # when
    again = runner(aws, scorer_handler).run()  # no checkpoint: TRIM_HORIZON again
    # then
    assert first.records == again.records == len(sequences)
    result = audit(aws, sequences, again, mixed + mixed)
    assert {k: v["score"] for k, v in result.table.items()} == before
    assert set(result.table) == good
    # each poison record was put twice (two sequence numbers): one reject each, no more
    assert len(result.rejects) == 2 * len(POISON)


def test_old_records_skip_the_function(aws: Aws, scorer_handler: Any) -> None:
    mixed = mixed_payloads(12)[0]
    sequences = put_payloads(aws.kinesis, aws.stream, mixed)
    mapping = with_failures_queue(
        aws, EventSourceMapping(**{**SAFE.__dict__, "max_record_age": 60})
    )
    future = runner(aws, scorer_handler, mapping, clock=lambda: 4_000_000_000.0)

    report = future.run()

    result = audit(aws, sequences, report, mixed)
    assert result.table == {}
    assert result.in_range == set(sequences)
    assert {m["requestContext"]["condition"] for m in result.given_up} == {"RecordAgeExceeded"}
    assert report.invocations == 0


def test_two_shards_with_a_parallelization_factor(archive: Archive, aws: Aws) -> None:
    aws.kinesis.delete_stream(StreamName=aws.stream)
    aws.kinesis.create_stream(StreamName=aws.stream, ShardCount=2)
    mixed, good = mixed_payloads(50)
    sequences = put_payloads(aws.kinesis, aws.stream, mixed)
    seen_lanes: list[set[str]] = []

    app = stream_scorer(archive, aws)
    handler_module.configure(app)

    def spying(event: dict[str, Any], context: Any) -> Any:
        seen_lanes.append({r["kinesis"]["partitionKey"] for r in event["Records"]})
        return handler_module.handler(event, context)

    try:
        mapping = EventSourceMapping(**{**SAFE.__dict__, "parallelization_factor": 3})
        report = runner(aws, spying, mapping).run()
    finally:
        handler_module.configure(None)

    result = audit(aws, sequences, report, mixed)
    assert len(report.shards) == 2
    assert set(result.table) == good
    # each batch holds one lane's partition keys (lane = hash of the key modulo 3)
    lanes = [
        {int(hashlib.md5(k.encode()).hexdigest(), 16) % 3 for k in keys} for keys in seen_lanes
    ]
    assert all(len(lane) == 1 for lane in lanes)
    assert {lane.pop() for lane in lanes} == {0, 1, 2}


def test_checkpoints_resume_where_a_stopped_run_left_off(
    aws: Aws, scorer_handler: Any, tmp_path: Path
) -> None:
    mixed, good = mixed_payloads(35)
    sequences = put_payloads(aws.kinesis, aws.stream, mixed)
    checkpoint = tmp_path / "checkpoints.json"

    stopped = runner(aws, scorer_handler, checkpoint_file=checkpoint).run(max_invocations=2)
    assert stopped.stopped == "limit"
    resumed = runner(aws, scorer_handler, checkpoint_file=checkpoint).run()

    assert stopped.records + resumed.records == len(sequences)
    result = audit(aws, sequences, resumed, mixed)
    assert set(result.table) == good
    saved = json.loads(checkpoint.read_text())
    assert next(iter(saved.values()))["shardId-000000000000"] == sequences[-1][1]


def test_batch_item_failures_follow_aws_rules() -> None:
    records = [ShardRecord("s", str(n), "k", b"", 0.0) for n in (10, 11, 12)]
    assert _failed_from(records, {"batchItemFailures": []}) is None
    assert _failed_from(records, None) is None
    assert _failed_from(records, {"batchItemFailures": [{"itemIdentifier": "12"}]}) == 2
    two = {"batchItemFailures": [{"itemIdentifier": "12"}, {"itemIdentifier": "11"}]}
    assert _failed_from(records, two) == 1
    # an identifier that is not in the batch (or empty) fails the whole batch
    assert _failed_from(records, {"batchItemFailures": [{"itemIdentifier": "99"}]}) == 0
    assert _failed_from(records, {"batchItemFailures": [{"itemIdentifier": ""}]}) == 0


def test_mapping_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        EventSourceMapping(batch_size=0)
    with pytest.raises(ConfigError, match="parallelization_factor"):
        EventSourceMapping(parallelization_factor=11)
    with pytest.raises(ConfigError, match="starting_position"):
        EventSourceMapping(starting_position="EARLIEST")
    with pytest.raises(ConfigError, match=r"package\.module\.function"):
        load_handler("dscloud.stream.nothing_here")
    assert load_handler("dscloud.stream.handler.handler") is handler_module.handler
