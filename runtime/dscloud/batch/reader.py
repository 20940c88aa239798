"""Hand a chunk's Arrow columns to the scorer as numpy columns, whatever the file format.

The formats (:mod:`dscloud.batch.formats`) read files into Arrow record batches; this
module turns a batch's schema columns into what :meth:`~dscloud.scorer.Scorer.score_columns`
takes. Text in a numeric column (every CSV column, a string column anywhere) becomes
values by the core's one rule for text cells (:mod:`dscloud.cells`), the rule CSV over
HTTP uses too; what does not parse is passed on as the original string, so that the core
rejects the row with its reason instead of the file failing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from dscloud.batch.arrays import dictionary_codes, integer_array, numpy_array
from dscloud.cells import parse_cells
from dscloud.schema import DTYPES, Column, Schema

__all__ = ["columns_for_scoring"]

Array = npt.NDArray[Any]


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
