"""One column at a time: clean input passes as is, each bad value gets its own reason."""

from __future__ import annotations

import numpy as np

from dscloud.columns import MISSING, convert, encodable, exact
from dscloud.schema import Column

AGE = Column("age", "float32", nullable=True)
PLAN = Column("plan", "string", categories=("basic",), allow_unknown=False)
COUNT = Column("count", "int64")


def test_clean_values_are_exact_and_convert_without_reasons() -> None:
    assert exact(AGE, [1.0, 2, float("nan")]) and exact(PLAN, ["basic"])
    array, bad = convert(AGE, [1.0, None, 3])
    assert bad == {} and array.dtype == np.float32 and np.isnan(array[1])


def test_each_bad_value_has_its_own_reason() -> None:
    _, bad = convert(COUNT, [1, 1.5, "2", MISSING, 2**70])
    assert set(bad) == {1, 2, 3, 4}
    assert "expected an integer, got 1.5" in bad[1]
    assert "got str '2'" in bad[2]
    assert "column 'count' is missing" in bad[3]
    assert "out of range for int64" in bad[4]
    _, bad = convert(PLAN, ["basic", "gold"])
    assert bad == {1: "column 'plan': expected one of ['basic'], got 'gold'"}


def test_text_onnx_runtime_cannot_encode_is_not_encodable() -> None:
    assert encodable("zürich") and not encodable("a\ud800")
