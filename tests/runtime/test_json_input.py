"""The one JSON rule: valid JSON is read whatever a fast parser holds, and so are the
NaN / Infinity tokens Python clients write."""

from __future__ import annotations

import math
import re

import pytest

from dscloud.errors import PayloadError
from dscloud.json_input import named_columns, parse_json, rows_to_columns, tensor_rows
from dscloud.server.protocols import loads


@pytest.mark.parametrize("parse", [parse_json, loads], ids=["core", "server"])
def test_a_lone_surrogate_escape_is_read_for_the_core_to_judge(parse: object) -> None:
    # given a lone surrogate escape, valid JSON that orjson refuses
    doc = parse(b'{"s": "\\ud800", "ok": "\\ud83d\\ude00"}')  # type: ignore[operator]

    # then the value comes through, and a proper pair is one character
    assert doc == {"s": "\ud800", "ok": "\U0001f600"}


def test_integers_are_read_exactly_at_any_size() -> None:
    assert parse_json(b"[18446744073709551617]") == [2**64 + 1]


@pytest.mark.parametrize("parse", [parse_json, loads], ids=["core", "server"])
@pytest.mark.parametrize(
    ("literal", "value"), [(b"NaN", math.nan), (b"Infinity", math.inf), (b"-Infinity", -math.inf)]
)
def test_nan_and_infinity_tokens_are_read_as_floats(
    parse: object, literal: bytes, value: float
) -> None:
    doc = parse(b'{"x": [1.5, ' + literal + b"]}")  # type: ignore[operator]
    assert doc["x"][0] == 1.5
    x = doc["x"][1]
    assert isinstance(x, float) and (math.isnan(x) if math.isnan(value) else x == value)


@pytest.mark.parametrize("literal", [b"nan", b"Nan", b"inf", b"-inf", b"NaNa", b"undefined"])
def test_other_bare_words_stay_malformed(literal: bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(b'{"x": ' + literal + b"}")
    with pytest.raises(Exception, match="malformed JSON"):
        loads(b'{"x": ' + literal + b"}")


# -- JSON values into columns ----------------------------------------------------------------


def test_rows_become_columns_in_the_order_named() -> None:
    columns = rows_to_columns([[1.5, "a"], [2.5, "b"]], ["x", "s"], "instances")
    assert {k: list(v) for k, v in columns.items()} == {"x": [1.5, 2.5], "s": ["a", "b"]}
    assert {k: list(v) for k, v in rows_to_columns([], ["x"], "instances").items()} == {"x": []}


@pytest.mark.parametrize(
    ("bad", "got"), [([1.0], "1 values"), ({"x": 1.0, "s": "a"}, "dict"), (None, "NoneType")]
)
def test_a_row_of_another_shape_is_refused_by_its_index(bad: object, got: str) -> None:
    rows = [[1.0, "a"]] * 30 + [bad] + [[1.0]]
    with pytest.raises(PayloadError) as caught:
        rows_to_columns(rows, ["x", "s"], "dataframe_split.data")
    assert caught.value.row == 30
    assert str(caught.value) == (
        f"dataframe_split.data[30]: expected a list of 2 values (['x', 's']), got {got}"
    )


def test_mlflow_tensor_form_is_the_rows_of_a_single_matrix_input() -> None:
    # given a model with one [N, 2] input "X" over the columns a and b
    names, matrix = ["a", "b"], "X"
    # then {"X": rows} is the tensor form, and anything else is named columns
    assert tensor_rows({"X": [[1.0, 2.0]]}, names, matrix) == [[1.0, 2.0]]
    assert tensor_rows({"a": [1.0], "b": [2.0]}, names, matrix) is None
    assert tensor_rows({"X": [[1.0, 2.0]], "a": [1.0]}, names, matrix) is None
    # and not for a model whose inputs are columns, nor when the input is named as a column
    assert tensor_rows({"X": [[1.0, 2.0]]}, names, None) is None
    assert tensor_rows({"a": [[1.0, 2.0]]}, names, "a") is None


def test_named_columns_have_one_length() -> None:
    assert named_columns({"a": [1, 2], "b": ["x", "y"]}, "inputs") == (
        {"a": [1, 2], "b": ["x", "y"]},
        2,
    )
    with pytest.raises(
        PayloadError, match=re.escape('"inputs.b" has 1 values, earlier columns have 2')
    ):
        named_columns({"a": [1, 2], "b": ["x"]}, "inputs")
    with pytest.raises(PayloadError, match=re.escape('"inputs.b" must be a list of values')):
        named_columns({"a": [1, 2], "b": 3}, "inputs")
