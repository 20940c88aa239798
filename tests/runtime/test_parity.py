"""The parity gate on its own: ONNX through the scoring core against an estimator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import dscloud
from dscloud.errors import ExportError
from dscloud.parity import Tolerance, parity_message, parity_report
from dscloud.scorer import Scorer


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, LogisticRegression, Scorer]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X["a"] + X["b"] > 0).astype(int)
    estimator = LogisticRegression().fit(X, y)
    return X, estimator, Scorer(dscloud.package(estimator, X, name="lr"))


def _records(X: pd.DataFrame) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in X.to_dict(orient="records")]


def test_the_estimator_and_its_onnx_model_agree_per_class(
    fitted: tuple[pd.DataFrame, LogisticRegression, Scorer],
) -> None:
    X, estimator, scorer = fitted

    report = parity_report(estimator, X, scorer, _records(X), Tolerance())

    assert report["passed"] and report["label_agreement"] == 1.0
    assert set(report["worst_outputs"]) == {"0", "1"}  # the model's classes, as text
    assert report["max_abs_diff"] < 1e-4


def test_another_estimator_fails_the_gate_naming_the_rows_that_differ(
    fitted: tuple[pd.DataFrame, LogisticRegression, Scorer],
) -> None:
    # given an estimator that learned the opposite labels
    X, estimator, scorer = fitted
    flipped = LogisticRegression().fit(X, 1 - estimator.predict(X))

    # when the model exported from the first is compared with it
    report = parity_report(flipped, X, scorer, _records(X), Tolerance())

    # then the report fails, and its message says which rows and what to do
    assert not report["passed"]
    assert report["label_agreement"] < 0.1
    assert report["rows_beyond_tolerance"] == len(X)
    message = parity_message("lr", report)
    assert message.startswith("lr: ONNX disagrees with the estimator on 200 of 200 rows")
    assert "(label differs)" in message


def test_a_sample_row_outside_the_models_schema_is_an_export_error(
    fitted: tuple[pd.DataFrame, LogisticRegression, Scorer],
) -> None:
    X, estimator, scorer = fitted
    records = _records(X)
    records[4]["a"] = "high"  # type: ignore[assignment]

    with pytest.raises(ExportError, match="X_sample row 4"):
        parity_report(estimator, X, scorer, records, Tolerance())
