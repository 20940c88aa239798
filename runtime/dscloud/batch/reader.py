"""Stream a shard's rows in bounded chunks, and hand them to the scorer as numpy columns.

Parquet is read row group by row group (``iter_batches`` over only the needed columns);
CSV through pyarrow's streaming reader with every needed column read as text, so that a
stray ``"abc"`` in a numeric column becomes one rejected row with its reason instead of a
failed file. Memory is bounded by the chunk size, not the input size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dscloud.batch.arrays import dictionary_codes, integer_array, numpy_array
from dscloud.batch.locations import InputFile, Location
from dscloud.batch.plan import RowGroup, WorkUnit
from dscloud.cells import parse_cells
from dscloud.errors import ConfigError, DataError
from dscloud.schema import DTYPES, Column, Schema

__all__ = ["Chunk", "columns_for_scoring", "file_columns", "iter_chunks", "read_footer"]

Array = npt.NDArray[Any]


@dataclass
class Chunk:
    """Up to ``chunk_rows`` consecutive rows of one file, starting at ``first_row``."""

    batch: pa.RecordBatch
    source: str
    first_row: int

    @property
    def num_rows(self) -> int:
        return int(self.batch.num_rows)


def read_footer(location: Location, f: InputFile) -> list[RowGroup]:
    """The row groups (rows, compressed bytes) of the Parquet file ``f``.

    Raises :class:`DataError` when the file is not readable Parquet.
    """
    meta = _parquet(location, f.path).metadata
    groups = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        size = sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        groups.append(RowGroup(rows=rg.num_rows, bytes=int(size)))
    return groups


def file_columns(location: Location, unit: WorkUnit) -> list[str]:
    """The column names of ``unit``'s file (the CSV header, or the Parquet schema)."""
    if unit.format == "parquet":
        return list(_parquet(location, unit.path).schema_arrow.names)
    with _csv(location, unit.path, None) as reader:
        return list(reader.schema.names)


def unit_rows(location: Location, unit: WorkUnit) -> int | None:
    """Rows in ``unit`` when the format knows without reading them (Parquet), else None."""
    if unit.rows is not None:
        return unit.rows
    if unit.format != "parquet":
        return None
    return int(_parquet(location, unit.path).metadata.num_rows)


def iter_chunks(
    location: Location, unit: WorkUnit, columns: Sequence[str], schema: Schema, chunk_rows: int
) -> Iterator[Chunk]:
    """Chunks of ``unit``'s rows holding ``columns``.

    Raises :class:`ConfigError` when a column is absent from the file and
    :class:`DataError` when the file cannot be read.
    """
    if unit.format == "parquet":
        yield from _parquet_chunks(location, unit, columns, schema, chunk_rows)
    else:
        yield from _csv_chunks(location, unit, columns, schema, chunk_rows)


def _parquet(location: Location, path: str, *, text: Sequence[str] = ()) -> pq.ParquetFile:
    """The Parquet file at ``path``; ``text`` columns are read as dictionaries."""
    try:
        return pq.ParquetFile(location.open_input(path), read_dictionary=list(text) or None)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{location.uri_of(path)}: not a readable Parquet file ({exc})") from exc


def _missing(location: Location, path: str, have: Sequence[str], want: Sequence[str]) -> None:
    absent = [c for c in want if c not in have]
    if absent:
        raise ConfigError(
            f"{location.uri_of(path)} has no column {absent[0]!r}; it has {list(have)}. "
            "The model needs every schema column; --key names must exist too."
        )


def _parquet_chunks(
    location: Location, unit: WorkUnit, columns: Sequence[str], schema: Schema, chunk_rows: int
) -> Iterator[Chunk]:
    pf = _parquet(location, unit.path)
    _missing(location, unit.path, pf.schema_arrow.names, columns)
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


def _csv(location: Location, path: str, convert: pacsv.ConvertOptions | None) -> Any:
    stream = location.open_input(path)
    if path.lower().endswith(".gz"):
        stream = pa.CompressedInputStream(stream, "gzip")
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
        _missing(location, unit.path, probe.schema.names, columns)
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


