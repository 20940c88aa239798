"""The one rule for text cells, and the batch reader's bulk path held to it."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from dscloud.batch.reader import columns_for_scoring
from dscloud.cells import NULL_TOKENS, is_null, parse_cell, parse_cells
from dscloud.columns import Column
from dscloud.schema import Output, Schema

F64 = Column("x", "float64", nullable=True)
F32 = Column("x", "float32", nullable=True)
INT = Column("n", "int64")
TEXT = Column("s", "string", nullable=True)


@pytest.mark.parametrize("text", ["", " ", "NA", "na", "N/A", "NaN", "null", "NULL", " None "])
def test_null_spellings_are_null_in_a_numeric_column(text: str) -> None:
    assert parse_cell(F64, text) is None
    assert parse_cell(INT, text) is None


@pytest.mark.parametrize("text", ["NA", "null", "none", " ", "N/A"])
def test_a_string_column_keeps_null_spellings_as_text(text: str) -> None:
    # given a word that is a null in a number column
    # then in a string column it is the text itself (a country code NA, a plan "none")
    assert parse_cell(TEXT, text) == text
    assert not is_null(TEXT, text)


def test_only_the_empty_cell_is_null_in_a_string_column() -> None:
    assert parse_cell(TEXT, "") is None
    assert parse_cell(TEXT, None) is None
    assert "" in NULL_TOKENS


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        (" -7 ", -7),
        ("+3", 3),
        ("9007199254740993", 2**53 + 1),  # beyond float64's exact integers
        ("99999999999999999999", 99999999999999999999),  # the core refuses it: out of range
        ("3.0", 3),
        ("1e3", 1000),
        ("2.5", 2.5),  # the core refuses it: not an integer
    ],
)
def test_integers_are_parsed_exactly(text: str, value: Any) -> None:
    got = parse_cell(INT, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1.5", 1.5), (" 2 ", 2.0), ("1e39", 1e39), ("-inf", -math.inf), ("Infinity", math.inf)],
)
def test_floats_are_the_nearest_float64(text: str, value: float) -> None:
    got = parse_cell(F64, text)
    assert got == value and type(got) is float


@pytest.mark.parametrize("text", ["abc", "1_000", "١٢", "0x1A", "1,5", "sNaN"])
@pytest.mark.parametrize("column", [F64, INT])
def test_what_is_not_a_number_stays_text_for_the_core_to_refuse(column: Column, text: str) -> None:
    assert parse_cell(column, text) == text


# -- the batch reader's bulk cast gives what the rule gives ---------------------------------

CELLS = [
    "1",
    "-2",
    "+3",
    "0.5",
    "+.5e-3",
    "1E-3",
    ".5",
    "5.",
    "007",
    "-0",
    "inf",
    "-Infinity",
    "-nan",
    "1e400",
    "1e39",
]
INT_CELLS = [
    "1",
    "-2",
    "+3",
    "007",
    "-0",
    "9223372036854775807",
    "-9223372036854775808",
    "0x10",
    "0X1f",
]


@pytest.mark.parametrize("column", [F64, F32])
@pytest.mark.parametrize("text", CELLS)
def test_the_bulk_float_cast_reads_each_cell_as_the_rule_does(column: Column, text: str) -> None:
    assert _scored(column, [text]) == _scored(column, [text], bulk=False)


@pytest.mark.parametrize("text", INT_CELLS)
def test_the_bulk_integer_cast_reads_each_cell_as_the_rule_does(text: str) -> None:
    assert _scored(INT, [text]) == _scored(INT, [text], bulk=False)


def _scored(column: Column, texts: list[str], *, bulk: bool = True) -> tuple[Any, dict[int, str]]:
    """The feed and rejects the core makes of ``texts``: read by the batch reader (bulk),
    or parsed cell by cell with the rule."""
    schema = Schema(columns=(column,), outputs=(Output("y", "value"),))
    if bulk:
        values: Any = columns_for_scoring(pa.record_batch({column.name: texts}), schema)
    else:
        values = {column.name: [parse_cell(column, t) for t in texts]}
    encoded = schema.encode_columns(values, len(texts))
    feed = encoded.feeds[column.name].ravel().tolist()
    return [repr(v) for v in feed], encoded.rejects


@pytest.mark.parametrize("column", [F64, INT, TEXT])
def test_a_cell_is_null_exactly_when_it_parses_to_none(column: Column) -> None:
    cells = [*NULL_TOKENS, " NA ", "nan", "-nan", "0", "abc", "1_0", "", None]
    assert [is_null(column, c) for c in cells] == [parse_cell(column, c) is None for c in cells]
    assert list(map(repr, parse_cells(column, cells))) == [
        repr(parse_cell(column, c)) for c in cells
    ]
