"""The Lambda handler of the online path: a batch of Kinesis records in, predictions out.

Record format (one per Kinesis record; Lambda delivers ``data`` base64-encoded)::

    {"entity_id": "u00000042", "features": {column: value, ...}, "event_time": ISO-8601}

See :mod:`dscloud.stream.records` for the exact rules. What happens to a batch:

1. **Decode** every record. Bad base64, bad JSON, a wrong shape, an out-of-range
   ``event_time`` or any other error while decoding is a *reject*: decoding depends only
   on the record's bytes, so a retry would fail the same way and block the shard.
2. **Score** every decoded record in **one** ONNX call (:meth:`Scorer.score_records`). A row
   the model's schema refuses is a *reject* with the schema's reason. When the call
   crashes, halves are scored apart until the record that crashes alone is found: it is a
   *reject* with the error (see :meth:`StreamScorer._predict`), the others are scored.
3. **Write** the newest prediction per entity to the DynamoDB table with a conditional put
   (why not ``BatchWriteItem``: :mod:`dscloud.stream.sinks`). An older ``event_time`` never
   replaces a newer one; a stale write counts as done. Records superseded inside the batch
   by a newer one for the same entity are done too. A put DynamoDB refuses as invalid
   (``ValidationException``) is a *reject*.
   **Rollout**: while the alias has a rollout, the candidate scores those newest
   predictions' records in one more ONNX call; in canary, the entities it answers get its
   prediction instead, tagged with its version (:mod:`dscloud.stream.rollout`, which also
   compares, records and guards).
4. **Output** (optional): put the written predictions on a Kinesis stream. The table and
   the stream are :class:`~dscloud.stream.sinks.Sink` s, written in order, each taking
   what the one before it wrote (a stale or failed write goes no further).
5. **Reject**: send rejects to the SQS queue with the reason and the original payload;
   they count as handled, so one poison record never blocks the shard. Batches are packed
   by size as well as count, and a payload too large for the queue is stored as its
   length, sha256 and first bytes (:class:`~dscloud.stream.sinks.RejectsQueue`).
6. **Report** transient failures (throttling, timeouts, any AWS error) as
   ``batchItemFailures`` keyed by sequence number, so Lambda retries them.

Why Powertools' ``BatchProcessor`` sees the records only at the end: it calls a record
handler once per record, but all valid records must be scored together (one ONNX call
is what makes 1,000 records cost milliseconds). So steps 1-5 run over the whole batch
first and leave an outcome per sequence number; ``process_partial_response`` then walks
the records with a record handler that raises each failed record's error, and builds the
``batchItemFailures`` response, its logging and its edge cases (an empty failure list, the
Kinesis item identifier) exactly as Powertools does for every other user.
``raise_on_entire_batch_failure`` is off: a batch whose every write was throttled is
reported item by item and retried, rather than raised, which would make Lambda bisect a
batch that has nothing wrong with it. The handler isolates a record that crashes scoring
itself (so the on-failure queue, which keeps no payload, never gets it); a crash of the
runtime (the goldens fail too, memory runs out) still raises, and the event source mapping
bisects and retries.

Lambda resumes a Kinesis shard at the *lowest* failed sequence number and redelivers every
record after it. So side effects stop at the first failure: predictions, outputs and
rejects after it are left for the redelivery (their outcome is ``deferred``) rather than
sent twice. Predictions before it were written with idempotent conditional puts. A rejects
queue whose URL ends in ``.fifo`` also deduplicates by record id, which covers a crash
after sending.

Errors are mapped in one place, :func:`classify`: a :class:`~dscloud.errors.SchemaError`
(including :class:`~dscloud.errors.PayloadError`) can never succeed and is a reject;
everything else is worth a retry.

The model is loaded once per container on the first invocation (resolving the alias and
replaying the goldens, like the server) and the alias is re-resolved every
``DSC_REFRESH_SECONDS``. AWS clients are injected (:meth:`StreamScorer.from_settings` makes
them only when not given), never created at import time.
"""

from __future__ import annotations

import binascii
import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)

