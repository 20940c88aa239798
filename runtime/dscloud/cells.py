"""Text cells into values: the one rule for every input whose cells arrive as text.

CSV over HTTP (``POST /invocations`` with ``text/csv``), CSV in batch, and a text column
of a Parquet file scored into a numeric model column all turn text into values here, so
the same cell means the same thing in every runtime. JSON carries typed values and never
comes through this module: ``"12"`` in JSON is a string, and a numeric column refuses it.

The rule, per model column (:class:`~dscloud.columns.Column`):

- **Null.** In a numeric column a cell is null when, stripped of surrounding whitespace,
  it is empty or one of ``na``, ``n/a``, ``nan``, ``null``, ``none`` in any case
  (:data:`NULL_TOKENS`): the spellings pandas, R and databases write for a missing number.
  In a string column only the empty cell is null (quoted or not): ``"NA"`` or ``"none"``
  is legitimate text there (a country code, a plan), kept as written, whitespace included.
  A null then follows the column: allowed when it is nullable, else the row is refused.
- **int64.** ASCII decimal digits with an optional sign, parsed exactly at any size (never
  through float64, so ``9007199254740993`` stays itself; beyond int64 the core refuses
  it as out of range). Integral text in another spelling (``"3.0"``, ``"1e3"``) is that
  integer; ``"2.5"`` is the float the core refuses as not an integer.
- **float32 / float64.** A decimal or exponent number, ``inf``/``infinity`` with a sign,
  parsed to the nearest float64 (the core narrows to float32 and refuses what overflows).
- **Anything else** (``"abc"``, ``"1_000"``, non-ASCII digits) stays the original text, so
  the core refuses the row with the same reason JSON gets: ``expected a number, got str
  'abc'``.

A reader may take a faster path for the cells it can convert in bulk (batch casts a whole
Arrow column when every cell parses), as long as it gives the same values as
:func:`parse_cells`; ``tests/runtime/test_cells.py`` holds it to that.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from dscloud.columns import Column

__all__ = ["NULL_TOKENS", "is_null", "parse_cell", "parse_cells"]

#: Text a numeric cell uses for "no value", compared stripped and lower-cased.
NULL_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})

#: Exponents beyond this many digits are out of int64's range anyway: such text is kept a
#: float rather than expanded into a huge integer (``1e999999999`` is a billion digits).
_MAX_INT_DIGITS = 20


def is_null(column: Column, text: str | None) -> bool:
    """True when ``text`` is a null cell of ``column`` (None is always one)."""
    if text is None:
        return True
    if not column.numeric:
        return text == ""
    return text.strip().lower() in NULL_TOKENS


def parse_cell(column: Column, text: str | None) -> Any:
    """The value of one text cell of ``column``: None, an int, a float or the text itself.

    Never raises: a cell that is not a value of the column comes back as its text, for the
    core to refuse with its reason.
    """
    if text is None:
        return None
    if not column.numeric:
        return None if text == "" else text
    return _integer(text) if column.dtype == "int64" else _float(text)


def parse_cells(column: Column, texts: Iterable[str | None]) -> list[Any]:
    """:func:`parse_cell` over a column of cells; returns a list of values."""
    if not column.numeric:
        return [None if t is None or t == "" else t for t in texts]
    parse = _integer if column.dtype == "int64" else _float
    return [None if t is None else parse(t) for t in texts]


# Both parsers try Python's own parser first (the common case: a plain number) and only
# then look closer, so that the rule costs little more than ``float()`` per cell.


def _float(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return None if text.strip().lower() in NULL_TOKENS else text
    if not text.isascii() or "_" in text:
        return text  # float() takes these; no CSV writer means them as numbers
    if value != value and text.strip().lower() in NULL_TOKENS:
        return None  # "nan", "NaN": a null spelling (any other NaN is a null to the core)
    return value


def _integer(text: str) -> Any:
    try:
        value = int(text)
    except ValueError:
        return _integer_in_other_spelling(text)
    return value if text.isascii() and "_" not in text else text


def _integer_in_other_spelling(text: str) -> Any:
    if text.strip().lower() in NULL_TOKENS:
        return None
    if not text.isascii() or "_" in text:
        return text
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return text
    if (
        number.is_finite()
        and number.adjusted() < _MAX_INT_DIGITS
        and number == number.to_integral_value()
    ):
        return int(number)
    return _float(text)  # not an integer (or beyond int64): the core says which
