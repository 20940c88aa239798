"""Factories for the stream adapter's tests: moto-backed AWS, records, Kinesis events."""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dscloud import example
from dscloud.archive import Archive
from dscloud.settings import Settings
from dscloud.stream import local
from dscloud.stream.handler import StreamScorer
from dscloud.stream.sinks import PredictionTable

REGION = "us-east-1"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:123456789012:stream/events"


@dataclass
class Aws:
    """moto clients and the resources the online path needs."""

    dynamodb: Any
    sqs: Any
    kinesis: Any
    table: str
    rejects_url: str
    failures_url: str
    stream: str


@pytest.fixture(autouse=True)
def _clear_metrics() -> Iterator[None]:
    """Powertools keeps metrics in shared state; handle() outside the decorator never flushes."""
    yield
    from dscloud.stream.handler import metrics

    metrics.clear_metrics()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def create_resources(dynamodb: Any, sqs: Any, kinesis: Any, *, shards: int = 1) -> Aws:
    """The table, the rejects queue (FIFO), the on-failure queue and the input stream."""
    made = local.create_resources(kinesis=kinesis, dynamodb=dynamodb, sqs=sqs, shards=shards)
    return Aws(
        dynamodb=dynamodb,
        sqs=sqs,
        kinesis=kinesis,
        table=made.table,
        rejects_url=made.rejects_url,
        failures_url=made.failures_url,
        stream=made.stream,
    )


@pytest.fixture
def aws(aws_env: None) -> Iterator[Aws]:
    """In-process moto (``mock_aws``) with the online path's resources created."""
    with mock_aws():
        yield create_resources(
            boto3.client("dynamodb", region_name=REGION),
            boto3.client("sqs", region_name=REGION),
            boto3.client("kinesis", region_name=REGION),
        )


def feature_rows(n: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` valid churn feature dicts (JSON-ready: NaN becomes null)."""
    frame = example.churn_data(n, seed=seed)[example.FEATURES]
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def payload(
    entity_id: str, features: dict[str, Any], event_time: str = "2024-05-01T12:00:00Z"
) -> bytes:
    """One record as a producer puts it on the stream."""
    return json.dumps(
        {"entity_id": entity_id, "features": features, "event_time": event_time}
    ).encode()


#: Records no retry can fix, each with a word its reason must contain.
POISON: list[tuple[bytes, str]] = [
    (b"{not json", "JSON"),
    (b'["a", "list"]', "object"),
    (json.dumps({"entity_id": "p-missing", "features": {}}).encode(), "event_time"),
    (payload("p-schema", {"tenure_months": "twelve"}), "tenure_months"),
    (payload("p-time", feature_rows(1)[0], "yesterday"), "ISO-8601"),
]


def mixed_payloads(n_good: int, *, seed: int = 1) -> tuple[list[bytes], set[str]]:
    """``n_good`` valid records (entities ``e0000``...) with the poison records mixed in."""
    good = [payload(f"e{i:04d}", row) for i, row in enumerate(feature_rows(n_good, seed=seed))]
    mixed = list(good)
    for k, (poison, _) in enumerate(POISON):
        mixed.insert(min(len(mixed), 1 + k * max(1, n_good // len(POISON))), poison)
    return mixed, {f"e{i:04d}" for i in range(n_good)}


def kinesis_event(
    payloads: Sequence[bytes],
    *,
    shard_id: str = "shardId-000000000000",
    first_sequence: int = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000,
    arn: str = STREAM_ARN,
) -> dict[str, Any]:
    """A Lambda event for ``payloads`` as Kinesis delivers them (base64 data)."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": f"pk-{i}",
                    "sequenceNumber": str(first_sequence + i),
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": 1714564800.0 + i,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{first_sequence + i}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/scorer",
                "awsRegion": REGION,
                "eventSourceARN": arn,
            }
            for i, data in enumerate(payloads)
        ]
    }


class FakeContext:
    """The parts of Lambda's context object that Powertools and the handler read."""

    function_name = "dsc-stream-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:dsc-stream-test"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/dsc-stream-test"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def stream_scorer(
    archive: Archive, aws: Aws, *, dynamodb: Any = None, **settings: Any
) -> StreamScorer:
    """A :class:`StreamScorer` on ``churn@production`` writing to ``aws``'s resources."""
    return StreamScorer.from_settings(
        Settings(
            archive=archive.uri,
            models=("churn@production",),
            predictions_table=aws.table,
            rejects_queue_url=aws.rejects_url,
            **settings,
        ),
        dynamodb=dynamodb or aws.dynamodb,
        sqs=aws.sqs,
        kinesis=aws.kinesis,
    )


def table_sink(app: StreamScorer) -> PredictionTable:
    """The scorer's predictions-table sink (to shorten its retries in tests)."""
    return next(s for s in app.sinks if isinstance(s, PredictionTable))


def table_items(aws: Aws) -> dict[str, dict[str, Any]]:
    """Every item of the predictions table by entity_id (low-level attribute values)."""
    items: dict[str, dict[str, Any]] = {}
    for page in aws.dynamodb.get_paginator("scan").paginate(TableName=aws.table):
        for item in page["Items"]:
            items[item["entity_id"]["S"]] = item
    return items


def drain_queue(sqs: Any, url: str, *, limit: int = 10_000) -> list[dict[str, Any]]:
    """Receive and delete every message of ``url`` (bodies parsed as JSON)."""
    bodies: list[dict[str, Any]] = []
    for _ in range(limit // 10 + 1):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = got.get("Messages", [])
        if not messages:
            break
        for m in messages:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return bodies


class Throttling:
    """Wraps a DynamoDB client: ``put_item`` raises throttling for the calls ``fail`` picks."""

    def __init__(self, client: Any, fail: Any) -> None:
        self._client = client
        self._fail = fail
        self.calls = 0
        self.throttled = 0
        self.exceptions = client.exceptions
        self._lock = threading.Lock()

    def put_item(self, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            fail = self._fail(self.calls, kwargs)
            self.throttled += bool(fail)
        if fail:
            from botocore.exceptions import ClientError

            raise ClientError(
                {
                    "Error": {
                        "Code": "ProvisionedThroughputExceededException",
                        "Message": "injected throttling",
                    }
                },
                "PutItem",
            )
        return self._client.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
