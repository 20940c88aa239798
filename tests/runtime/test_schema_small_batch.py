"""The small-batch encoding path gives the general path's feeds, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dscloud.envelope import Artifact
from dscloud.schema import SMALL_BATCH, Schema


def general(schema: Schema, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    # more rows than SMALL_BATCH take the general path; keep the first len(rows) of them
    padded = rows * (SMALL_BATCH // len(rows) + 1)
    feeds = schema.encode_records(padded).feeds
    return {k: v[: len(rows)] for k, v in feeds.items()}


@pytest.mark.parametrize("fixture", ["churn_artifact", "forest_artifact"])
def test_exact_rows_encode_like_the_general_path(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    artifact: Artifact = request.getfixturevalue(fixture)
    schema = artifact.envelope.schema
    rows = [dict(g.inputs) for g in artifact.envelope.goldens]
    for n in (1, len(rows)):
        fast = schema.encode_records(rows[:n]).feeds
        slow = general(schema, rows[:n])
        assert fast.keys() == slow.keys()
        for name in fast:
            assert fast[name].dtype == slow[name].dtype and fast[name].shape == slow[name].shape
            np.testing.assert_array_equal(fast[name], slow[name])  # NaN equals NaN here


@pytest.mark.parametrize(
    "change",
    [
        {"age": None},
        {"tenure_months": None},
        {"plan": 3},
        {"support_calls": True},
        {"data_gb": "1"},
    ],
)
def test_inexact_rows_still_get_their_reasons(
    churn_artifact: Artifact, change: dict[str, Any]
) -> None:
    schema = churn_artifact.envelope.schema
    row = {**churn_artifact.envelope.goldens[0].inputs, **change}
    encoded = schema.encode_records([row])
    column = next(iter(change))
    if column == "age":  # nullable: a null is fine
        assert encoded.rejects == {}
    else:
        assert column in encoded.rejects[0]


@pytest.mark.parametrize("n_rows", [1, SMALL_BATCH + 1])
def test_int_column_refuses_fractions_on_every_path(n_rows: int) -> None:
    schema = Schema.from_dict(
        {"columns": [{"name": "n", "dtype": "int64"}], "outputs": [{"name": "y", "kind": "value"}]}
    )
    encoded = schema.encode_columns({"n": [1.5] + [2] * (n_rows - 1)}, n_rows)
    assert "expected an integer, got 1.5" in encoded.rejects[0]
    whole = schema.encode_columns({"n": [1.0] + [2] * (n_rows - 1)}, n_rows)
    assert whole.rejects == {} and whole.feeds["n"][0, 0] == 1


@pytest.mark.parametrize("n_rows", [2, SMALL_BATCH + 1])
def test_a_lone_surrogate_is_a_reject_on_every_path(n_rows: int) -> None:
    # given a few rows (the small-batch path) or more, one holding a lone surrogate
    schema = Schema.from_dict(
        {"columns": [{"name": "s", "dtype": "string"}], "outputs": [{"name": "y", "kind": "value"}]}
    )
    values = ["\ud800"] + ["ok"] * (n_rows - 1)

    encoded = schema.encode_columns({"s": values}, n_rows)

    # then that row is refused with its reason, never handed to ONNX Runtime
    assert encoded.rejects == {0: "column 's': '\\ud800' is not valid UTF-8 (a lone surrogate)"}
    assert encoded.feeds["s"].ravel().tolist() == ["ok"] * (n_rows - 1)
