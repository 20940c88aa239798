"""CSV input (plain or gzip): pyarrow's streaming reader, every needed column as text.

Reading every column as text means a stray ``"abc"`` in a numeric column becomes one
rejected row with its reason instead of a failed file; the text is turned into values
with the batch adapter's other inputs (:func:`~dscloud.batch.reader.columns_for_scoring`).
A CSV file is never split between shards: a byte range cannot be cut safely through
quoted newlines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from dscloud.batch.formats.base import Chunk, Format, require_columns
from dscloud.batch.locations import Location
from dscloud.batch.plan import WorkUnit
from dscloud.errors import DataError
from dscloud.schema import Schema

__all__ = ["Csv"]


class Csv(Format):
    """Comma-separated values with a header row (``.csv``, ``.csv.gz``)."""

    name = "csv"
    suffixes = (".csv", ".csv.gz")

    def columns(self, location: Location, path: str) -> list[str]:
        """The header row's names."""
        with _csv(location, path, None) as reader:
            return list(reader.schema.names)

    def chunks(
        self,
        location: Location,
        unit: WorkUnit,
        columns: Sequence[str],
        schema: Schema,
        chunk_rows: int,
    ) -> Iterator[Chunk]:
        """The whole file, block by block, ``columns`` as text (empty cells as null)."""
        return _csv_chunks(location, unit, columns, schema, chunk_rows)

    def read_table(self, location: Location, path: str) -> pa.Table:
        """The whole file, column types inferred by pyarrow."""
        try:
            return pacsv.read_csv(_stream(location, path))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{location.uri_of(path)}: not a readable CSV file ({exc})") from exc


def _stream(location: Location, path: str) -> Any:
    stream = location.open_input(path)
    if path.lower().endswith(".gz"):
        stream = pa.CompressedInputStream(stream, "gzip")
    return stream


def _csv(location: Location, path: str, convert: pacsv.ConvertOptions | None) -> Any:
    stream = _stream(location, path)
    try:
        return pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=4 << 20, use_threads=False),
            convert_options=convert,
        )
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{location.uri_of(path)}: not a readable CSV file ({exc})") from exc


def _csv_chunks(
    location: Location, unit: WorkUnit, columns: Sequence[str], schema: Schema, chunk_rows: int
) -> Iterator[Chunk]:
    with _csv(location, unit.path, None) as probe:
        require_columns(location, unit.path, probe.schema.names, columns)
    # Every cell is read as text and becomes a value by the core's rule (dscloud.cells):
    # here only the empty cell, quoted or not, is an Arrow null, which is what that rule
    # says of an empty cell in any column; the other null spellings are numeric-only and
    # are applied by columns_for_scoring.
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types=dict.fromkeys(columns, pa.string()),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    row = 0
    source = location.uri_of(unit.path)
    with _csv(location, unit.path, convert) as reader:
        try:
            for block in reader:
                for start in range(0, block.num_rows, chunk_rows):
                    batch = block.slice(start, chunk_rows)
                    yield Chunk(batch=batch, source=source, first_row=row)
                    row += batch.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{source}: cannot read CSV near row {row}: {exc}") from exc
