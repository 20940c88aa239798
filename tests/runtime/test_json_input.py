"""The one JSON rule: valid JSON is read whatever a fast parser holds; NaN is not JSON."""

from __future__ import annotations

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


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(literal: bytes) -> None:
    with pytest.raises(ValueError, match="is not a JSON value; send null"):
        parse_json(b'{"x": ' + literal + b"}")
    with pytest.raises(Exception, match="malformed JSON"):
        loads(b'{"x": ' + literal + b"}")
