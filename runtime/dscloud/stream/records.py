"""The stream's record format, and turning Kinesis payloads into scoring input.

Each Kinesis record carries one UTF-8 JSON object (Kinesis hands it to Lambda
base64-encoded; :func:`parse_payload` gets the decoded bytes)::

    {"entity_id": "u00000042",                       # non-empty string, <= 2048 UTF-8 bytes
     "features": {"tenure_months": 12, "plan": "basic", ...},   # the model's columns
     "event_time": "2024-05-01T12:00:00.250Z"}        # ISO-8601; no zone means UTC

``event_time`` is when the features were true, not when the record was sent: it orders
predictions for the same entity, so a replayed or late record never overwrites a newer
prediction. It is normalised to :func:`normalize_event_time`'s fixed-width UTC form so
that string order is time order (which is how DynamoDB compares it). A timestamp that has
no UTC equivalent between years 1 and 9999 (``9999-12-31T23:59:59-01:00``) is refused.

``entity_id`` is the table's partition key, which DynamoDB limits to 2048 bytes of UTF-8,
not characters: 1024 CJK characters are 3072 bytes and are refused here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dscloud.errors import PayloadError
from dscloud.json_input import parse_json

__all__ = ["MAX_ENTITY_ID", "StreamEvent", "normalize_event_time", "parse_payload"]

#: DynamoDB's limit on a partition key, in bytes of UTF-8 (not characters).
MAX_ENTITY_ID = 2048
_FIELDS = ("entity_id", "features", "event_time")


@dataclass(frozen=True)
class StreamEvent:
    """One decoded record: whose features, which features, and as of when."""

    entity_id: str
    features: dict[str, Any]
    event_time: str  # normalised, see normalize_event_time

    def to_payload(self) -> bytes:
        """The record as a producer puts it on the stream (JSON bytes)."""
        return json.dumps(
            {"entity_id": self.entity_id, "features": self.features, "event_time": self.event_time}
        ).encode()


def normalize_event_time(value: Any) -> str:
    """``value`` (ISO-8601 text) as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC.

    Raises :class:`PayloadError` when it is not an ISO-8601 timestamp, or names an
    instant outside years 1-9999 in UTC.
    """
    if not isinstance(value, str) or not value:
        raise PayloadError(
            f"event_time: expected an ISO-8601 timestamp string, got {type(value).__name__}",
            field="event_time",
        )
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError(
            f"event_time {value[:64]!r} is not ISO-8601 (e.g. 2024-05-01T12:00:00Z)",
            field="event_time",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PayloadError(
            f"event_time {value[:64]!r} is out of range: in UTC it falls outside years 1-9999",
            field="event_time",
        ) from None
    # The year by hand: strftime's %Y does not pad years before 1000, which would break
    # the fixed width that makes string order time order.
    return f"{parsed.year:04d}-" + parsed.strftime("%m-%dT%H:%M:%S.%fZ")


def parse_payload(data: bytes) -> StreamEvent:
    """Decode one record's bytes into a :class:`StreamEvent`.

    Raises :class:`PayloadError` (never anything else) saying what was wrong: decoding
    depends only on the bytes, so such a record can never succeed and the handler sends it
    to the rejects queue. An unforeseen error (say, a 5,000-digit number, which ``json``
    refuses with a ``ValueError``) becomes a :class:`PayloadError` too, rather than a
    failure Lambda would retry forever.
    """
    try:
        return _parse(data)
    except PayloadError:
        raise
    except Exception as exc:
        raise PayloadError(
            f"record cannot be decoded ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def _parse(data: bytes) -> StreamEvent:
    try:
        doc = parse_json(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"record is not UTF-8 JSON ({exc})") from None
    except RecursionError:
        raise PayloadError("record is JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise PayloadError(
            f"record is a JSON {type(doc).__name__}, expected an object with {list(_FIELDS)}"
        )
    missing = [f for f in _FIELDS if f not in doc]
    if missing:
        raise PayloadError(f"record lacks {missing}; a record is an object with {list(_FIELDS)}")
    entity_id = doc["entity_id"]
    if not isinstance(entity_id, str) or not entity_id:
        raise PayloadError(
            f"entity_id: expected a non-empty string of at most {MAX_ENTITY_ID} bytes of UTF-8",
            field="entity_id",
        )
    try:
        size = len(entity_id.encode())
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON)
        raise PayloadError("entity_id is not valid Unicode", field="entity_id") from None
    if size > MAX_ENTITY_ID:
        raise PayloadError(
            f"entity_id is {size} bytes of UTF-8: the table's key takes at most {MAX_ENTITY_ID}",
            field="entity_id",
        )
    features = doc["features"]
    if not isinstance(features, dict):
        raise PayloadError(
            f"features: expected an object of columns, got {type(features).__name__}",
            field="features",
        )
    return StreamEvent(
        entity_id=entity_id, features=features, event_time=normalize_event_time(doc["event_time"])
    )