from dscloud.archive import Archive
from dscloud.errors import ConfigError, PayloadError, SchemaError
from dscloud.live import LiveModel
from dscloud.rollout import Rollout
from dscloud.scorer import Predictions, Scorer
from dscloud.settings import Settings
from dscloud.stream.drift import StreamDrift
from dscloud.stream.records import StreamEvent, parse_payload
from dscloud.stream.rollout import StreamRollout, take
from dscloud.stream.sinks import (
    STALE,
    WRITTEN,
    OutputStream,
    Prediction,
    PredictionTable,
    Reject,
    RejectSink,
    RejectsQueue,
    Sink,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

__all__ = ["StreamScorer", "classify", "configure", "handler", "logger", "metrics"]

# Powertools reads its own POWERTOOLS_* variables (the stack sets the service name and the
# namespace); these are only the defaults when they are unset, e.g. with the local runner.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "dscloud-stream")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "dscloud")

#: Seconds kept in hand before Lambda's timeout: in-invocation retries stop before it.
TIMEOUT_MARGIN = 2.0

REJECT, RETRY = "reject", "retry"


def classify(exc: BaseException) -> str:
    """``"reject"`` for errors no retry can fix (the record itself is wrong), else ``"retry"``."""
    return REJECT if isinstance(exc, SchemaError) else RETRY


@dataclass
class _Slot:
    """One record's way through the batch."""

    record: KinesisStreamRecord
    event: StreamEvent | None = None
    error: Exception | None = None  # a reject reason or a transient failure
    prediction: Prediction | None = None
    output: tuple[Predictions, int] | None = None  # the serving version's, for a rollout
    outcome: str = ""  # written, stale, superseded, rejected, failed, deferred

    @property
    def sequence_number(self) -> str:
        return self.record.kinesis.sequence_number

    @property
    def shard_id(self) -> str:
        return self.record.event_id.split(":", 1)[0]


class StreamScorer:
    """Scores Kinesis batches with one live model and writes the results to the sinks.

    ``sinks`` are written in order: the first gets the newest prediction per entity, each
    later one what the one before it wrote. ``rejects`` gets the records that can never
    be scored. ``drift`` counts the scored rows across invocations and publishes drift
    metrics once per window (:mod:`dscloud.stream.drift`; default: 300 s, 500 rows).
    ``rollouts`` compares the serving version with a rollout's candidate
    (:mod:`dscloud.stream.rollout`; made for a model that follows an alias when not given).
    """

    def __init__(
        self,
        live: LiveModel,
        *,
        sinks: Sequence[Sink],
        rejects: RejectSink,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        drift: StreamDrift | None = None,
        rollouts: StreamRollout | None = None,
    ) -> None:
        self.live = live
        self.sinks = list(sinks)
        self.rejects = rejects
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.drift = drift if drift is not None else StreamDrift(_publish, clock=clock)
        if rollouts is None and live.ref.alias is not None:
            rollouts = StreamRollout(
                live.archive, live.ref.name, live.ref.alias, _publish_comparison, clock=clock
            )
        self.rollouts = rollouts
        self._refreshed_at = clock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        dynamodb: DynamoDBClient | None = None,
        sqs: SQSClient | None = None,
        kinesis: KinesisClient | None = None,
        s3: S3Client | None = None,
    ) -> StreamScorer:
        """Load the model (verified, goldens replayed) and wire the sinks.

        Clients not given are made with boto3 (which honours ``AWS_ENDPOINT_URL``).
        Raises :class:`ConfigError` for missing settings and the archive's errors when the
        model cannot be loaded.
        """
        if len(settings.models) != 1:
            raise ConfigError(
                f"the stream scores with exactly one model; DSC_MODELS={' '.join(settings.models)!r}"
                " (e.g. DSC_MODELS=churn@production)"
            )
        if not settings.predictions_table:
            raise ConfigError("DSC_PREDICTIONS_TABLE is not set: the table predictions go to")
        if not settings.rejects_queue_url:
            raise ConfigError("DSC_REJECTS_QUEUE_URL is not set: the SQS queue rejects go to")
        if dynamodb is None or sqs is None or (kinesis is None and settings.output_stream):
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=2,
                read_timeout=5,
            )
            dynamodb = dynamodb or boto3.client("dynamodb", config=config)
            sqs = sqs or boto3.client("sqs", config=config)
            if settings.output_stream and kinesis is None:
                kinesis = boto3.client("kinesis", config=config)
        archive = Archive.open(settings.archive, s3_client=s3)
        live = LiveModel(archive, settings.models[0], threads=settings.threads)
        logger.info(
            "model loaded",
            extra={"model": live.scorer.name, "version": live.scorer.version, "ref": str(live.ref)},
        )
        sinks: list[Sink] = [PredictionTable(dynamodb, settings.predictions_table)]
        if settings.output_stream and kinesis is not None:
            sinks.append(OutputStream(kinesis, settings.output_stream))
        return cls(
            live,
            sinks=sinks,
            rejects=RejectsQueue(sqs, settings.rejects_queue_url),
            refresh_seconds=settings.refresh_seconds,
            drift=StreamDrift(
                _publish,
                window_seconds=settings.drift_window_seconds,
                min_rows=settings.drift_min_rows,
                enabled=bool(settings.drift),
                clock=time.monotonic,
            ),
            rollouts=StreamRollout(
                archive,
                live.ref.name,
                live.ref.alias,
                _publish_comparison,
                window_seconds=settings.rollout_window_seconds,
                by=f"stream:{logger.service}",
            )
            if live.ref.alias is not None
            else None,
        )

    # -- one invocation ----------------------------------------------------------------

    def handle(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """Process one Kinesis event; returns ``{"batchItemFailures": [...]}``.

        Raises only when scoring itself fails (the event source mapping then bisects).
        """
        raw = list(event.get("Records") or [])
        if not raw:
            return {"batchItemFailures": []}
        self.refresh()
        slots = [_Slot(KinesisStreamRecord(r)) for r in raw]
        self.process(slots, deadline=_deadline(context))
        failed = {s.sequence_number: s.error for s in slots if s.outcome == "failed"}

        def record_handler(record: KinesisStreamRecord) -> None:
            error = failed.get(record.kinesis.sequence_number)
            if error is not None:
                raise error

        processor = BatchProcessor(
            event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False
        )
        response = process_partial_response(
            event=dict(event), record_handler=record_handler, processor=processor, context=context
        )
        self._record_metrics(slots)
        return dict(response)

    def refresh(self) -> None:
        """Re-resolve the alias when ``refresh_seconds`` have passed (0 disables)."""
        if self.refresh_seconds > 0 and self.clock() - self._refreshed_at >= self.refresh_seconds:
            self._refreshed_at = self.clock()
            self.live.refresh()

    def process(self, slots: Sequence[_Slot], *, deadline: float | None = None) -> None:
        """Decode, score, write, output and reject; leaves an ``outcome`` on every slot."""
        for slot in slots:
            self._decode(slot)
        # Read once: the serving version and the rollout come from the same poll.
        scorer, following = self.live.scorer, self.live.following
        seconds = self._score(scorer, [s for s in slots if s.event is not None])
        cutoff = len(slots)  # index of the first failure: nothing is sent from there on

        # Each sink takes what the one before it wrote; a stale or failed write stops there.
        targets = _newest_per_entity(slots)
        if following is not None and self.rollouts is not None:
            rollout, candidate = following
            if targets and not self.rollouts.judged(rollout):
                self._compare(rollout, scorer, candidate, targets, seconds)
        for sink in self.sinks:
            before = {id(s) for s in slots[:cutoff]}
            targets = [s for s in targets if id(s) in before]
            results = sink.write([s.prediction for s in targets if s.prediction], deadline=deadline)
            for slot, result in zip(targets, results, strict=True):
                if isinstance(result, Exception):
                    self._fail(slot, result)  # e.g. a put DynamoDB refuses as invalid: a reject
                else:
                    slot.outcome = result
            cutoff = _first_failure(slots, cutoff)
            targets = [s for s in targets if s.outcome == WRITTEN]

        rejected = [s for s in slots[:cutoff] if s.outcome == "rejected"]
        sent = self.rejects.send([self._reject(s) for s in rejected])
        for slot, error in zip(rejected, sent, strict=True):
            if error is not None:
                slot.error, slot.outcome = error, "failed"
        cutoff = _first_failure(slots, cutoff)
        for slot in slots[cutoff:]:
            if slot.outcome != "failed":
                slot.outcome = "deferred"  # redelivered from the first failure on
        self._settle(following)

    def _decode(self, slot: _Slot) -> None:
        # Every error here comes from the record's bytes alone, so it is a reject.
        try:
            data = slot.record.kinesis.data_as_bytes()
        except Exception as exc:
            self._fail(slot, PayloadError(f"record data is not base64 ({exc})"))
            return
        try:
            slot.event = parse_payload(data)
        except Exception as exc:
            if not isinstance(exc, PayloadError):
                exc = PayloadError(f"record cannot be decoded ({type(exc).__name__}: {exc})")
            self._fail(slot, exc)

    def _score(self, scorer: Scorer, slots: Sequence[_Slot]) -> float | None:
        """Score ``slots`` with ``scorer``; returns the seconds its calls took (None: none)."""
        if not slots:
            return None
        began = time.perf_counter()
        parts = self._predict(scorer, list(slots))
        took = time.perf_counter() - began
        for part, preds in parts:
            self._keep(scorer, part, preds)
        return took

    def _compare(
        self,
        rollout: Rollout,
        scorer: Scorer,
        candidate: Scorer,
        targets: Sequence[_Slot],
        seconds: float | None,
    ) -> None:
        """Score ``targets`` with the rollout's candidate (one call) and count both versions;
        in canary, the entities the candidate answers get its prediction."""
        assert self.rollouts is not None
        written = [s for s in targets if s.output is not None and s.event is not None]
        if not written:
            return
        rows = [s.event.features for s in written if s.event is not None]
        current = take([s.output for s in written if s.output is not None])
        answered = self.rollouts.compare(rollout, scorer, candidate, rows, current, seconds=seconds)
        if answered is None or rollout.mode != "canary":
            return
        classes = answered.classes
        for i, row in enumerate(answered.rows.tolist()):
            slot = written[row]
            if (
                slot.prediction is None
                or self.live.answering(slot.prediction.entity_id) is not candidate
            ):
                continue
            outputs = answered.row(i)
            slot.prediction = dataclasses.replace(
                slot.prediction,
                outputs=outputs,
                score=_score_of(outputs, classes),
                classes=classes,
                model=candidate.identity,
            )

    def _settle(self, following: tuple[Rollout, Scorer] | None) -> None:
        """After a batch: record and judge the rollout's comparison (or record what is
        left of an ended one). After a breach, the alias is read again at once, so that
        the candidate of an aborted rollout scores no further batch here."""
        if self.rollouts is None:
            return
        if following is None:
            self.rollouts.flush()
            return
        rollout = following[0]
        if self.rollouts.judged(rollout):
            return
        self.rollouts.settle(rollout)
        if self.rollouts.judged(rollout):
            self._refreshed_at = self.clock()
            self.live.refresh()

    def _predict(self, scorer: Scorer, slots: list[_Slot]) -> list[tuple[list[_Slot], Predictions]]:
        """``slots`` scored in one ONNX call; when that call crashes, each half on its own.

        Halving isolates a record that crashes scoring in about 2 log2(n) calls. Such a
        record crashes the same way on every retry (the model and its bytes are fixed), so
        it is rejected with the error and its payload, on every path and batch size,
        instead of failing the invocation until Lambda gives up on it without its payload.
        Unless the model no longer reproduces its golden examples either: then the runtime,
        not the record, is broken, and the error is raised so that the batch is retried.
        Memory errors are raised as they are: they depend on the batch, not on one record.
        """
        try:
            return [(slots, scorer.score_records([s.event.features for s in slots if s.event]))]
        except MemoryError:
            raise
        except Exception as exc:
            if len(slots) > 1:
                half = len(slots) // 2
                return self._predict(scorer, slots[:half]) + self._predict(scorer, slots[half:])
            try:
                scorer.check_goldens()
            except Exception:
                raise exc from None
            self._fail(
                slots[0],
                SchemaError(f"the model cannot score this record ({type(exc).__name__}: {exc})"),
            )
            return []

    def _keep(self, scorer: Scorer, slots: Sequence[_Slot], preds: Predictions) -> None:
        """Record ``preds`` (of ``slots``, in order) as rejects and predictions on the slots,
        and add the scored rows to the drift counts."""
        features = [s.event.features for s in slots if s.event is not None]
        for row, reason in preds.rejects.items():
            self._fail(slots[row], SchemaError(reason, row=row))
        self.drift.add(scorer, features, preds)
        classes = preds.classes
        scored_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for i, row in enumerate(preds.rows.tolist()):
            slot = slots[row]
            assert slot.event is not None
            outputs = preds.row(i)
            slot.output = (preds, i)
            slot.prediction = Prediction(
                entity_id=slot.event.entity_id,
                event_time=slot.event.event_time,
                outputs=outputs,
                score=_score_of(outputs, classes),
                classes=classes,
                model=scorer.identity,
                shard_id=slot.shard_id,
                sequence_number=slot.sequence_number,
                scored_at=scored_at,
            )

    def _fail(self, slot: _Slot, exc: Exception) -> None:
        """The one place errors become outcomes."""
        slot.error = exc
        slot.outcome = "rejected" if classify(exc) == REJECT else "failed"

    def _reject(self, slot: _Slot) -> Reject:
        kinesis = slot.record.kinesis
        try:
            payload = kinesis.data_as_bytes()
        except (binascii.Error, ValueError):
            payload = kinesis.data.encode()
        scorer = self.live.scorer
        return Reject(
            reason=str(slot.error),
            payload=payload,
            event_source_arn=slot.record.event_source_arn,
            shard_id=slot.shard_id,
            sequence_number=kinesis.sequence_number,
            partition_key=kinesis.partition_key,
            approximate_arrival_timestamp=kinesis.approximate_arrival_timestamp,
            entity_id=slot.event.entity_id if slot.event else None,
            model=scorer.identity.to_dict(),
        )

    def _record_metrics(self, slots: Sequence[_Slot]) -> None:
        counts: dict[str, int] = {}
        for slot in slots:
            counts[slot.outcome] = counts.get(slot.outcome, 0) + 1
        metrics.add_metric(name="RecordsReceived", unit=MetricUnit.Count, value=len(slots))
        for outcome, name in [
            (WRITTEN, "PredictionsWritten"),
            (STALE, "PredictionsStale"),
            ("superseded", "RecordsSuperseded"),
            ("rejected", "RecordsRejected"),
            ("failed", "RecordsFailed"),
            ("deferred", "RecordsDeferred"),
        ]:
            if counts.get(outcome):
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=counts[outcome])
        logger.info(
            "batch processed",
            extra={
                "records": len(slots),
                "outcomes": counts,
                "model": self.live.scorer.name,
                "version": self.live.scorer.version,
            },
        )
        for slot in slots:
            if slot.outcome == "rejected":
                logger.warning(
                    "record rejected",
                    extra={"sequence_number": slot.sequence_number, "reason": str(slot.error)},
                )


