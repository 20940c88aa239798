"""Validation of rows against the schema: per-row reasons that name the field."""

from __future__ import annotations

import numpy as np
import pytest

from dscloud.errors import SchemaError
from dscloud.schema import SHARE_ROWS, Column, Output, Schema

SCHEMA = Schema(
    columns=(
        Column("tenure", "float32"),
        Column("age", "float32", nullable=True),
        Column("plan", "string", categories=("basic", "premium"), allow_unknown=False),
        Column("region", "string", categories=("north",), allow_unknown=True),
    ),
    outputs=(Output("label", "label"), Output("probabilities", "probabilities")),
)
GOOD = {"tenure": 3, "age": None, "plan": "basic", "region": "mars"}


def test_valid_rows_become_one_column_tensor_each() -> None:
    enc = SCHEMA.encode_records([GOOD, {**GOOD, "age": 40.5}])
    assert not enc.rejects and enc.rows.tolist() == [0, 1]
    assert enc.feeds["tenure"].shape == (2, 1) and enc.feeds["tenure"].dtype == np.float32
    assert np.isnan(enc.feeds["age"][0, 0]) and enc.feeds["age"][1, 0] == 40.5
    assert enc.feeds["plan"].tolist() == [["basic"], ["basic"]]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({**GOOD, "tenure": "three"}, "column 'tenure': expected a number, got str 'three'"),
        ({**GOOD, "tenure": True}, "column 'tenure': expected a number, got a boolean"),
        ({**GOOD, "tenure": None}, "column 'tenure' is null: expected a number"),
        (
            {**GOOD, "plan": "gold"},
            "column 'plan': expected one of ['basic', 'premium'], got 'gold'",
        ),
        ({**GOOD, "plan": 7}, "column 'plan': expected one of ['basic', 'premium'], got int 7"),
        ({k: v for k, v in GOOD.items() if k != "plan"}, "column 'plan' is missing"),
    ],
)
def test_bad_rows_are_rejected_with_a_reason_naming_the_field(row, reason) -> None:
    enc = SCHEMA.encode_records([GOOD, row, GOOD])
    assert enc.rows.tolist() == [0, 2]
    assert reason in enc.rejects[1]
    assert enc.feeds["tenure"].shape == (2, 1)


def test_numpy_columns_take_the_fast_path_and_flag_nulls() -> None:
    cols = {
        "tenure": np.array([1.0, np.nan, 3.0]),
        "age": np.array([np.nan, 2.0, 3.0]),
        "plan": np.array(["basic", "premium", "basic"], dtype=object),
        "region": np.array(["north", "x", None], dtype=object),
    }
    enc = SCHEMA.encode_columns(cols, 3)
    assert enc.rows.tolist() == [0] and set(enc.rejects) == {1, 2}
    assert "tenure' is null" in enc.rejects[1] and "region' is null" in enc.rejects[2]


def test_a_missing_or_short_column_fails_the_whole_batch() -> None:
    with pytest.raises(SchemaError, match="missing column 'tenure'") as err:
        SCHEMA.encode_columns({"age": [1.0]}, 1)
    assert err.value.field == "tenure"
    cols = {"tenure": [1.0, 2.0], "age": [1.0], "plan": ["basic"] * 2, "region": ["n"] * 2}
    with pytest.raises(SchemaError, match="column 'age' has 1 values, expected 2"):
        SCHEMA.encode_columns(cols, 2)


