"""The one JSON rule: valid JSON is read whatever a fast parser holds, and so are the
NaN / Infinity tokens Python clients write."""

from __future__ import annotations

import math

import pytest

from dscloud.json_input import parse_json
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
