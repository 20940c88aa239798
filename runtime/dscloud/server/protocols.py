"""What both wire protocols share: the decoded :class:`Batch`, JSON parsing, and the
checks that name an unknown column with the schema the model expects.

Two protocols decode into a :class:`Batch` (``{column: values}`` and a row count) so that
every request reaches :meth:`~dscloud.scorer.Scorer.score_columns` the same way:
:mod:`dscloud.server.oip` (Open Inference Protocol v2) and
:mod:`dscloud.server.invocations` (the SageMaker / MLflow scoring contract). Every
decoding problem raises :class:`~dscloud.errors.PayloadError` or
:class:`~dscloud.errors.SchemaError` naming the field and what was expected; nothing a
client sends reaches the scorer as an exception it does not expect. No pandas here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from dscloud.errors import PayloadError, SchemaError
from dscloud.json_input import parse_json
from dscloud.schema import Schema

__all__ = ["Batch", "check_known", "loads"]


@dataclass
class Batch:
    """Decoded input: values per column, the row count, and what the client asked back."""

    columns: Mapping[str, Sequence[Any]]
    n_rows: int
    request_id: str | None = None
    outputs: tuple[str, ...] | None = None


def loads(body: bytes) -> Any:
    """Parse JSON; raises :class:`PayloadError` with the parser's position on bad input."""
    if not body:
        raise PayloadError("empty body: expected a JSON document")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # orjson also refuses valid JSON it cannot hold, a lone surrogate escape: the core's
    # JSON rule reads it, so that the core names the bad value as for a stream record.
    # Only then: a malformed body is not parsed twice.
    if "surrogate" in str(error):
        try:
            return parse_json(body)
        except (ValueError, RecursionError):
            pass
    raise PayloadError(f"malformed JSON: {error}") from None


def check_known(schema: Schema, names: Sequence[str]) -> None:
    unknown = schema.unknown_columns(names)
    if unknown:
        raise SchemaError(
            f"unknown column {unknown[0]!r}; the model expects {schema.expected()}",
            field=unknown[0],
        )