def test_matrix_layout_stacks_columns_in_order() -> None:
    schema = Schema(
        columns=(Column("a", "float32"), Column("b", "float32")),
        outputs=(Output("variable", "value"),),
        matrix_input="input",
    )
    enc = schema.encode_records([{"a": 1, "b": 2}, {"b": 4, "a": 3}])
    assert enc.feeds["input"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_schema_round_trips_through_json() -> None:
    assert Schema.from_dict(SCHEMA.to_dict()) == SCHEMA
    assert SCHEMA.describe()["plan"] == "one of ['basic', 'premium']"
    assert SCHEMA.unknown_columns(["tenure", "tenur"]) == ["tenur"]


def test_one_row_fast_path_matches_the_general_path() -> None:
    row = {"tenure": 3, "age": 40.5, "plan": "premium", "region": "mars"}
    fast = SCHEMA.encode_one(row)
    general = SCHEMA.encode_records([row]).feeds
    assert fast is not None and fast.keys() == general.keys()
    for name in fast:
        assert fast[name].dtype == general[name].dtype
        assert fast[name].tolist() == general[name].tolist()


@pytest.mark.parametrize(
    "row",
    [
        {**GOOD, "tenure": "3"},
        {**GOOD, "tenure": True},
        {**GOOD, "tenure": None},
        {**GOOD, "plan": "gold"},
        {k: v for k, v in GOOD.items() if k != "region"},
        {**GOOD, "tenure": 10**400},
        ["not", "a", "dict"],
    ],
)
def test_one_row_fast_path_leaves_anything_unusual_to_the_general_path(row) -> None:
    assert SCHEMA.encode_one(row) is None


def test_a_schema_with_thread_buffers_still_pickles() -> None:
    import pickle

    schema = Schema.from_dict(SCHEMA.to_dict())
    assert schema.encode_one({"tenure": 1, "age": 2.5, "plan": "basic", "region": "x"})
    clone = pickle.loads(pickle.dumps(schema))
    assert clone == schema
    assert clone.encode_one({"tenure": 2, "age": 1.0, "plan": "basic", "region": "x"})


@pytest.mark.parametrize("value", [1e300, -1e39, 10**40])
def test_a_number_beyond_float32_is_rejected_not_scored_as_infinity(value) -> None:
    # one row (the fast path), a few rows, and a numpy column all refuse it
    for rows in ([{**GOOD, "tenure": value}], [{**GOOD, "tenure": value}] * 20):
        enc = SCHEMA.encode_records(rows)
        assert "column 'tenure'" in enc.rejects[0] and "out of range for float32" in enc.rejects[0]
    cols = {
        "tenure": np.array([1.0, float(value)]),
        "age": np.array([1.0, 2.0]),
        "plan": ["basic", "basic"],
        "region": ["n", "n"],
    }
    enc = SCHEMA.encode_columns(cols, 2)
    assert enc.rows.tolist() == [0] and "out of range for float32" in enc.rejects[1]


def test_a_numpy_nan_in_a_list_is_a_null() -> None:
    cols = {
        "tenure": [np.float64("nan"), 1.0],
        "age": [1.0, 1.0],
        "plan": ["basic"] * 2,
        "region": ["n", True],
    }
    enc = SCHEMA.encode_columns(cols, 2)
    assert "column 'tenure' is null" in enc.rejects[0]


def test_a_lone_surrogate_is_a_rejected_row_not_an_onnx_runtime_crash() -> None:
    bad = {**GOOD, "region": "north\ud800"}  # valid JSON ("\\ud800"), not encodable as UTF-8
    assert SCHEMA.encode_one(bad) is None
    for rows in ([bad], [GOOD, bad] * 10):
        enc = SCHEMA.encode_records(rows)
        reason = enc.rejects[rows.index(bad)]
        assert "column 'region'" in reason and "not valid UTF-8" in reason
    assert SCHEMA.encode_one({**GOOD, "region": "zürich", "age": 1.0}) is not None


# -- compacting decoded columns ----------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [40, SHARE_ROWS])
def test_compacted_columns_encode_as_the_python_values_do(n_rows: int) -> None:
    # given decoded columns: two clean, two with one bad value each
    plans = ["basic", "premium"] * (n_rows // 2)
    columns = {
        "tenure": [float(i % 7) for i in range(n_rows)],
        "age": [None if i % 5 == 0 else 30.0 for i in range(n_rows)],
        "plan": [p[:] for p in plans[:-1]] + ["gold"],
        "region": ["".join(["nor", "th"]) for _ in range(n_rows)],  # equal, not one object
    }
    columns["tenure"][n_rows // 2] = True
    before = {k: list(v) for k, v in columns.items()}
    # when compacted
    SCHEMA.compact(columns, n_rows)
    # then the clean columns are arrays and the ones with a bad value are untouched
    assert isinstance(columns["age"], np.ndarray) and columns["age"].dtype == np.float32
    assert isinstance(columns["region"], np.ndarray) and columns["region"].dtype == object
    assert columns["tenure"] == before["tenure"] and columns["plan"] == before["plan"]
    # and they encode to the same feeds and the same rejects with the same reasons
    compacted, plain = SCHEMA.encode_columns(columns, n_rows), SCHEMA.encode_columns(before, n_rows)
    assert compacted.rejects == plain.rejects and len(plain.rejects) == 2
    assert compacted.rows.tolist() == plain.rows.tolist()
    for name, feed in plain.feeds.items():
        np.testing.assert_array_equal(compacted.feeds[name], feed)
    # and from SHARE_ROWS rows on, equal texts are one object
    shared = n_rows >= SHARE_ROWS
    assert (len({id(v) for v in columns["region"].tolist()}) == 1) is shared


def test_a_few_rows_are_not_compacted() -> None:
    # the single-row and small-batch paths take Python values
    columns = {"tenure": [1.0], "age": [None], "plan": ["basic"], "region": ["x"]}
    SCHEMA.compact(columns, 1)
    assert columns == {"tenure": [1.0], "age": [None], "plan": ["basic"], "region": ["x"]}