def _publish(name: str, value: float, unit: str) -> None:
    """One drift metric, flushed with the invocation's other metrics (EMF)."""
    metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)


def _publish_comparison(
    dimensions: Mapping[str, str], values: Sequence[tuple[str, float, str]]
) -> None:
    """One rollout window's metrics, flushed at once as their own EMF document: their
    dimensions name the model and both versions, which the invocation's other metrics
    (and the drift alarms, which filter on ``service`` alone) must not carry."""
    blob = EphemeralMetrics(namespace=metrics.namespace, service=metrics.service)
    for dimension, label in dimensions.items():
        blob.add_dimension(name=dimension, value=label)
    for name, value, unit in values:
        blob.add_metric(name=name, unit=MetricUnit(unit), value=value)
    blob.flush_metrics()


def _newest_per_entity(slots: Sequence[_Slot]) -> list[_Slot]:
    """Scored slots that carry their entity's newest event; the others are superseded."""
    newest: dict[str, tuple[str, int]] = {}
    for i, slot in enumerate(slots):
        if slot.prediction is None:
            continue
        # Same event_time: the later record (higher sequence number) wins, as in the table.
        candidate = (slot.prediction.event_time, i)
        newest[slot.prediction.entity_id] = max(
            newest.get(slot.prediction.entity_id, candidate), candidate
        )
    keep = {i for _, i in newest.values()}
    for i, slot in enumerate(slots):
        if slot.prediction is not None and i not in keep:
            slot.outcome = "superseded"
    return [slots[i] for i in sorted(keep)]


