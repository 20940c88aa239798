"""Arrow columns to scorer columns, and the core's fast paths they rely on."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dscloud.batch.reader import columns_for_scoring
from dscloud.schema import Column, Output, Schema

SCHEMA = Schema(
    columns=(
        Column("n", "float32"),
        Column("k", "int64"),
        Column("plan", "string", categories=("a", "b"), allow_unknown=False),
        Column("note", "string", nullable=True),
    ),
    outputs=(Output("y", "value"),),
)


def encode(batch: pa.RecordBatch) -> dict[int, str]:
    columns = columns_for_scoring(batch, SCHEMA)
    return SCHEMA.encode_columns(columns, batch.num_rows).rejects


def test_clean_text_becomes_fixed_width_and_passes_straight_through() -> None:
    batch = pa.record_batch(
        {
            "n": [1.0, 2.0],
            "k": [1, 2],
            "plan": ["a", "b"],
            "note": pa.array(["x", "y"]).dictionary_encode(),
        }
    )

    columns = columns_for_scoring(batch, SCHEMA)
    encoded = SCHEMA.encode_columns(columns, 2)

    assert columns["plan"].dtype.kind == "U"  # type: ignore[union-attr]
    assert encoded.rejects == {}
    assert encoded.feeds["note"].ravel().tolist() == ["x", "y"]


def test_csv_text_in_numeric_columns_is_parsed_and_the_rest_rejected_with_reasons() -> None:
    batch = pa.record_batch(
        {
            "n": ["1.5", "abc", None, "NA", "2"],
            "k": ["1", "2.0", "2.5", "3", "x"],
            "plan": ["a", "a", "a", "c", None],
            "note": ["x", None, "y", "z", "w"],
        }
    )

    rejects = encode(batch)

    assert set(rejects) == {1, 2, 3, 4}
    assert "expected a number, got str 'abc'" in rejects[1]
    assert "column 'n' is null" in rejects[2]
    assert "column 'k': expected an integer, got 2.5" in rejects[2]
    assert "column 'plan': expected one of ['a', 'b'], got 'c'" in rejects[3]
    assert "column 'plan' is null" in rejects[4]
    assert "got str 'x'" in rejects[4]


def test_parquet_nulls_in_an_integer_column_are_rejected_not_garbage() -> None:
    batch = pa.record_batch(
        {
            "n": [1.0, 2.0, 3.0],
            "k": pa.array([1, None, 3]),
            "plan": ["a", "a", "b"],
            "note": [None, "x", "y"],
        }
    )

    columns = columns_for_scoring(batch, SCHEMA)
    encoded = SCHEMA.encode_columns(columns, 3)

    assert list(encoded.rejects) == [1]
    assert "column 'k' is null" in encoded.rejects[1]
    assert encoded.feeds["k"].ravel().tolist() == [1, 3]


@pytest.mark.parametrize(
    "values",
    [
        ["a", "b", "a"],
        np.array(["a", "b", "a"], dtype=object),
        np.array(["a", "b", "a"]),
        ["a", None, "q"],
        np.array(["a", "q", "b"]),
        ["a", {"x": 1}, "b"],
    ],
)
def test_string_fast_paths_agree_with_the_row_by_row_path(values: object) -> None:
    col = SCHEMA.column("plan")
    # Lists with a non-string take the slow path: the reference to agree with.
    slow = {i: v for i, v in enumerate(list(values)) if not (isinstance(v, str) and v in "ab")}  # type: ignore[call-overload]

    encoded = Schema(columns=(col,), outputs=SCHEMA.outputs).encode_columns({"plan": values}, 3)  # type: ignore[dict-item]

    assert sorted(encoded.rejects) == sorted(slow)
    assert encoded.feeds["plan"].ravel().tolist() == [
        v for v in list(values) if isinstance(v, str) and v in "ab"
    ]  # type: ignore[call-overload]


def test_float_columns_arrive_in_the_column_dtype_with_nulls_as_nan() -> None:
    schema = Schema(
        (Column("x", "float32", nullable=True), Column("k", "int64", nullable=True)),
        (Output("y", "value"),),
    )
    batch = pa.record_batch({"x": pa.array([0.1, None, 3.0]), "k": pa.array([1.0, 2.5, None])})

    columns = columns_for_scoring(batch, schema)

    x = columns["x"]
    assert isinstance(x, np.ndarray) and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.array([0.1, np.nan, 3.0], dtype=np.float32))
    # an int64 column keeps its floats, so that the core can say which are not integers
    assert set(schema.encode_columns(columns, 3).rejects) == {1, 2}


def test_a_float64_beyond_float32_is_rejected_not_scored_as_infinity() -> None:
    schema = Schema((Column("x", "float32"),), (Output("y", "value"),))
    batch = pa.record_batch({"x": pa.array([1e39, 2.0, -np.inf])})

    encoded = schema.encode_columns(columns_for_scoring(batch, schema), 3)

    # the same reason JSON gets (a Python float, not a numpy one); an infinity sent as
    # such is the client's to send
    assert encoded.rejects == {
        0: "column 'x': float 1e+39 is out of range for float32 (at most 3.403e+38 in magnitude)"
    }
    assert encoded.feeds["x"].ravel().tolist() == [2.0, -np.inf]


BIG = 2**53 + 1  # the first integer float64 cannot hold: it rounds to 2**53


def encode_k(k: pa.Array) -> tuple[list[int], dict[int, str]]:
    """The int64 feed of column ``k`` and the rejects, for a batch with valid other columns."""
    n = len(k)
    batch = pa.record_batch({"n": [1.0] * n, "k": k, "plan": ["a"] * n, "note": ["x"] * n})
    encoded = SCHEMA.encode_columns(columns_for_scoring(batch, SCHEMA), n)
    return encoded.feeds["k"].ravel().tolist(), encoded.rejects


def test_csv_integers_above_2_53_stay_exact_when_another_cell_does_not_parse() -> None:
    k = pa.array([str(BIG), "NA", "3.0", str(-(2**63)), str(2**63 - 1)])

    feed, rejects = encode_k(k)

    assert feed == [BIG, 3, -(2**63), 2**63 - 1]
    assert list(rejects) == [1]
    assert "column 'k' is null" in rejects[1]


def test_csv_integers_above_2_53_stay_exact_next_to_an_empty_cell() -> None:
    feed, rejects = encode_k(pa.array([str(BIG), None, "7"]))

    assert feed == [BIG, 7]
    assert list(rejects) == [1]
    assert "column 'k' is null" in rejects[1]


def test_parquet_int64_with_nulls_stays_exact_above_2_53() -> None:
    feed, rejects = encode_k(pa.array([2**62 + 1, None, -BIG], type=pa.int64()))

    assert feed == [2**62 + 1, -BIG]
    assert list(rejects) == [1]
    assert "column 'k' is null" in rejects[1]


def test_uint64_above_the_int64_range_is_rejected_not_wrapped() -> None:
    feed, rejects = encode_k(pa.array([1, 2**63], type=pa.uint64()))

    assert feed == [1]
    assert list(rejects) == [1]
    assert "out of range" in rejects[1]
