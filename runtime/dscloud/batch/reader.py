"""Hand a chunk's Arrow columns to the scorer as numpy columns, whatever the file format.

The formats (:mod:`dscloud.batch.formats`) read files into Arrow record batches; this
module turns a batch's schema columns into what :meth:`~dscloud.scorer.Scorer.score_columns`
takes. Text in a numeric column (every CSV column, a string column anywhere) is parsed
here, and what does not parse is passed on as the original string, so that the core
rejects the row with its reason instead of the file failing.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from dscloud.batch.arrays import dictionary_codes, integer_array, numpy_array
from dscloud.schema import DTYPES, Schema

__all__ = ["columns_for_scoring"]

Array = npt.NDArray[Any]

#: Text a CSV uses for "no value" in a numeric column (case-insensitive); "" always is.
NULL_TOKENS = frozenset({"na", "n/a", "nan", "null", "none"})


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
            out[col.name] = _parse_numbers(array, col.dtype)
        elif col.dtype == "int64" and pa.types.is_integer(array.type):
            out[col.name] = _integers(array)
        elif (
            pa.types.is_integer(array.type)
            or pa.types.is_floating(array.type)
            or pa.types.is_boolean(array.type)
        ):
            values = numpy_array(array)
            if col.dtype in FLOATS and values.dtype.kind in "fiu":
                # The cast the core would make, done here on the reader's thread so that
                # the scoring thread (the pipeline's slowest stage) only runs the model.
                values = values.astype(DTYPES[col.dtype], copy=False)
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


def _parse_numbers(array: pa.Array, dtype: str) -> Array | list[Any]:
    """Text to numbers: one vectorised cast when every value parses, else value by value.

    For an int64 column the text is parsed as an integer (exact at any size), and only
    text that is not one (``"3.0"``, ``"2.5"``) goes through a decimal: integral values
    become ints, the rest floats for the core to refuse with its reason.
    """
    target = pa.int64() if dtype == "int64" else pa.float64()
    try:
        cast = array.cast(target)
    except pa.ArrowInvalid:
        pass
    else:
        return _integers(cast) if dtype == "int64" else numpy_array(cast)
    parse = _parse_integer if dtype == "int64" else _parse_float
    values: list[Any] = []
    for text in array.to_pylist():
        if text is None or text.strip().lower() in NULL_TOKENS:
            values.append(None)
        else:
            values.append(parse(text))
    return values


def _parse_float(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text  # the core reports: expected a number, got str 'abc'
    return int(number) if number.is_integer() and math.isfinite(number) else number


#: Digits beyond which a decimal is out of int64's range anyway: kept as a float rather
#: than expanded into a huge int (``1e999999999`` would be a billion digits).
_MAX_INT_DIGITS = 20


def _parse_integer(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return text  # the core reports: expected an integer, got str 'abc'
    if (
        number.is_finite()
        and number.adjusted() < _MAX_INT_DIGITS
        and number == number.to_integral_value()
    ):
        return int(number)
    return _parse_float(text)  # not an integer (or out of range): the core says so


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