def _first_failure(slots: Sequence[_Slot], cutoff: int) -> int:
    return next((i for i, s in enumerate(slots[:cutoff]) if s.outcome == "failed"), cutoff)


def _score_of(outputs: Mapping[str, Any], classes: list[Any] | None) -> float | None:
    """The table's ``score``: the value of a regressor; P(positive class) of a binary
    classifier; the probability of the predicted label otherwise."""
    if "value" in outputs:
        return float(outputs["value"])
    probabilities = outputs.get("probabilities")
    if not probabilities:
        return None
    if len(probabilities) == 2:
        return float(probabilities[1])
    if classes is not None and outputs.get("label") in classes:
        return float(probabilities[classes.index(outputs["label"])])
    return float(max(probabilities))


def _deadline(context: Any) -> float | None:
    """When in-invocation retries must stop, on ``time.monotonic()``'s clock."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    left = float(remaining()) / 1000
    return time.monotonic() + max(0.0, left - TIMEOUT_MARGIN)


# -- the Lambda entry point ----------------------------------------------------------------

_app: StreamScorer | None = None


def configure(app: StreamScorer | None) -> None:
    """Install the scorer :func:`handler` uses (tests, the local runner); None resets it."""
    global _app
    _app = app


def _current() -> StreamScorer:
    global _app
    if _app is None:  # once per container: the cold start
        _app = StreamScorer.from_settings(Settings.from_env())
    return _app


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: ``{"batchItemFailures": [{"itemIdentifier": seq}, ...]}``."""
    return _current().handle(event, context)
