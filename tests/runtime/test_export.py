"""Packaging: every supported estimator converts with parity, and the gate refuses drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import dscloud
from dscloud import example
from dscloud.errors import ExportError, ParityError
from dscloud.export import Tolerance
from dscloud.scorer import Scorer


@pytest.fixture(scope="module")
def numeric() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    frame = example.churn_data(600, seed=3)
    # float32 features: what ONNX computes with. Histogram GBMs split on float64 quantiles
    # that can equal a data value, which float32 cannot tell apart (see README, "Parity").
    X = frame[example.NUMERIC].fillna(0.0).astype(np.float32)
    return X, frame[example.LABEL], frame["monthly_charges"] * 1.5 + frame["tenure_months"]


ESTIMATORS = [
    LogisticRegression(max_iter=500),
    RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
    RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0),
    GradientBoostingClassifier(n_estimators=30, random_state=0),
    GradientBoostingRegressor(n_estimators=30, random_state=0),
    HistGradientBoostingClassifier(max_iter=30, random_state=0),
    HistGradientBoostingRegressor(max_iter=30, random_state=0),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_numeric_estimators_package_with_parity(estimator, numeric) -> None:
    # given a fitted estimator on numeric features
    X, y_class, y_value = numeric
    is_classifier = hasattr(estimator, "predict_proba")
    y = y_class if is_classifier else y_value
    estimator.fit(X[:400], y[:400])

    # when it is packaged
    artifact = dscloud.package(estimator, X[400:], name="m", training_data=X[:400], y=y[:400])

    # then ONNX scores like the estimator, through the same core every runtime uses
    parity = artifact.envelope.quality["parity"]
    assert parity["passed"] and parity["rows"] == 200
    preds = Scorer(artifact).score_columns({c: X[400:][c].to_numpy() for c in X.columns}, 200)
    if is_classifier:
        np.testing.assert_allclose(preds.probabilities, estimator.predict_proba(X[400:]), atol=1e-4)
        assert (preds.label == estimator.predict(X[400:])).all()
    else:
        np.testing.assert_allclose(preds.value, estimator.predict(X[400:]), rtol=1e-4, atol=1e-3)
    assert artifact.envelope.schema.matrix_input == "input"


@pytest.mark.parametrize("model", [HistGradientBoostingClassifier, HistGradientBoostingRegressor])
def test_hist_gradient_boosting_scores_missing_values(model) -> None:
    frame = example.churn_data(800, seed=4)
    X = frame[example.NUMERIC].astype(np.float32)  # age has missing values
    assert X["age"].isna().any()
    y = (
        frame[example.LABEL]
        if model is HistGradientBoostingClassifier
        else frame["monthly_charges"]
    )
    est = model(max_iter=40, random_state=0).fit(X[:600], y[:600])

    artifact = dscloud.package(est, X[600:], name="hgb", training_data=X[:600], y=y[:600])

    age = next(c for c in artifact.envelope.schema.columns if c.name == "age")
    assert age.nullable
    assert any(g.inputs["age"] is None for g in artifact.envelope.goldens)
    assert artifact.envelope.quality["parity"]["passed"]


def test_pipeline_with_column_transformer_takes_one_input_per_column(churn_artifact) -> None:
    env = churn_artifact.envelope
    assert env.schema.matrix_input is None
    assert env.onnx["inputs"] == example.FEATURES
    plan = next(c for c in env.schema.columns if c.name == "plan")
    assert plan.dtype == "string" and plan.categories == ("basic", "premium", "standard")
    assert plan.allow_unknown  # OneHotEncoder(handle_unknown="ignore")
    assert env.quality["parity"]["passed"]


def test_unseen_category_scores_like_scikit_learn(churn_example, churn_artifact) -> None:
    row = churn_example.X_test.iloc[[0]].copy()
    row["plan"] = "platinum"  # never seen in training
    expected = churn_example.estimator.predict_proba(row)[0]
    record = {k: (None if pd.isna(v) else v) for k, v in row.iloc[0].to_dict().items()}
    got = Scorer(churn_artifact).score_records([record])
    np.testing.assert_allclose(got.probabilities[0], expected, atol=1e-5)


def test_encoder_that_refuses_unknowns_is_recorded_as_strict() -> None:
    frame = example.churn_data(300, seed=5)
    pipe = Pipeline(
        [
            (
                "f",
                ColumnTransformer(
                    [
                        ("n", StandardScaler(), ["tenure_months"]),
                        ("c", OneHotEncoder(handle_unknown="error"), ["plan"]),
                    ]
                ),
            ),
            ("m", LogisticRegression()),
        ]
    ).fit(frame[["tenure_months", "plan"]], frame[example.LABEL])
    artifact = dscloud.package(pipe, frame[["tenure_months", "plan"]], name="strict")
    plan = artifact.envelope.schema.column("plan")
    assert not plan.allow_unknown
    preds = Scorer(artifact).score_records([{"tenure_months": 3.0, "plan": "gold"}])
    assert "expected one of ['basic', 'premium', 'standard'], got 'gold'" in preds.rejects[0]


def test_envelope_records_provenance_data_and_goldens(churn_artifact) -> None:
    env = churn_artifact.envelope
    assert env.sha256 and env.size_bytes > 0
    assert env.provenance["estimator"] == "Pipeline(ColumnTransformer, LogisticRegression)"
    assert env.provenance["hyperparameters"]["seed"] == 0
    assert env.provenance["random_seed"] == 0
    assert set(env.provenance["libraries"]) >= {"python", "scikit-learn", "skl2onnx", "onnxruntime"}
    assert env.provenance["code"]["commit"] is None or len(env.provenance["code"]["commit"]) == 40
    assert env.data["fingerprint"].startswith("sha256:")
    assert env.data["rows"] == 2400
    assert env.data["features"]["age"]["missing"] > 0
    assert env.data["features"]["plan"]["type"] == "categorical"
    assert set(env.data["label"]["counts"]) == {"0", "1"}
    assert env.onnx["opset"]["ai.onnx"] == 18 and env.onnx["producer"] == "skl2onnx"
    assert set(env.metrics) == {"auc", "accuracy", "log_loss"}
    assert len(env.goldens) == 5
    assert set(env.goldens[0].outputs) == {"label", "probabilities"}


def test_parity_gate_refuses_a_model_that_scores_differently() -> None:
    # given large-magnitude features: float32 (ONNX) cannot represent what float64 fitted
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"ts": 1.6e9 + rng.integers(0, 1000, 300).astype(float)})
    y = (X["ts"] - 1.6e9) * 0.5
    est = LinearRegression().fit(X, y)

    # when packaged, then the gate refuses and names the worst rows and the output
    with pytest.raises(ParityError) as err:
        dscloud.package(est, X, name="drift")
    report = err.value.report
    assert not report["passed"] and report["rows_beyond_tolerance"] > 0
    assert report["worst_rows"][0]["output"] == "value"
    assert "row " in str(err.value) and "differs by" in str(err.value)


def test_tolerance_is_recorded_and_overridable(numeric) -> None:
    X, _, y = numeric
    est = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, y)
    with pytest.raises(ParityError):
        dscloud.package(est, X, name="tight", tolerance=Tolerance(atol=0.0, rtol=0.0))
    loose = dscloud.package(est, X, name="loose", tolerance=Tolerance(atol=1e-2, rtol=1e-3))
    assert loose.envelope.quality["parity"]["tolerance"] == {
        "atol": 1e-2,
        "rtol": 1e-3,
        "min_label_agreement": 1.0,
    }


def test_unconvertible_estimator_is_an_export_error() -> None:
    class Custom:
        def predict(self, X):
            return np.zeros(len(X))

    with pytest.raises(ExportError, match="cannot convert"):
        dscloud.package(Custom(), np.zeros((3, 2)), name="custom")


def test_empty_sample_is_refused(numeric) -> None:
    X, y, _ = numeric
    est = LogisticRegression().fit(X, y)
    with pytest.raises(ExportError, match="empty"):
        dscloud.package(est, X.iloc[:0], name="m")
