"""One column of input values into one ONNX tensor, with a reason for every row refused.

A :class:`Column` declares one input feature; :func:`convert` is the conversion
:class:`~dscloud.schema.Schema` applies per column: numbers (float32,
float64, int64) and strings, from Python lists (JSON) or numpy arrays (Parquet/CSV). Fast
paths handle clean input in numpy; anything unusual goes value by value so that each bad
row gets its own reason naming the column and what it expected.
"""

from __future__ import annotations

import math
from array import array as _c_array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dscloud.errors import EnvelopeError

__all__ = ["DTYPES", "F32_MAX", "MISSING", "Column", "convert", "encodable", "exact"]

Array = npt.NDArray[Any]

#: dtype names a column may declare, and the numpy dtype of its ONNX tensor.
DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "string": np.object_,
}
#: Stands in for a value a row does not have (a missing key), unlike an explicit null.
MISSING = object()


@dataclass(frozen=True)
class Column:
    """One input feature. ``categories`` with ``allow_unknown=False`` refuses other values."""

    name: str
    dtype: str
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    allow_unknown: bool = True

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise EnvelopeError(
                f"column {self.name!r}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}"
            )

    @property
    def numeric(self) -> bool:
        return self.dtype != "string"

    def describe(self) -> str:
        """A short human description of what this column accepts, for error messages."""
        if not self.numeric:
            if self.categories is not None and not self.allow_unknown:
                text = f"one of {list(self.categories)}"
            else:
                text = "a string"
        elif self.dtype == "int64":
            text = "an integer"
        else:
            text = "a number"
        return text + (" or null" if self.nullable else "")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "nullable": self.nullable}
        if self.categories is not None:
            out["categories"] = list(self.categories)
            out["allow_unknown"] = self.allow_unknown
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        cats = data.get("categories")
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            nullable=bool(data.get("nullable", False)),
            categories=tuple(str(c) for c in cats) if cats is not None else None,
            allow_unknown=bool(data.get("allow_unknown", True)),
        )


def exact(col: Column, values: Sequence[Any]) -> bool:
    """True when every value is exactly what ``col`` takes, so no row can be rejected."""
    # A plain loop: for the one to few values this sees, generators cost more than checks.
    dtype = col.dtype
    for v in values:
        t = type(v)
        if dtype == "string":
            if t is not str or not (v.isascii() or encodable(v)):
                return False
        elif dtype == "int64":
            if t is not int:
                return False
        elif t is float:
            if v != v and not col.nullable:
                return False
        elif t is not int:
            return False
    if dtype == "string" and not col.allow_unknown and col.categories is not None:
        return set(values) <= set(col.categories)
    return True


def convert(col: Column, values: Sequence[Any] | Array) -> tuple[Array, dict[int, str]]:
    """Convert one column; returns the array (bad rows hold a placeholder) and row reasons."""
    if col.numeric:
        return _convert_numeric(col, values)
    return _convert_string(col, values)


def _convert_numeric(col: Column, values: Sequence[Any] | Array) -> tuple[Array, dict[int, str]]:
    dtype = DTYPES[col.dtype]
    bad: dict[int, str] = {}
    if isinstance(values, np.ndarray) and values.dtype.kind == "f" and col.dtype == "int64":
        return _floats_to_int(col, values)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        with np.errstate(over="ignore"):
            array = values.astype(dtype, copy=False)
    elif isinstance(values, np.ndarray) and values.dtype.kind == "b":
        return np.zeros(len(values), dtype=dtype), {
            i: f"column {col.name!r}: expected {col.describe()}, got a boolean"
            for i in range(len(values))
        }
    elif not isinstance(values, np.ndarray) and (fast := _numbers(col, values)) is not None:
        array = fast
    else:
        array = np.zeros(len(values), dtype=dtype)
        for i, v in enumerate(values):
            if v is MISSING:
                bad[i] = f"column {col.name!r} is missing: expected {col.describe()}"
            elif v is None or (isinstance(v, float | np.floating) and math.isnan(v)):
                array[i] = np.nan if col.dtype != "int64" else 0
                if not col.nullable or col.dtype == "int64":
                    bad[i] = f"column {col.name!r} is null: expected {col.describe()}"
            elif not _is_number(col, v):
                bad[i] = f"column {col.name!r}: expected {col.describe()}, got {_show(v)}"
            elif (
                col.dtype == "int64"
                and isinstance(v, float | np.floating)
                and not float(v).is_integer()
            ):
                bad[i] = f"column {col.name!r}: expected {col.describe()}, got {v!r}"
            else:
                try:
                    with np.errstate(over="ignore"):  # float32 overflow: flagged below
                        array[i] = v
                except OverflowError:
                    bad[i] = f"column {col.name!r}: {_show(v)} is out of range for {col.dtype}"
                except (TypeError, ValueError):  # a __float__ that refuses (Decimal("sNaN"))
                    bad[i] = f"column {col.name!r}: expected {col.describe()}, got {_show(v)}"
        if array.dtype.kind == "f" and not col.nullable:
            for i in np.flatnonzero(np.isnan(array)).tolist():  # Decimal("NaN") and kin
                bad.setdefault(i, f"column {col.name!r} is null: expected {col.describe()}")
        _flag_overflow(col, values, array, bad)
        return array, bad
    if array.dtype.kind == "f" and not col.nullable and _has_nan(values, array):
        for i in np.flatnonzero(np.isnan(array)).tolist():
            bad[i] = f"column {col.name!r} is null: expected {col.describe()}"
    _flag_overflow(col, values, array, bad)
    return array, bad


