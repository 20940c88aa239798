"""The online path's resources on a laptop (moto server) or a sandbox account, and a
producer: what ``dsc stream create`` and ``dsc stream put`` do, and what tests, the demo
and the benchmark build on.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_sqs import SQSClient

__all__ = ["LocalResources", "create_resources", "put_payloads", "read_queue", "scan_table"]


@dataclass(frozen=True)
class LocalResources:
    """Names and URLs of what :func:`create_resources` made."""

    stream: str
    table: str
    rejects_url: str
    failures_url: str

    def to_dict(self) -> dict[str, str]:
        return {
            "stream": self.stream,
            "table": self.table,
            "rejects_queue_url": self.rejects_url,
            "failures_queue_url": self.failures_url,
        }


def create_resources(
    *,
    kinesis: KinesisClient,
    dynamodb: DynamoDBClient,
    sqs: SQSClient,
    stream: str = "events",
    shards: int = 1,
    table: str = "predictions",
    rejects_queue: str = "rejects.fifo",
    failures_queue: str = "stream-failures",
    wait_seconds: float = 30.0,
) -> LocalResources:
    """Create the input stream, the predictions table (keyed by ``entity_id``), the rejects
    queue (FIFO when its name ends in ``.fifo``) and the on-failure queue; returns them.

    Waits (at most ``wait_seconds``) until the stream is ACTIVE. Existing resources of the
    same names are reused.
    """
    with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName=stream, ShardCount=shards)
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "entity_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "entity_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    attributes: dict[Any, str] = {"FifoQueue": "true"} if rejects_queue.endswith(".fifo") else {}
    rejects_url = sqs.create_queue(QueueName=rejects_queue, Attributes=attributes)["QueueUrl"]
    failures_url = sqs.create_queue(QueueName=failures_queue)["QueueUrl"]
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        summary = kinesis.describe_stream_summary(StreamName=stream)
        if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.2)
    return LocalResources(stream, table, rejects_url, failures_url)


def put_payloads(
    kinesis: KinesisClient,
    stream: str,
    payloads: Sequence[bytes],
    *,
    partition_keys: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Put ``payloads`` in order (500 per call, retrying refused records a few times);
    returns the ``(shard_id, sequence_number)`` of each. The partition key defaults to the record's
    ``entity_id`` when it has one, else its position."""
    keys = (
        list(partition_keys)
        if partition_keys is not None
        else [_partition_key(p, i) for i, p in enumerate(payloads)]
    )
    sequences: list[tuple[str, str]] = [("", "")] * len(payloads)
    for start in range(0, len(payloads), 500):
        pending = list(range(start, min(start + 500, len(payloads))))
        for _ in range(5):
            if not pending:
                break
            response = kinesis.put_records(
                StreamName=stream,
                Records=[{"Data": payloads[i], "PartitionKey": keys[i]} for i in pending],
            )
            retry = []
            for i, result in zip(pending, response["Records"], strict=True):
                if result.get("ErrorCode"):
                    retry.append(i)
                else:
                    sequences[i] = (result["ShardId"], result["SequenceNumber"])
            pending = retry
        if pending:
            raise RuntimeError(f"Kinesis refused {len(pending)} records after 5 attempts")
    return sequences


def _partition_key(payload: bytes, index: int) -> str:
    try:
        doc = json.loads(payload)
    except ValueError:
        return f"record-{index}"
    entity = doc.get("entity_id") if isinstance(doc, dict) else None
    return entity[:256] if isinstance(entity, str) and entity else f"record-{index}"


def scan_table(dynamodb: DynamoDBClient, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` as plain JSON values, sorted by ``entity_id``."""
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items.extend({k: _plain(v) for k, v in item.items()} for item in page["Items"])
    return sorted(items, key=lambda i: str(i.get("entity_id")))


def _plain(value: Any) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        number = float(value["N"])
        return int(number) if number.is_integer() and "." not in value["N"] else number
    if "M" in value:
        return {k: _plain(v) for k, v in value["M"].items()}
    if "L" in value:
        return [_plain(v) for v in value["L"]]
    if "BOOL" in value:
        return value["BOOL"]
    return None


def read_queue(
    sqs: SQSClient, url: str, *, delete: bool = False, limit: int = 1000
) -> Iterable[dict[str, Any]]:
    """Messages of ``url`` (bodies parsed as JSON), at most ``limit``; with ``delete``
    each is deleted after reading, otherwise they become visible again after 1 second."""
    seen = 0
    while seen < limit:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, limit - seen),
            WaitTimeSeconds=0,
            VisibilityTimeout=1 if not delete else 30,
        )
        messages = got.get("Messages", [])
        if not messages:
            return
        for m in messages:
            seen += 1
            try:
                yield json.loads(m["Body"])
            except ValueError:
                yield {"body": m["Body"]}
            if delete:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
