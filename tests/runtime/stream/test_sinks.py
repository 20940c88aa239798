"""The sinks against in-process moto: what each reports per item."""

from __future__ import annotations

from typing import Any

from dscloud.errors import PayloadError
from dscloud.stream.sinks import WRITTEN, Prediction, PredictionTable
from tests.runtime.stream.conftest import Aws


def prediction(entity_id: str) -> Prediction:
    return Prediction(
        entity_id=entity_id,
        event_time="2024-05-01T12:00:00.000000Z",
        outputs={"label": 1, "probabilities": [0.25, 0.75]},
        score=0.75,
        classes=[0, 1],
        model="churn",
        version=1,
        sha256="0" * 64,
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