F32_MAX = float(np.finfo(np.float32).max)


def _flag_overflow(
    col: Column, values: Sequence[Any] | Array, array: Array, bad: dict[int, str]
) -> None:
    """Reject finite inputs that became infinite in float32 (1e300, 10**40): scoring them
    would answer a confident prediction for a number the model cannot represent."""
    if col.dtype != "float32":
        return
    with np.errstate(over="ignore"):
        infinite = np.flatnonzero(np.isinf(array))
    for i in infinite.tolist():
        v = values[i]
        if i not in bad and not (isinstance(v, float | np.floating) and math.isinf(v)):
            bad[i] = (
                f"column {col.name!r}: {_show(v)} is out of range for float32 "
                f"(at most {F32_MAX:.4g} in magnitude)"
            )


#: Booleans are refused as numbers, although Python and numpy count them as integers.
_BOOLEANS = (bool, np.bool_)
#: Text is refused as a number, although it may convert (``float("1.5")``).
_TEXT = (str, bytes, np.str_, np.bytes_)


def _is_number(col: Column, value: Any) -> bool:
    """Whether the per-value path takes ``value`` as a number of ``col``.

    The rule is the one the C conversion of :func:`_numbers` applies, so that a column
    gets the same answer whichever path it takes: an int64 column takes integers (Python
    and numpy) and integral floats; a float column takes anything that converts itself to
    a float (``__float__`` or ``__index__``: Python and numpy numbers, ``Decimal``,
    ``Fraction``). Never a boolean, never text.
    """
    if isinstance(value, _BOOLEANS + _TEXT):
        return False
    if col.dtype == "int64":
        return isinstance(value, (int, float, np.integer, np.floating))
    kind = type(value)
    return hasattr(kind, "__float__") or hasattr(kind, "__index__")


#: Up to this many 0/1 values in a column are looked at one by one for booleans; beyond
#: it, one pass over the types of the whole column is cheaper.
_FEW_CANDIDATES = 64


def _numbers(col: Column, values: Sequence[Any]) -> Array | None:
    """``values`` as the column's array in one C pass, or None when some value needs the
    per-value path (a null, a missing value, text, a boolean, an int beyond the dtype, a
    float in an int64 column), which says what is wrong with it.

    ``array.array`` converts a sequence of numbers without numpy's per-element type
    discovery (the cost of scoring many rows was mostly that) and refuses everything that
    is not a number, except booleans, which it takes as 0 and 1: so only the values that
    came out 0 or 1 are looked at again.
    """
    try:
        if col.dtype == "int64":
            array: Array = np.frombuffer(_c_array("q", values), dtype=np.int64)
        else:
            array = np.frombuffer(_c_array("d", values), dtype=np.float64)
    except (TypeError, OverflowError, ValueError):
        return None
    candidates = np.flatnonzero((array == 0) | (array == 1))
    if len(candidates) > _FEW_CANDIDATES:
        if not _BOOLEAN_TYPES.isdisjoint(map(type, values)):
            return None
    elif len(candidates) and any(type(values[i]) in _BOOLEAN_TYPES for i in candidates.tolist()):
        return None
    if col.dtype == "float32":
        with np.errstate(over="ignore"):  # float32 overflow: flagged by the caller
            return array.astype(np.float32)
    return array


