"""numpy <-> Arrow for the batch path, straight through the buffers.

pyarrow's own conversions (``Array.to_numpy``, ``pa.array``, ``pa.scalar``) import pandas
on first use to check for pandas objects: about 0.2 s of CPU in every ``dsc score``
process (and every ``--workers`` child), spent before the first chunk can score. The
columns the batch job moves are flat numbers, booleans, dictionary indices and a few
strings, whose Arrow layout is a validity bitmap plus one data buffer, so they are read
and built here from the buffers instead; anything else falls back to pyarrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = [
    "arrow_array",
    "arrow_strings",
    "dictionary_codes",
    "integer_array",
    "numpy_array",
    "valid_mask",
]

Array = npt.NDArray[Any]


def _fixed_width(type_: pa.DataType) -> np.dtype[Any] | None:
    """The numpy dtype whose items are laid out as ``type_``'s values, if there is one."""
    if pa.types.is_floating(type_):
        return np.dtype(f"<f{type_.bit_width // 8}")
    if pa.types.is_signed_integer(type_):
        return np.dtype(f"<i{type_.bit_width // 8}")
    if pa.types.is_unsigned_integer(type_):
        return np.dtype(f"<u{type_.bit_width // 8}")
    return None


def _bits(buffer: pa.Buffer, offset: int, n: int) -> Array:
    """``n`` bits of an Arrow bitmap (least significant bit first) from bit ``offset``."""
    packed = np.frombuffer(buffer, dtype=np.uint8)
    bits: Array = np.unpackbits(packed, count=offset + n, bitorder="little")[offset:]
    return bits.view(np.bool_)


def valid_mask(array: pa.Array) -> Array | None:
    """Which values of ``array`` are not null, or None when none is."""
    if not array.null_count:
        return None
    return _bits(array.buffers()[0], array.offset, len(array))


def numpy_array(array: pa.Array) -> Array:
    """``array`` as numpy, as ``array.to_numpy(zero_copy_only=False)`` gives it.

    Integers and floats without nulls are a read-only view of the Arrow buffer; with
    nulls they become floats holding NaN (integers as float64). Booleans without nulls
    are unpacked. Other types (and booleans with nulls, an object array) go through
    pyarrow.
    """
    n = len(array)
    dtype = _fixed_width(array.type)
    if dtype is not None:
        if n == 0:
            return np.empty(0, dtype=dtype if not array.null_count else np.float64)
        data: Array = np.frombuffer(
            array.buffers()[1], dtype=dtype, count=n, offset=array.offset * dtype.itemsize
        )
        valid = valid_mask(array)
        if valid is None:
            return data
        filled = data.astype(np.float64 if dtype.kind in "iu" else dtype)
        filled[~valid] = np.nan
        return filled
    if pa.types.is_boolean(array.type) and not array.null_count:
        return _bits(array.buffers()[1], array.offset, n) if n else np.empty(0, np.bool_)
    return np.asarray(array.to_numpy(zero_copy_only=False))


def integer_array(array: pa.Array) -> tuple[Array, Array | None]:
    """An integer ``array`` as numpy integers of its own width, and its validity.

    Returns the values (a null holds 0) and :func:`valid_mask`'s mask (None when no value
    is null). Unlike :func:`numpy_array`, nulls do not turn the values into float64, which
    holds integers exactly only up to 2**53. Raises ``TypeError`` for a non-integer type.
    """
    dtype = _fixed_width(array.type)
    if dtype is None or dtype.kind not in "iu":
        raise TypeError(f"an array of {array.type}: expected integers")
    n = len(array)
    if n == 0:
        return np.empty(0, dtype=dtype), None
    data: Array = np.frombuffer(
        array.buffers()[1], dtype=dtype, count=n, offset=array.offset * dtype.itemsize
    )
    valid = valid_mask(array)
    if valid is None:
        return data, None
    return np.where(valid, data, 0).astype(dtype, copy=False), valid


def dictionary_codes(array: pa.DictionaryArray) -> Array:
    """The dictionary index of every value of ``array``, -1 where the value is null."""
    indices = array.indices
    dtype = _fixed_width(indices.type)
    n = len(indices)
    if dtype is None:
        raise TypeError(f"dictionary indices of type {indices.type}: expected integers")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    data: Array = np.frombuffer(
        indices.buffers()[1], dtype=dtype, count=n, offset=indices.offset * dtype.itemsize
    )
    valid = valid_mask(indices)
    return data if valid is None else np.where(valid, data, -1)


def arrow_array(values: Array) -> pa.Array:
    """A 1-D numpy array as an Arrow array without nulls (NaN stays a float value).

    Numbers share the numpy memory; booleans are packed; text of few distinct values
    (labels) is built from its distinct values. Anything else goes through ``pa.array``.
    """
    values = np.asarray(values)
    n = len(values)
    if values.ndim == 1 and values.dtype.kind in "iuf":
        data = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"), copy=False)
        return pa.Array.from_buffers(pa.from_numpy_dtype(data.dtype), n, [None, pa.py_buffer(data)])
    if values.ndim == 1 and values.dtype.kind == "b":
        packed = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(packed)])
    if values.ndim == 1 and values.dtype.kind in "UO" and n:
        try:
            distinct, indices = np.unique(values, return_inverse=True)
        except TypeError:  # mixed types: let pyarrow say what it makes of them
            return pa.array(values)
        labels = distinct.tolist()
        if all(type(v) is str for v in labels):
            codes = arrow_array(indices.astype(np.int32, copy=False))
            encoded = pa.DictionaryArray.from_arrays(codes, arrow_strings(labels))
            return encoded.dictionary_decode()
    return pa.array(values)


def arrow_strings(values: Sequence[str]) -> pa.Array:
    """A string array of ``values`` (no nulls)."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
    return pa.Array.from_buffers(
        pa.string(),
        len(encoded),
        [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
    )
