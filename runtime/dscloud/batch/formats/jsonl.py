"""JSON Lines input (plain or gzip): one JSON object per line, read with Python's json.

Why not pyarrow's JSON reader: it infers one type per column and fails the whole file when
a later line changes it (``"changed from number to string in row 1"``), where a stray
``"abc"`` in a numeric field must be one rejected row with its reason. So lines are parsed
here, a chunk at a time, and the values go to the core as the JSON values they are
(:attr:`~dscloud.batch.formats.base.Chunk.values`): a JSON Lines row is read by exactly the rule a JSON row
sent to ``/invocations`` is (:mod:`dscloud.json_input`, :mod:`dscloud.columns`), never by
the text-cell rule of CSV. So a missing key is refused as a missing column, ``true`` and
the string ``"12"`` in a number column are refused as what they are, and a lone surrogate
(valid JSON, not UTF-8) is refused naming its column. The chunk's Arrow batch still holds
the columns (a mix of kinds as text, a lone surrogate escaped into visible text) for what
the writer copies out: key columns and the features of rejected rows.

Rules, as a serious reader needs them stated: blank lines are skipped and not counted
(``source_row`` counts records); ``NaN``/``Infinity`` are not JSON, so a line holding one
is malformed; the file's columns are the keys of its first record, and a file without
records has no rows; a later record lacking a schema column is that row's reject (the
core's missing-column reason); a line that is not a JSON object is a
:class:`~dscloud.errors.DataError` naming the file and line, as a malformed CSV row fails
its file. A JSON Lines file is never split between shards.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from dscloud.batch.formats.base import Chunk, Format, require_columns
from dscloud.batch.locations import Location
from dscloud.batch.plan import WorkUnit
from dscloud.columns import MISSING
from dscloud.errors import DataError
from dscloud.json_input import parse_json
from dscloud.schema import Schema

__all__ = ["JsonLines"]


class JsonLines(Format):
    """Newline-delimited JSON objects (``.jsonl``, ``.ndjson``, and gzipped ``.jsonl.gz``)."""

    name = "jsonl"
    suffixes = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")

    def columns(self, location: Location, path: str) -> list[str]:
        """The keys of the first record ([] for a file without records)."""
        for _, record in _records(location, path):
            return list(record)
        return []

    def chunks(
        self,
        location: Location,
        unit: WorkUnit,
        columns: Sequence[str],
        schema: Schema,
        chunk_rows: int,
    ) -> Iterator[Chunk]:
        """The whole file, ``chunk_rows`` records a chunk, ``columns`` as Arrow arrays."""
        records = _records(location, unit.path)
        head = next(records, None)
        if head is None:
            return  # no records: nothing to score, like an empty Parquet file
        require_columns(location, unit.path, list(head[1]), columns)
        source = location.uri_of(unit.path)
        rows: list[dict[str, Any]] = [head[1]]
        first = 0
        for _, record in records:
            rows.append(record)
            if len(rows) == chunk_rows:
                yield _chunk(rows, columns, schema, source, first)
                first += len(rows)
                rows = []
        if rows:
            yield _chunk(rows, columns, schema, source, first)

    def read_table(self, location: Location, path: str) -> pa.Table:
        """The whole file, column types inferred by pyarrow (which needs one type per key)."""
        try:
            return pajson.read_json(_stream(location, path))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"{location.uri_of(path)}: not a readable JSON Lines file ({exc})"
            ) from exc


def _stream(location: Location, path: str) -> Any:
    stream = location.open_input(path)
    if path.lower().endswith(".gz"):
        stream = pa.CompressedInputStream(stream, "gzip")
    return stream


def _records(location: Location, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line. Raises :class:`DataError`."""
    source = location.uri_of(path)
    number = 0
    try:
        with io.TextIOWrapper(_stream(location, path), encoding="utf-8") as text:
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    record = parse_json(line)
                except (ValueError, RecursionError) as exc:
                    raise DataError(f"{source}: line {number} is not JSON ({exc})") from exc
                if not isinstance(record, dict):
                    raise DataError(
                        f"{source}: line {number} is a JSON {type(record).__name__}; "
                        "expected an object of column: value"
                    )
                yield number, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: after line {number}, not UTF-8 text ({exc})") from exc
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{source}: cannot read after line {number}: {exc}") from exc


def _chunk(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    schema: Schema,
    source: str,
    first: int,
) -> Chunk:
    values = {name: [row.get(name, MISSING) for row in rows] for name in schema.names}
    return Chunk(batch=_batch(rows, columns), source=source, first_row=first, values=values)


def _batch(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [_column([row.get(name) for row in rows]) for name in columns], names=list(columns)
    )


def _column(values: list[Any]) -> pa.Array:
    """One kind of value (all text, or all numbers): as it is; a mix: as text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in present):
        return _text(values)
    if all(isinstance(v, int | float) for v in present):
        try:
            return pa.array(values)
        except (pa.ArrowException, OverflowError):
            pass  # an integer beyond 64 bits: as text, for the core to refuse with its reason
    return _text([v if v is None or isinstance(v, str) else json.dumps(v) for v in values])


def _text(values: list[Any]) -> pa.Array:
    # A lone surrogate (valid JSON, "\ud800") cannot be UTF-8: keep it visible, escaped.
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowException, UnicodeEncodeError):
        return pa.array(
            [
                v if v is None else v.encode("utf-8", "backslashreplace").decode("utf-8")
                for v in values
            ],
            type=pa.string(),
        )
