"""The settings of Lambda's Kinesis event source mapping, named as CDK's
``KinesisEventSource`` names them, and the records they hand a function.

Used by the local runner (:mod:`dscloud.stream.runner`); kept apart so that what the
mapping *is* reads separately from how the runner polls.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dscloud.errors import ConfigError

__all__ = [
    "STARTING_POSITIONS",
    "EventSourceMapping",
    "ShardRecord",
    "lambda_event",
    "on_failure_message",
]

STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")


@dataclass(frozen=True)
class EventSourceMapping:
    """How records reach the function. Defaults are CDK's, except as noted.

    - ``batch_size``: records per invocation (1-10,000; CDK default 100)
    - ``bisect_batch_on_error``: split a batch in two when the function errors
    - ``max_record_age``: seconds; older records skip the function and go to ``on_failure``
      (None: no limit, CDK's -1; otherwise 60-604,800 in AWS, any value >= 0 here)
    - ``retry_attempts``: retries of a failing batch, then ``on_failure`` (-1: until the
      records expire, CDK's default; 0-10,000)
    - ``report_batch_item_failures``: honour ``batchItemFailures`` in the response
    - ``parallelization_factor``: batches per shard with disjoint partition keys (1-10)
    - ``starting_position``: ``TRIM_HORIZON``, ``LATEST`` or ``AT_TIMESTAMP``
      (with ``starting_position_timestamp``, epoch seconds)
    - ``on_failure``: SQS queue URL that receives the shard and sequence range of every
      batch given up on (Lambda's on-failure destination message)
    """

    batch_size: int = 100
    bisect_batch_on_error: bool = False
    max_record_age: float | None = None
    retry_attempts: int = -1
    report_batch_item_failures: bool = False
    parallelization_factor: int = 1
    starting_position: str = "TRIM_HORIZON"
    starting_position_timestamp: float | None = None
    on_failure: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError(f"batch_size {self.batch_size}: expected 1 to 10000")
        if not -1 <= self.retry_attempts <= 10_000:
            raise ConfigError(
                f"retry_attempts {self.retry_attempts}: expected -1 (infinite) to 10000"
            )
        if self.max_record_age is not None and self.max_record_age < 0:
            raise ConfigError(f"max_record_age {self.max_record_age}: expected seconds >= 0")
        if not 1 <= self.parallelization_factor <= 10:
            raise ConfigError(
                f"parallelization_factor {self.parallelization_factor}: expected 1 to 10"
            )
        if self.starting_position not in STARTING_POSITIONS:
            raise ConfigError(
                f"starting_position {self.starting_position!r}: expected one of {STARTING_POSITIONS}"
            )
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise ConfigError("starting_position AT_TIMESTAMP needs starting_position_timestamp")

    def retries_exhausted(self, attempts: int) -> bool:
        """True when a batch that has failed ``attempts`` times must not be retried again."""
        return self.retry_attempts >= 0 and attempts > self.retry_attempts


@dataclass(frozen=True)
class ShardRecord:
    """One Kinesis record as ``GetRecords`` returns it."""

    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival: float  # epoch seconds

    @classmethod
    def from_api(cls, shard_id: str, record: Any) -> ShardRecord:
        arrival = record.get("ApproximateArrivalTimestamp")
        return cls(
            shard_id=shard_id,
            sequence_number=str(record["SequenceNumber"]),
            partition_key=str(record["PartitionKey"]),
            data=bytes(record["Data"]),
            arrival=arrival.timestamp() if isinstance(arrival, datetime) else float(arrival or 0),
        )


def lambda_event(
    records: Sequence[ShardRecord], *, stream_arn: str, region: str, role_arn: str = ""
) -> dict[str, Any]:
    """The event Lambda hands a function for ``records`` (data base64-encoded)."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number,
                    "data": base64.b64encode(r.data).decode(),
                    "approximateArrivalTimestamp": r.arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{r.shard_id}:{r.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": role_arn,
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            for r in records
        ]
    }


def on_failure_message(
    records: Sequence[ShardRecord],
    *,
    condition: str,
    stream_arn: str,
    function_arn: str,
    invoke_count: int,
    function_error: str | None = None,
) -> dict[str, Any]:
    """What Lambda sends the on-failure destination for a batch it gives up on.

    ``condition`` is ``RetryAttemptsExhausted`` or ``RecordAgeExceeded``; the records are
    named by shard and sequence range, not included (as in AWS).
    """
    first, last = records[0], records[-1]
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": function_error or "",
        },
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "KinesisBatchInfo": {
            "shardId": first.shard_id,
            "startSequenceNumber": first.sequence_number,
            "endSequenceNumber": last.sequence_number,
            "approximateArrivalOfFirstRecord": _iso(first.arrival),
            "approximateArrivalOfLastRecord": _iso(last.arrival),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