_BOOLEAN_TYPES = frozenset(_BOOLEANS)


def _has_nan(values: Sequence[Any] | Array, array: Array) -> bool:
    # A few Python floats are checked faster in Python than by a numpy reduction, which
    # dominates the cost of scoring a single row.
    if len(values) <= 16 and not isinstance(values, np.ndarray):
        return any(v != v for v in values)
    return bool(np.isnan(array).any())


def _floats_to_int(col: Column, values: Array) -> tuple[Array, dict[int, str]]:
    """A float array into an int64 column: NaN is a null, a fraction is not an integer."""
    bad: dict[int, str] = {}
    nan = np.isnan(values)
    with np.errstate(invalid="ignore"):
        fraction = ~nan & (np.mod(values, 1) != 0)
        too_big = ~nan & ~fraction & (np.abs(values) >= 2.0**63)
    for i in np.flatnonzero(nan).tolist():
        bad[i] = f"column {col.name!r} is null: expected {col.describe()}"
    for i in np.flatnonzero(fraction).tolist():
        bad[i] = f"column {col.name!r}: expected {col.describe()}, got {float(values[i])!r}"
    for i in np.flatnonzero(too_big).tolist():
        bad[i] = f"column {col.name!r}: {float(values[i])!r} is out of range for {col.dtype}"
    array = np.where(nan | fraction | too_big, 0.0, values).astype(np.int64)
    return array, bad


def _convert_string(col: Column, values: Sequence[Any] | Array) -> tuple[Array, dict[int, str]]:
    strict = col.categories is not None and not col.allow_unknown
    allowed = frozenset(col.categories or ())
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        # Fixed-width text holds only strings (no nulls), and ONNX Runtime takes it as is.
        if not strict or set(np.unique(values).tolist()) <= allowed:
            return values, {}
    elif _valid_strings(values, allowed if strict else None):
        return np.asarray(values, dtype=np.object_), {}
    bad: dict[int, str] = {}
    array = np.empty(len(values), dtype=np.object_)
    items = values.tolist() if isinstance(values, np.ndarray) else values  # str, not np.str_
    for i, v in enumerate(items):
        if isinstance(v, str):
            if strict and v not in allowed:
                bad[i] = f"column {col.name!r}: expected {col.describe()}, got {v!r}"
            elif not v.isascii() and not encodable(v):
                bad[i] = f"column {col.name!r}: {v!r} is not valid UTF-8 (a lone surrogate)"
                v = ""
            array[i] = v
        elif v is MISSING:
            bad[i] = f"column {col.name!r} is missing: expected {col.describe()}"
            array[i] = ""
        elif v is None or (isinstance(v, float) and math.isnan(v)):
            # A nullable string column scores a null as the empty string (an unseen category).
            array[i] = ""
            if not col.nullable:
                bad[i] = f"column {col.name!r} is null: expected {col.describe()}"
        else:
            bad[i] = f"column {col.name!r}: expected {col.describe()}, got {_show(v)}"
            array[i] = ""
    return array, bad


def _valid_strings(values: Sequence[Any] | Array, allowed: frozenset[str] | None) -> bool:
    """True when every value is a string (and in ``allowed``, if given): one hashing pass
    over the distinct values instead of a Python loop over every row."""
    try:
        distinct = set(values.tolist() if isinstance(values, np.ndarray) else values)
    except TypeError:  # unhashable values (JSON objects or lists): take the slow path
        return False
    if not all(isinstance(v, str) and (v.isascii() or encodable(v)) for v in distinct):
        return False
    return allowed is None or distinct <= allowed


def encodable(text: str) -> bool:
    """False for text ONNX Runtime cannot take: a lone surrogate (valid JSON, not UTF-8)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        # A numpy scalar (from Parquet) is shown as the Python value JSON or CSV would
        # carry, so the same number gets the same reason in every runtime.
        value = value.item()
    if isinstance(value, bool):
        return "a boolean"
    try:
        text = repr(value)
    except RecursionError:  # a list nested ~1,000 deep: a client's error, not ours
        text = "[[[... (nested too deeply)"
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