def columns_for_scoring(batch: pa.RecordBatch, schema: Schema) -> dict[str, Array | list[Any]]:
    """The schema's columns of ``batch`` as numpy arrays (or lists) for ``score_columns``.

    Numeric Arrow columns become numeric arrays (nulls as NaN), already of the column's
    dtype when that is a float. Integers for an int64 column stay exact (see
    :func:`_integers`): a null or an out-of-range value is rejected by the core with its
    reason, never rounded through float64. Text becomes fixed-width
    ``str`` arrays when it has no nulls (built from the Arrow dictionary, so each distinct
    value is decoded once), else object arrays of ``str``/``None``. CSV text in a numeric
    column is parsed here, and what does not parse is passed through as the original
    string, so that the core rejects the row with its reason.
    """
    out: dict[str, Array | list[Any]] = {}
    for col in schema.columns:
        array = batch.column(col.name)
        dictionary = pa.types.is_dictionary(array.type)
        value_type = array.type.value_type if dictionary else array.type
        text = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
        if text and not col.numeric:
            out[col.name] = _text(array)
            continue
        if dictionary:
            array = array.dictionary_decode()
        if col.numeric and text:
            out[col.name] = _parse_numbers(array, col)
        elif col.dtype == "int64" and pa.types.is_integer(array.type):
            out[col.name] = _integers(array)
        elif (
            pa.types.is_integer(array.type)
            or pa.types.is_floating(array.type)
            or pa.types.is_boolean(array.type)
        ):
            values = numpy_array(array)
            if col.dtype in FLOATS and values.dtype.kind in "fiu":
                values = _narrowed(values, col.dtype)
            out[col.name] = values
        else:
            out[col.name] = array.to_pylist()
    return out


FLOATS = ("float32", "float64")

#: Longest text turned into a fixed-width array (4 bytes a character, every row).
MAX_FIXED_WIDTH = 64


def _text(array: pa.Array) -> Array:
    encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
    labels = encoded.dictionary.to_pylist()
    codes = dictionary_codes(encoded)
    if encoded.null_count or None in labels or max(map(len, labels), default=0) > MAX_FIXED_WIDTH:
        # Objects: str, and None for a null (code -1 picks the last entry).
        return np.array([*labels, None], dtype=np.object_)[codes]
    fixed: Array = np.asarray(labels, dtype=np.str_)[codes]
    return fixed


def _narrowed(values: Array, dtype: str) -> Array:
    """``values`` in the column's float dtype: the cast the core would make, done here on
    the reader's thread so that the scoring thread (the pipeline's slowest stage) only
    runs the model. A float64 beyond float32's range is left to the core: narrowed, it
    would be an infinity the core could not tell from one sent as such, and it refuses it.
    """
    with np.errstate(over="ignore"):
        narrowed: Array = values.astype(DTYPES[dtype], copy=False)
    if narrowed.dtype.itemsize >= values.dtype.itemsize or not np.isinf(narrowed).any():
        return narrowed  # one pass over the narrow array: the usual case
    made_infinite = np.count_nonzero(np.isinf(narrowed)) != np.count_nonzero(np.isinf(values))
    return values if made_infinite else narrowed


def _parse_numbers(array: pa.Array, col: Column) -> Array | list[Any]:
    """Text to numbers by the core's rule (:func:`dscloud.cells.parse_cells`).

    One vectorised Arrow cast when every cell parses (Arrow then reads each cell as the
    rule does: the same integer exactly, the same nearest float64); else cell by cell with
    the rule itself, which also knows the null spellings and keeps what does not parse as
    text for the core to refuse with its reason.
    """
    target = pa.int64() if col.dtype == "int64" else pa.float64()
    # Arrow also reads hexadecimal integers ("0x10"), which the rule keeps as text.
    decimal = col.dtype != "int64" or pc.all(pc.match_substring_regex(array, _DIGITS)).as_py()
    try:
        cast = array.cast(target) if decimal is not False else None
    except pa.ArrowInvalid:
        cast = None
    if cast is None:
        return parse_cells(col, array.to_pylist())
    if col.dtype == "int64":
        return _integers(cast)
    return _narrowed(numpy_array(cast), col.dtype)


_DIGITS = r"^[+-]?[0-9]+$"


def _integers(array: pa.Array) -> Array:
    """An integer Arrow column for an int64 model column, without losing precision.

    Without nulls: the integers themselves. With nulls: float64 holding NaN for them (the
    core rejects a null in an int64 column, and converts floats back vectorised), but only
    while every value is within 2**53, where float64 is exact; beyond that, an object array
    of ``int`` and ``None``, which the core checks value by value. A uint64 above int64's
    range also goes value by value, so that the core rejects it instead of wrapping it.
    """
    data, valid = integer_array(array)
    present = data if valid is None else data[valid]
    if present.size and data.dtype == np.uint64 and int(present.max()) > _INT64_MAX:
        return _objects(data, valid)
    if valid is None:
        return data
    if present.size and max(abs(int(present.min())), abs(int(present.max()))) > _FLOAT_EXACT:
        return _objects(data, valid)
    floats: Array = data.astype(np.float64)
    floats[~valid] = np.nan
    return floats


_INT64_MAX = 2**63 - 1
_FLOAT_EXACT = 2**53  # float64 holds every integer up to here exactly


def _objects(data: Array, valid: Array | None) -> Array:
    values: Array = data.astype(np.object_)  # Python ints, exact
    if valid is not None:
        values[~valid] = None
    return values
