"""The sinks against in-process moto: what each reports per item."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from dscloud.envelope import ModelIdentity
from dscloud.errors import PayloadError
from dscloud.stream.sinks import (
    WRITTEN,
    OutputStream,
    Prediction,
    PredictionTable,
    Reject,
    RejectsQueue,
)
from tests.runtime.stream.conftest import Aws, drain_queue


def prediction(entity_id: str) -> Prediction:
    return Prediction(
        entity_id=entity_id,
        event_time="2024-05-01T12:00:00.000000Z",
        outputs={"label": 1, "probabilities": [0.25, 0.75]},
        score=0.75,
        classes=[0, 1],
        model=ModelIdentity(name="churn", version=1, sha256="0" * 64),
        shard_id="shardId-000000000000",
        sequence_number="1",
        scored_at="2024-05-01T12:00:01.000Z",
    )


class CountingPuts:
    """Wraps a DynamoDB client and counts ``put_item`` calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls = 0

    def put_item(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self._client.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_put_dynamodb_refuses_as_invalid_is_a_payload_error_not_retried(aws: Aws) -> None:
    # given: a key of 2100 bytes of UTF-8 (700 characters), over DynamoDB's 2048
    client = CountingPuts(aws.dynamodb)
    table = PredictionTable(client, aws.table, attempts=3, sleep=lambda _s: None)
    # when
    ok, refused = table.write([prediction("e1"), prediction("\u4e2d" * 700)])
    # then
    assert ok == WRITTEN
    assert isinstance(refused, PayloadError)
    assert refused.field == "entity_id"
    assert "entity_id" in str(refused)
    assert client.calls == 2  # one put each: the refused one is not retried


def reject(
    payload: bytes, sequence_number: str = "1", reason: str = "record is not JSON"
) -> Reject:
    return Reject(
        reason=reason,
        payload=payload,
        event_source_arn="arn:aws:kinesis:us-east-1:123456789012:stream/events",
        shard_id="shardId-000000000000",
        sequence_number=sequence_number,
        partition_key="pk",
        entity_id="e1",
        model={"name": "churn", "version": 1, "sha256": "0" * 64},
    )


def test_a_body_too_long_for_the_queue_is_sent_with_the_payload_truncated(aws: Aws) -> None:
    # given: a queue that takes messages of at most 1 KiB, and a reject of 5,000 bytes
    url = aws.sqs.create_queue(
        QueueName="small-rejects", Attributes={"MaximumMessageSize": "1024"}
    )["QueueUrl"]
    data = bytes(range(256)) * 20
    # when
    outcomes = RejectsQueue(aws.sqs, url).send([reject(data, reason="x" * 5000)])
    # then
    assert outcomes == [None]
    (body,) = drain_queue(aws.sqs, url)
    assert body["payload_base64"] is None
    assert body["payload_truncated"] is True
    assert body["payload_bytes"] == len(data)
    assert body["payload_sha256"] == hashlib.sha256(data).hexdigest()
    prefix = base64.b64decode(body["payload_prefix_base64"])
    assert prefix and data.startswith(prefix)
    assert body["reason"].startswith("xxx")
    assert body["source"]["sequence_number"] == "1"


@pytest.mark.parametrize("max_bytes", [1024, 4096, 300_000])
def test_a_body_is_never_longer_than_asked(max_bytes: int) -> None:
    r = reject(b"\xff" * 200_000, reason="\u4e2d" * 3000)
    assert len(r.to_body(max_bytes=max_bytes).encode()) <= max_bytes


def test_the_output_stream_reports_each_record_written_or_its_error(aws: Aws) -> None:
    aws.kinesis.create_stream(StreamName="scores", ShardCount=1)
    stream = OutputStream(aws.kinesis, "scores")
    missing = OutputStream(aws.kinesis, "no-such-stream")

    assert stream.write([prediction("e1"), prediction("e2")]) == [WRITTEN, WRITTEN]
    errors = missing.write([prediction("e1")])
    assert len(errors) == 1
    assert isinstance(errors[0], Exception)
    assert "ResourceNotFoundException" in str(errors[0])
