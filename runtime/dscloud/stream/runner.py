"""``dsc stream run``: Lambda's Kinesis event source mapping, on a laptop.

moto cannot invoke a Lambda without Docker, so this runner does what the mapping does and
calls the handler as a plain function: it polls every shard of a stream (moto server on
127.0.0.1, or real AWS through ``AWS_ENDPOINT_URL``/the default chain), hands the handler
batches in Lambda's event format, and then, per batch, as AWS does:

- success: the shard's checkpoint moves past the batch;
- ``batchItemFailures`` (with ``report_batch_item_failures``): the batch is retried from
  the lowest reported sequence number; an identifier that is not in the batch fails the
  whole batch, as in AWS;
- a function error (an exception, or running past ``function_timeout``): with
  ``bisect_batch_on_error`` the batch is split in two and each half retried (a split does
  not count as a retry), otherwise retried whole;
- after ``retry_attempts`` retries, or once records are older than ``max_record_age``, the
  records are given up on: their shard and sequence range go to the ``on_failure`` queue
  in Lambda's on-failure message format, and the checkpoint moves on.

``parallelization_factor`` splits each shard's records into that many lanes by partition
key hash: batches hold one lane's records and each lane keeps its order, as in AWS. The
runner is one container, though: invocations run one at a time (Powertools' Logger and
Metrics keep per-process state), so the factor shapes batches, not throughput.

Every loop is bounded: ``run`` stops when the stream is drained (``until_drained``), after
``timeout`` seconds, or after ``max_invocations``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dscloud.errors import ConfigError
from dscloud.stream.mapping import EventSourceMapping, ShardRecord, lambda_event, on_failure_message

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_sqs import SQSClient

__all__ = ["EventSourceRunner", "LocalContext", "RunReport", "ShardReport", "load_handler"]

log = logging.getLogger("dscloud.stream.runner")

Handler = Callable[[dict[str, Any], Any], Any]


def load_handler(path: str) -> Handler:
    """The function ``path`` names: ``package.module.function`` (as Lambda's handler
    setting) or ``package.module:function``. Raises :class:`ConfigError` if it is not one."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"handler {path!r}: {exc}; expected package.module.function") from None
    if not callable(function):
        raise ConfigError(f"handler {path!r} is not callable")
    return function  # type: ignore[no-any-return]


class LocalContext:
    """The Lambda context object: names, and the time left before ``timeout``."""

    def __init__(self, function_name: str, function_arn: str, timeout: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = 1024
        self.aws_request_id = hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:32]
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class ShardReport:
    """What happened on one shard. ``checkpoint`` is the last sequence number done."""

    shard_id: str
    checkpoint: str | None = None
    records: int = 0
    invocations: int = 0
    retries: int = 0
    bisections: int = 0
    given_up: list[dict[str, Any]] = field(default_factory=list)  # on-failure messages
    closed: bool = False


@dataclass
class RunReport:
    """Per-shard reports, and why the run stopped (``drained``, ``timeout``, ``limit``)."""

    shards: dict[str, ShardReport]
    stopped: str = ""

    @property
    def invocations(self) -> int:
        return sum(s.invocations for s in self.shards.values())

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "stopped": self.stopped,
            "records": self.records,
            "invocations": self.invocations,
            "shards": {
                k: {
                    "checkpoint": s.checkpoint,
                    "records": s.records,
                    "invocations": s.invocations,
                    "retries": s.retries,
                    "bisections": s.bisections,
                    "given_up": [m["KinesisBatchInfo"] for m in s.given_up],
                    "closed": s.closed,
                }
                for k, s in self.shards.items()
            },
        }


class _Limit(Exception):
    """``max_invocations`` reached."""


