"""Where the stream handler's results go: prediction :class:`Sink` s (the DynamoDB table,
an optional Kinesis output stream) and, beside them, the rejects queue. Each takes an
injected boto3 client and reports an outcome per item, so the handler can tell the records
that are done from those Lambda must retry.

A new output is one class with :meth:`Sink.write` and its place in the handler's list
(:meth:`~dscloud.stream.handler.StreamScorer.from_settings`): the handler writes to the
sinks in order, each taking what the one before it wrote, and knows none of them by name.

Why one conditional ``PutItem`` per prediction, not ``BatchWriteItem``: the table keeps the
*latest* prediction per entity, so a write must not replace a newer ``event_time``. Only a
condition expression can say that atomically, and ``BatchWriteItem`` takes none. The
alternatives lose: ``TransactWriteItems`` (100 items) cancels the whole transaction when any
one condition fails, which a stale replay does by design, and costs twice the write units;
reading first and batch-writing after is a race between concurrent invocations (two shards
or a parallelization factor above 1 can carry the same entity). So each item is one
conditional put, issued concurrently from a small thread pool (boto3 clients are
thread-safe), and a throttled put is retried a bounded number of times within the
invocation before it is reported for Lambda to retry. The same item written twice is a
no-op in effect (same key, same inputs), which makes replays and retries idempotent.

A put DynamoDB refuses with ``ValidationException`` (a key over 2048 bytes, an item over
400 KB) fails the same way on every retry, so it is reported as a
:class:`~dscloud.errors.PayloadError` naming the ``entity_id``: the handler sends the
record to the rejects queue instead of blocking its shard.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dscloud.envelope import ModelIdentity
from dscloud.errors import PayloadError, aws_error_code

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "STALE",
    "WRITTEN",
    "OutputStream",
    "Prediction",
    "PredictionTable",
    "Reject",
    "RejectSink",
    "RejectsQueue",
    "Sink",
]

WRITTEN = "written"
STALE = "stale"  # a newer prediction for the entity is already in the table
SQS_MAX_BYTES = 256 * 1024  # a message (and a batch) on queues predating 1 MiB messages
BATCH_MAX_BYTES = SQS_MAX_BYTES
BATCH_MAX_ENTRIES = 10
ENTRY_HEADROOM = 256  # per batch entry: its id, group id and deduplication id
BODY_MAX_BYTES = SQS_MAX_BYTES - 1024
MIN_BODY_BYTES = 1024  # the smallest MaximumMessageSize a queue can set
SEQUENCE_DIGITS = 129  # Kinesis sequence numbers have at most 129 digits

# Newer event_time wins; at the same event_time the later sequence number wins, and the
# same record written again (a replay) passes, so retries never fail on their own writes.
CONDITION = (
    "attribute_not_exists(entity_id) OR event_time < :t OR (event_time = :t AND sequence_key <= :k)"
)


@dataclass(frozen=True)
class Prediction:
    """One scored record, as stored in the table and put on the output stream."""

    entity_id: str
    event_time: str
    outputs: dict[str, Any]  # Predictions.row(i): label / probabilities / value
    score: float | None
    classes: list[Any] | None
    model: ModelIdentity
    shard_id: str
    sequence_number: str
    scored_at: str

    def to_item(self) -> dict[str, AttributeValueTypeDef]:
        """The DynamoDB item (low-level attribute values)."""
        item: dict[str, AttributeValueTypeDef] = {
            "entity_id": {"S": self.entity_id},
            "event_time": {"S": self.event_time},
            "model_name": {"S": self.model.name},
            "model_sha256": {"S": self.model.sha256},
            "shard_id": {"S": self.shard_id},
            "sequence_number": {"S": self.sequence_number},
            "sequence_key": {"S": self.sequence_number.zfill(SEQUENCE_DIGITS)},
            "scored_at": {"S": self.scored_at},
        }
        if self.model.version is not None:
            item["model_version"] = {"N": str(self.model.version)}
        if self.score is not None:
            item["score"] = _number(self.score)
        if "label" in self.outputs:
            label = self.outputs["label"]
            item["label"] = _number(label) if _is_number(label) else {"S": str(label)}
        if "value" in self.outputs:
            item["value"] = _number(self.outputs["value"])
        probabilities = self.outputs.get("probabilities")
        if probabilities is not None:
            names = self.classes or list(range(len(probabilities)))
            item["probabilities"] = {
                "M": {str(c): _number(p) for c, p in zip(names, probabilities, strict=True)}
            }
        return item

    def to_json(self) -> bytes:
        """The record put on the output stream."""
        return json.dumps(
            {
                "entity_id": self.entity_id,
                "event_time": self.event_time,
                "score": self.score,
                **self.outputs,
                "model": self.model.to_dict(),
                "source": {"shard_id": self.shard_id, "sequence_number": self.sequence_number},
                "scored_at": self.scored_at,
            }
        ).encode()


class Sink(Protocol):
    """Somewhere scored records go: a table, a stream, a topic.

    :meth:`write` answers per prediction, in order: :data:`WRITTEN`; :data:`STALE` when
    the sink already holds something newer for the entity (done, and not passed on to the
    sinks after it); or the exception, which the handler maps once
    (:func:`~dscloud.stream.handler.classify`): a :class:`PayloadError` makes the record a
    reject, anything else a failure Lambda retries. ``write`` must not raise: one record's
    failure is its outcome, never the batch's. A retried record is written again, so a
    write must be idempotent in effect (same key, same value) or the readers deduplicate.
    """

    def write(
        self, predictions: Sequence[Prediction], *, deadline: float | None = None
    ) -> list[str | Exception]:
        """One outcome per prediction; retries inside must stop before ``deadline``
        (``time.monotonic()``), when given."""
        ...


class RejectSink(Protocol):
    """Where records that can never be scored go, with the reason and their bytes."""

    def send(self, rejects: Sequence[Reject]) -> list[Exception | None]:
        """None per reject kept, or the error (the record is then retried). Never raises."""
        ...


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any) -> AttributeValueTypeDef:
    number = float(value)
    if not math.isfinite(number):
        return {"NULL": True}  # DynamoDB numbers cannot be NaN or infinite
    return {"N": str(value) if isinstance(value, int) else repr(number)}


class PredictionTable:
    """A :class:`Sink`: conditional puts into the latest-predictions table, keyed by
    ``entity_id`` (a put that finds a newer prediction there is :data:`STALE`)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        concurrency: int = 16,
        attempts: int = 3,
        backoff_seconds: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.concurrency = max(1, concurrency)
        self.attempts = max(1, attempts)
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def write(
        self, predictions: Sequence[Prediction], *, deadline: float | None = None
    ) -> list[str | Exception]:
        """Write each prediction; returns per item ``WRITTEN``, ``STALE`` or the error.

        Items that fail are retried (with jittered backoff) up to ``attempts`` passes, or
        until ``deadline`` (``time.monotonic()``) would pass; what still fails is returned
        as its exception for the caller to report. An item DynamoDB refuses as invalid is
        not retried: its error is a :class:`PayloadError` (a reject). Never raises an
        ``Exception``.
        """
        if not predictions:
            return []
        outcomes: list[str | Exception] = [RuntimeError("not attempted")] * len(predictions)
        pending = list(range(len(predictions)))
        items = [p.to_item() for p in predictions]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(pending)))) as pool:
            for attempt in range(self.attempts):
                if not pending:
                    break
                if attempt:
                    delay = self.backoff_seconds * 2 ** (attempt - 1) * (0.5 + random.random())
                    if deadline is not None and time.monotonic() + delay > deadline:
                        break
                    self.sleep(delay)
                results = list(pool.map(lambda i: self._put(items[i]), pending))
                for i, result in zip(pending, results, strict=True):
                    outcomes[i] = result
                pending = [
                    i
                    for i in pending
                    if isinstance(outcomes[i], Exception)
                    and not isinstance(outcomes[i], PayloadError)
                ]
        return outcomes

    def _put(self, item: dict[str, AttributeValueTypeDef]) -> str | Exception:
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=CONDITION,
                ExpressionAttributeValues={":t": item["event_time"], ":k": item["sequence_key"]},
            )
        except Exception as exc:
            code = aws_error_code(exc)
            if code == "ConditionalCheckFailedException":
                return STALE
            if code == "ValidationException":
                entity_id = str(item["entity_id"].get("S", ""))
                message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
                return PayloadError(
                    f"DynamoDB refused the prediction for entity_id {entity_id[:64]!r} "
                    f"({len(entity_id.encode())} bytes of UTF-8): {message}",
                    field="entity_id",
                )
            return exc
        return WRITTEN


