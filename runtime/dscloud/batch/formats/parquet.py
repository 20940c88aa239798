"""Parquet input: read row group by row group, only the needed columns.

The one format with an index of its rows (the footer), so the only one whose files shards
can cut apart: by row group, and a large row group by row range.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from dscloud.batch.formats.base import Chunk, Format, require_columns
from dscloud.batch.locations import Location
from dscloud.batch.plan import RowGroup, WorkUnit
from dscloud.errors import DataError
from dscloud.schema import Schema

__all__ = ["Parquet"]


class Parquet(Format):
    """Apache Parquet files (``.parquet``, ``.pq``)."""

    name = "parquet"
    suffixes = (".parquet", ".pq")

    def row_groups(self, location: Location, path: str) -> list[RowGroup]:
        """The row groups (rows, compressed bytes) of the file's footer."""
        meta = _parquet(location, path).metadata
        groups = []
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            size = sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
            groups.append(RowGroup(rows=rg.num_rows, bytes=int(size)))
        return groups

    def rows(self, location: Location, path: str) -> int:
        """The row count of the footer."""
        return int(_parquet(location, path).metadata.num_rows)

    def columns(self, location: Location, path: str) -> list[str]:
        """The names of the file's Arrow schema."""
        return list(_parquet(location, path).schema_arrow.names)

    def chunks(
        self,
        location: Location,
        unit: WorkUnit,
        columns: Sequence[str],
        schema: Schema,
        chunk_rows: int,
    ) -> Iterator[Chunk]:
        """The unit's row groups (or row range of one), text columns as dictionaries."""
        return _parquet_chunks(location, unit, columns, schema, chunk_rows)

    def read_table(self, location: Location, path: str) -> pa.Table:
        """The whole file."""
        try:
            with location.open_input(path) as stream:
                return pq.read_table(stream)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"{location.uri_of(path)}: not a readable Parquet file ({exc})"
            ) from exc


def _parquet(location: Location, path: str, *, text: Sequence[str] = ()) -> pq.ParquetFile:
    """The Parquet file at ``path``; ``text`` columns are read as dictionaries."""
    try:
        return pq.ParquetFile(location.open_input(path), read_dictionary=list(text) or None)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{location.uri_of(path)}: not a readable Parquet file ({exc})") from exc


def _parquet_chunks(
    location: Location, unit: WorkUnit, columns: Sequence[str], schema: Schema, chunk_rows: int
) -> Iterator[Chunk]:
    pf = _parquet(location, unit.path)
    require_columns(location, unit.path, pf.schema_arrow.names, columns)
    text = [
        c.name
        for c in schema.columns
        if not c.numeric and pa.types.is_string(pf.schema_arrow.field(c.name).type)
    ]
    if text:
        pf = _parquet(location, unit.path, text=text)
    groups = (
        list(unit.row_groups)
        if unit.row_groups is not None
        else list(range(pf.metadata.num_row_groups))
    )
    row = unit.first_row
    start, stop = unit.row_range or (0, None)
    position = 0  # inside the row group, for a unit that is a range of one
    try:
        for batch in pf.iter_batches(
            batch_size=chunk_rows, row_groups=groups, columns=list(columns), use_threads=False
        ):
            if unit.row_range is not None:
                lo, hi = max(start, position), min(stop or 0, position + batch.num_rows)
                position += batch.num_rows
                if hi <= lo:
                    continue
                batch = batch.slice(lo - (position - batch.num_rows), hi - lo)
            yield Chunk(batch=batch, source=location.uri_of(unit.path), first_row=row)
            row += batch.num_rows
            if stop is not None and position >= stop:
                break  # the rest of the row group belongs to other shards
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{location.uri_of(unit.path)}: cannot read row {row}: {exc}") from exc