class EventSourceRunner:
    """Polls ``stream`` and feeds ``handler`` with the semantics of ``mapping``."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        handler: Handler,
        mapping: EventSourceMapping,
        *,
        sqs: SQSClient | None = None,
        function_name: str = "dsc-stream-local",
        function_timeout: float = 60.0,
        poll_interval: float = 1.0,
        retry_delay: float = 0.0,
        checkpoint_file: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if mapping.on_failure and sqs is None:
            raise ConfigError("an on_failure queue needs an SQS client")
        self.kinesis = kinesis
        self.sqs = sqs
        self.handler = handler
        self.mapping = mapping
        self.function_name = function_name
        self.function_timeout = function_timeout
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.checkpoint_file = Path(checkpoint_file) if checkpoint_file else None
        self.clock = clock
        self.sleep = sleep
        description = kinesis.describe_stream_summary(StreamName=stream)
        self.stream_arn = description["StreamDescriptionSummary"]["StreamARN"]
        self.stream = stream
        self.region = self.stream_arn.split(":")[3]
        account = self.stream_arn.split(":")[4]
        self.function_arn = f"arn:aws:lambda:{self.region}:{account}:function:{function_name}"
        self._invocations = 0
        self._max_invocations: int | None = None

    # -- the polling loop ---------------------------------------------------------------

    def run(
        self,
        *,
        until_drained: bool = True,
        timeout: float | None = None,
        max_invocations: int | None = None,
    ) -> RunReport:
        """Poll until drained (or forever), ``timeout`` seconds or ``max_invocations``.

        Returns the per-shard report. Raises the handler's exceptions only through
        retries (never directly); AWS errors of the stream or the queue propagate.
        """
        started = time.monotonic()
        self._max_invocations = max_invocations
        checkpoints = self._load_checkpoints()
        shards = self._list_shards()
        report = RunReport({sid: ShardReport(sid, checkpoints.get(sid)) for sid in shards})
        iterators: dict[str, str | None] = {}
        try:
            while True:
                got_any = False
                behind = False
                for sid, parent in shards.items():
                    state = report.shards[sid]
                    if state.closed or (
                        parent in report.shards and not report.shards[parent].closed
                    ):
                        continue  # a child shard waits for its parent, as in AWS
                    if sid not in iterators:
                        iterators[sid] = self._iterator(sid, state.checkpoint)
                    records, iterators[sid], lag = self._poll(sid, iterators[sid])
                    behind = behind or lag
                    if iterators[sid] is None:
                        state.closed = not records
                    if records:
                        got_any = True
                        self._deliver(state, records)
                        state.checkpoint = records[-1].sequence_number
                        state.records += len(records)
                        self._save_checkpoints(report)
                if timeout is not None and time.monotonic() - started >= timeout:
                    report.stopped = "timeout"
                    break
                if not got_any and not behind:
                    if until_drained:
                        report.stopped = "drained"
                        break
                    self.sleep(self.poll_interval)
        except _Limit:
            report.stopped = "limit"
        return report

    def _list_shards(self) -> dict[str, str | None]:
        """``{shard_id: parent_shard_id}`` in shard order."""
        shards: dict[str, str | None] = {}
        kwargs: dict[str, Any] = {"StreamName": self.stream}
        for _ in range(1000):
            page = self.kinesis.list_shards(**kwargs)
            for shard in page["Shards"]:
                shards[shard["ShardId"]] = shard.get("ParentShardId")
            token = page.get("NextToken")
            if not token:
                break
            kwargs = {"NextToken": token}
        return shards

    def _iterator(self, shard_id: str, checkpoint: str | None) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard_id}
        if checkpoint is not None:
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=checkpoint
            )
        elif self.mapping.starting_position == "AT_TIMESTAMP":
            kwargs.update(
                ShardIteratorType="AT_TIMESTAMP", Timestamp=self.mapping.starting_position_timestamp
            )
        else:
            kwargs.update(ShardIteratorType=self.mapping.starting_position)
        return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    def _poll(
        self, shard_id: str, iterator: str | None
    ) -> tuple[list[ShardRecord], str | None, bool]:
        """Up to ``batch_size x parallelization_factor`` records, the next iterator, and
        whether the shard is still behind its tip."""
        if iterator is None:
            return [], None, False
        limit = min(10_000, self.mapping.batch_size * self.mapping.parallelization_factor)
        got = self.kinesis.get_records(ShardIterator=iterator, Limit=limit)
        records = [ShardRecord.from_api(shard_id, r) for r in got["Records"]]
        behind = bool(records) or int(got.get("MillisBehindLatest", 0) or 0) > 0
        return records, got.get("NextShardIterator"), behind

    # -- delivering records to the function ----------------------------------------------

    def _deliver(self, state: ShardReport, records: Sequence[ShardRecord]) -> None:
        """Hand ``records`` to the handler lane by lane, batch by batch, until each record
        is done or given up on."""
        factor = self.mapping.parallelization_factor
        lanes: list[list[ShardRecord]] = [[] for _ in range(factor)]
        for r in records:
            lane = int(hashlib.md5(r.partition_key.encode(), usedforsecurity=False).hexdigest(), 16)
            lanes[lane % factor].append(r)
        size = self.mapping.batch_size
        for lane_records in lanes:
            for start in range(0, len(lane_records), size):
                self._deliver_batch(state, lane_records[start : start + size])

    def _deliver_batch(self, state: ShardReport, batch: list[ShardRecord]) -> None:
        work: deque[tuple[list[ShardRecord], int]] = deque([(batch, 0)])
        while work:
            records, attempts = work.popleft()
            records = self._drop_expired(state, records, attempts)
            if not records:
                continue
            failed_from, error = self._invoke(state, records)
            if failed_from is None:
                continue
            if error is not None and self.mapping.bisect_batch_on_error and len(records) > 1:
                mid = len(records) // 2
                state.bisections += 1
                work.appendleft((records[mid:], attempts))
                work.appendleft((records[:mid], attempts))
                continue
            rest = records[failed_from:]
            if self.mapping.retries_exhausted(attempts + 1):
                self._give_up(state, rest, "RetryAttemptsExhausted", attempts + 1, error)
                continue
            state.retries += 1
            if self.retry_delay:
                self.sleep(min(self.retry_delay * 2**attempts, 5.0))
            work.appendleft((rest, attempts + 1))

    def _drop_expired(
        self, state: ShardReport, records: list[ShardRecord], attempts: int
    ) -> list[ShardRecord]:
        if self.mapping.max_record_age is None:
            return records
        now = self.clock()
        # Records arrive in order, so the expired ones are a prefix.
        cut = next(
            (i for i, r in enumerate(records) if now - r.arrival <= self.mapping.max_record_age),
            len(records),
        )
        if cut:
            self._give_up(state, records[:cut], "RecordAgeExceeded", attempts, None)
        return records[cut:]

    def _invoke(
        self, state: ShardReport, records: list[ShardRecord]
    ) -> tuple[int | None, str | None]:
        """Call the handler; returns ``(index to retry from, function error)``, where the
        index is None when the whole batch succeeded."""
        if self._max_invocations is not None and self._invocations >= self._max_invocations:
            raise _Limit
        self._invocations += 1
        state.invocations += 1
        event = lambda_event(records, stream_arn=self.stream_arn, region=self.region)
        context = LocalContext(self.function_name, self.function_arn, self.function_timeout)
        started = time.monotonic()
        try:
            response = self.handler(event, context)
        except Exception as exc:
            log.warning("function error on %s (%d records): %s", state.shard_id, len(records), exc)
            return 0, f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started > self.function_timeout:
            return 0, f"Task timed out after {self.function_timeout:.2f} seconds"
        if not self.mapping.report_batch_item_failures:
            return None, None
        return _failed_from(records, response), None

    def _give_up(
        self,
        state: ShardReport,
        records: Sequence[ShardRecord],
        condition: str,
        invoke_count: int,
        error: str | None,
    ) -> None:
        message = on_failure_message(
            records,
            condition=condition,
            stream_arn=self.stream_arn,
            function_arn=self.function_arn,
            invoke_count=invoke_count,
            function_error="Unhandled" if error else None,
        )
        state.given_up.append(message)
        log.warning(
            "giving up on %s %s..%s (%d records): %s",
            state.shard_id,
            records[0].sequence_number,
            records[-1].sequence_number,
            len(records),
            condition,
        )
        if self.mapping.on_failure and self.sqs is not None:
            self.sqs.send_message(QueueUrl=self.mapping.on_failure, MessageBody=json.dumps(message))

    # -- checkpoints ---------------------------------------------------------------------

    def _load_checkpoints(self) -> dict[str, str]:
        if self.checkpoint_file is None or not self.checkpoint_file.is_file():
            return {}
        try:
            saved = json.loads(self.checkpoint_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"checkpoint file {self.checkpoint_file}: {exc}") from None
        return {str(k): str(v) for k, v in saved.get(self.stream_arn, {}).items()}

    def _save_checkpoints(self, report: RunReport) -> None:
        if self.checkpoint_file is None:
            return
        saved: dict[str, Any] = {}
        if self.checkpoint_file.is_file():
            try:
                saved = json.loads(self.checkpoint_file.read_text())
            except (OSError, json.JSONDecodeError):
                saved = {}
        saved[self.stream_arn] = {
            sid: s.checkpoint for sid, s in report.shards.items() if s.checkpoint is not None
        }
        tmp = self.checkpoint_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=2))
        tmp.replace(self.checkpoint_file)


def _failed_from(records: Sequence[ShardRecord], response: Any) -> int | None:
    """Index of the lowest reported failure in ``records``; None for full success.

    As in AWS: a missing or empty list is success; an identifier that is empty or not in
    the batch fails the whole batch (index 0).
    """
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    index = {r.sequence_number: i for i, r in enumerate(records)}
    positions = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or str(identifier) not in index:
            return 0
        positions.append(index[str(identifier)])
    return min(positions)