@dataclass(frozen=True)
class Reject:
    """A record that can never be scored, with why and its original bytes."""

    reason: str
    payload: bytes
    event_source_arn: str
    shard_id: str
    sequence_number: str
    partition_key: str
    approximate_arrival_timestamp: float | None = None
    entity_id: str | None = None
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def record_id(self) -> str:
        """Stable across redeliveries: the dedup id of a FIFO queue."""
        key = f"{self.event_source_arn}|{self.shard_id}|{self.sequence_number}"
        return hashlib.sha256(key.encode()).hexdigest()

    def to_body(self, *, max_bytes: int = BODY_MAX_BYTES) -> str:
        """The SQS message body (JSON, ASCII), at most ``max_bytes`` long.

        A body that would be longer keeps everything but the payload, which is replaced
        by a clear marker: ``payload_base64`` is null, ``payload_truncated`` true, and
        ``payload_bytes``, ``payload_sha256`` and ``payload_prefix_base64`` (as many
        leading bytes as fit) describe the original. Nothing is lost: ``source`` names the
        shard and sequence number the whole record can be read back from while the stream
        retains it, and the sha256 checks that it is the same record. When even that does
        not fit (a ``max_bytes`` of 1 KiB), the reason and ids are shortened too.
        """
        doc: dict[str, Any] = {
            "reason": self.reason,
            "entity_id": self.entity_id,
            "record_id": self.record_id,
            "source": {
                "event_source_arn": self.event_source_arn,
                "shard_id": self.shard_id,
                "sequence_number": self.sequence_number,
                "partition_key": self.partition_key,
                "approximate_arrival_timestamp": self.approximate_arrival_timestamp,
            },
            "model": self.model,
            "payload_base64": base64.b64encode(self.payload).decode(),
        }
        body = json.dumps(doc)  # ensure_ascii: characters are bytes
        if len(body) <= max_bytes:
            return body
        doc["payload_base64"] = None
        doc["payload_truncated"] = True
        doc["payload_bytes"] = len(self.payload)
        doc["payload_sha256"] = hashlib.sha256(self.payload).hexdigest()
        doc["payload_prefix_base64"] = ""
        cut = 4096
        while True:
            doc["reason"] = _shorten(self.reason, cut)
            doc["entity_id"] = None if self.entity_id is None else _shorten(self.entity_id, cut)
            doc["source"]["partition_key"] = _shorten(self.partition_key, cut)
            room = max_bytes - len(json.dumps(doc))
            if room >= 0 or cut <= 16:
                break
            cut //= 4
        prefix = self.payload[: max(0, room - 4) // 4 * 3]
        doc["payload_prefix_base64"] = base64.b64encode(prefix).decode()
        return json.dumps(doc)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "...[truncated]"


class SQSRefused(RuntimeError):
    """One entry of a ``SendMessageBatch`` that SQS refused (carries its error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"SQS refused the reject: {code} {message}")
        self.response = {"Error": {"Code": code, "Message": message}}


class RejectsQueue:
    """A :class:`RejectSink`: sends rejects to SQS in batches. A ``.fifo`` queue deduplicates redeliveries by
    record id (five-minute window); a standard queue is at-least-once and its readers
    deduplicate by the body's ``record_id``.

    A batch holds at most ten messages and at most :data:`BATCH_MAX_BYTES` of bodies (with
    :data:`ENTRY_HEADROOM` counted for each entry's ids and attributes): 256 KiB, the
    limit of queues and regions that predate SQS's 1 MiB messages, so it holds on every
    queue. A batch of one is sent with ``SendMessage``. A body is at most
    :data:`BODY_MAX_BYTES` (see :meth:`Reject.to_body`).

    A message SQS refuses for its size or content (``BatchRequestTooLong``,
    ``InvalidParameterValue``, e.g. a queue whose ``MaximumMessageSize`` is below our
    bodies) would be refused on every retry, so it is sent again, alone, with a body of at
    most :data:`MIN_BODY_BYTES` (the smallest limit a queue can set): the reason, the
    source (shard and sequence number) and the payload's length, sha256 and first bytes.
    Only when that is refused too is the reject reported as failed (and retried).
    """

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")

    def send(self, rejects: Sequence[Reject]) -> list[Exception | None]:
        """Send each reject in order; returns None per sent message or the error.

        Stops at the first batch with a failure: the rest are returned as not sent, so a
        redelivery (which starts at the earliest failure) sends nothing twice. Never raises.
        """
        outcomes: list[Exception | None] = [None] * len(rejects)
        bodies = {i: r.to_body() for i, r in enumerate(rejects)}
        for batch in _batches(list(bodies.values())):
            if any(o is not None for o in outcomes):
                for i in range(batch[0], len(rejects)):
                    outcomes[i] = RuntimeError("not sent: an earlier reject failed")
                break
            for i, error in self._deliver(rejects, batch, bodies).items():
                outcomes[i] = error
                if _refused_as_invalid(error):
                    small = {i: rejects[i].to_body(max_bytes=MIN_BODY_BYTES)}
                    outcomes[i] = self._deliver(rejects, [i], small).get(i)
        return outcomes

    def _deliver(
        self, rejects: Sequence[Reject], batch: Sequence[int], bodies: Mapping[int, str]
    ) -> dict[int, Exception]:
        """Send ``batch`` (indices into ``rejects``); returns the error of each not sent."""
        entries: list[Any] = []
        for i in batch:
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": bodies[i]}
            if self.fifo:
                entry["MessageGroupId"] = rejects[i].shard_id or "rejects"
                entry["MessageDeduplicationId"] = rejects[i].record_id
            entries.append(entry)
        try:
            if len(entries) == 1:
                self.client.send_message(
                    QueueUrl=self.queue_url, **{k: v for k, v in entries[0].items() if k != "Id"}
                )
                return {}
            response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            if len(batch) > 1 and _refused_as_invalid(exc):
                # The batch as a whole is too long for this queue: each message alone.
                errors: dict[int, Exception] = {}
                for i in batch:
                    errors.update(self._deliver(rejects, [i], bodies))
                return errors
            return dict.fromkeys(batch, exc)
        return {
            int(failed["Id"]): SQSRefused(str(failed.get("Code")), failed.get("Message", ""))
            for failed in response.get("Failed", [])
        }


#: Error codes SQS gives a message it will never accept as it is (size or content).
INVALID_CODES = frozenset(
    {"BatchRequestTooLong", "InvalidParameterValue", "InvalidMessageContents", "MessageTooLong"}
)


def _refused_as_invalid(exc: BaseException | None) -> bool:
    # The JSON protocol may prefix codes with "AWS.SimpleQueueService.".
    return exc is not None and aws_error_code(exc).rsplit(".", 1)[-1] in INVALID_CODES


def _batches(bodies: Sequence[str]) -> list[list[int]]:
    """Consecutive indices of ``bodies``, packed by count and by total size."""
    batches: list[list[int]] = []
    size = 0
    for i, body in enumerate(bodies):
        need = len(body) + ENTRY_HEADROOM
        if not batches or len(batches[-1]) == BATCH_MAX_ENTRIES or size + need > BATCH_MAX_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += need
    return batches


class OutputStream:
    """A :class:`Sink`: puts predictions on a Kinesis stream, partitioned by entity
    (at-least-once: a retried record is put again, and readers deduplicate by its
    ``source`` shard and sequence number)."""

    def __init__(self, client: KinesisClient, stream_name: str) -> None:
        self.client = client
        self.stream_name = stream_name

    def write(
        self, predictions: Sequence[Prediction], *, deadline: float | None = None
    ) -> list[str | Exception]:
        """Put each prediction; returns :data:`WRITTEN` per record put or the error.

        ``PutRecords`` takes 500 records a call; a refused record is reported for Lambda
        to retry, not retried here, so ``deadline`` is not needed. Never raises.
        """
        outcomes: list[str | Exception] = [WRITTEN] * len(predictions)
        for start in range(0, len(predictions), 500):
            chunk = range(start, min(start + 500, len(predictions)))
            entries: list[Any] = [
                {"Data": predictions[i].to_json(), "PartitionKey": predictions[i].entity_id[:256]}
                for i in chunk
            ]
            try:
                response = self.client.put_records(StreamName=self.stream_name, Records=entries)
            except Exception as exc:
                for i in chunk:
                    outcomes[i] = exc
                continue
            for i, result in zip(chunk, response["Records"], strict=True):
                if result.get("ErrorCode"):
                    outcomes[i] = RuntimeError(
                        f"Kinesis refused the prediction: {result['ErrorCode']} "
                        f"{result.get('ErrorMessage', '')}"
                    )
        return outcomes
