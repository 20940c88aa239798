"""The record format: what a producer may put on the stream, and what is refused."""

from __future__ import annotations

import pytest

from dscloud.errors import PayloadError
from dscloud.stream.records import normalize_event_time, parse_payload
from tests.runtime.stream.conftest import payload


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"], ids=["after", "before"]
)
def test_an_event_time_outside_utc_years_1_to_9999_is_a_payload_error(value: str) -> None:
    with pytest.raises(PayloadError, match="event_time") as caught:
        normalize_event_time(value)
    assert caught.value.field == "event_time"


def test_event_times_before_year_1000_keep_the_fixed_width() -> None:
    assert normalize_event_time("0999-12-31T23:00:00-01:00") == "1000-01-01T00:00:00.000000Z"
    assert normalize_event_time("0005-01-01T00:00:00Z") == "0005-01-01T00:00:00.000000Z"


def test_any_decoding_error_is_a_payload_error() -> None:
    # json refuses a 5,000-digit number with a plain ValueError, not a JSONDecodeError
    data = payload("e1", {"tenure_months": 0}).replace(b"0}", b"1" * 5000 + b"}")
    with pytest.raises(PayloadError, match="cannot be decoded"):
        parse_payload(data)


def test_entity_id_is_limited_in_utf8_bytes_not_characters() -> None:
    # 700 CJK characters are 2100 bytes: over DynamoDB's 2048-byte key limit
    with pytest.raises(PayloadError, match="entity_id") as caught:
        parse_payload(payload("\u4e2d" * 700, {}))
    assert caught.value.field == "entity_id"
    assert parse_payload(payload("\u4e2d" * 682, {})).entity_id == "\u4e2d" * 682  # 2046 bytes


def test_nan_is_not_json_in_a_record_as_over_http() -> None:
    # Python's json writes NaN; the standard does not have it, and orjson (the server)
    # refuses it: a stream record holding one is refused too, not scored as a null.
    data = payload("e1", {"tenure_months": 0}).replace(b"0}", b"NaN}")
    with pytest.raises(PayloadError, match="NaN is not a JSON value; send null"):
        parse_payload(data)
