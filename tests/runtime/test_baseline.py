"""The training baseline: quantile bins with out-of-range bins, category shares, missing
rates, the prediction distribution; a versioned JSON shape that old envelopes may lack."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.baseline import (
    Baseline,
    CategoricalBins,
    NumericBins,
    build_baseline,
    numeric_values,
)
from dscloud.envelope import Artifact, Envelope
from dscloud.errors import EnvelopeError, SchemaError
from dscloud.schema import Column, Output, Schema
from dscloud.scorer import Predictions
from tests.runtime.conftest import columns_of


def test_numeric_features_get_quantile_bins_plus_out_of_range_bins(
    churn_baseline: Baseline, churn_example: example.TrainedExample
) -> None:
    monthly = churn_baseline.features["monthly_charges"]
    assert isinstance(monthly, NumericBins)
    values = churn_example.X_train["monthly_charges"].to_numpy()
    # given 10 quantile bins of a continuous feature: 11 edges from min to max
    assert len(monthly.edges) == 11
    assert monthly.edges[0] == pytest.approx(values.min(), rel=1e-6)
    assert monthly.edges[-1] == pytest.approx(values.max(), rel=1e-6)
    assert list(monthly.edges) == sorted(set(monthly.edges))
    # below-min and above-max hold nothing in training; each interior bin about a tenth
    assert monthly.n_bins == 12 and len(monthly.shares) == 12
    assert monthly.shares[0] == monthly.shares[-1] == 0.0
    assert all(0.09 <= s <= 0.11 for s in monthly.shares[1:-1])
    assert sum(monthly.shares) == pytest.approx(1.0)


def test_a_feature_with_few_distinct_values_gets_fewer_bins(churn_baseline: Baseline) -> None:
    calls = churn_baseline.features["support_calls"]  # Poisson(1.5): many repeated quantiles
    assert isinstance(calls, NumericBins)
    assert len(calls.edges) < 11
    assert calls.labels()[:3] == ["< 0", "[0, 1)", "[1, 2)"]
    assert calls.shares[1] == pytest.approx(np.exp(-1.5), abs=0.02)  # P(calls = 0)


def test_missing_rates_are_recorded(
    churn_baseline: Baseline, churn_example: example.TrainedExample
) -> None:
    expected = float(churn_example.X_train["age"].isna().mean())
    assert expected > 0
    assert churn_baseline.features["age"].missing == pytest.approx(expected)
    assert churn_baseline.features["tenure_months"].missing == 0.0


def test_categorical_features_get_category_shares(
    churn_baseline: Baseline, churn_example: example.TrainedExample
) -> None:
    plan = churn_baseline.features["plan"]
    assert isinstance(plan, CategoricalBins)
    shares = churn_example.X_train["plan"].value_counts(normalize=True)
    assert plan.categories == ("basic", "standard", "premium")  # most frequent first
    assert plan.shares == pytest.approx([*shares[list(plan.categories)], 0.0])
    assert plan.seen == ()


def test_rare_categories_share_the_other_bin_and_stay_known() -> None:
    schema = Schema(columns=(Column("city", "string"),), outputs=(Output("v", "value"),))
    cities = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5
    baseline = build_baseline(schema, {"city": cities}, top_categories=2)
    city = baseline.features["city"]
    assert isinstance(city, CategoricalBins)
    assert city.categories == ("a", "b")
    assert city.shares == pytest.approx((0.5, 0.3, 0.2))
    assert city.seen == ("c", "d")
    assert city.labels() == ["a", "b", "(other)"]


def test_the_prediction_baseline_is_the_positive_class_probability(
    churn_baseline: Baseline, churn_scorer, churn_example: example.TrainedExample
) -> None:
    pred = churn_baseline.prediction
    assert churn_baseline.prediction_source == "probability"
    assert churn_baseline.classes == (0, 1)
    assert isinstance(pred, NumericBins)
    sample = churn_example.X_test
    proba = churn_scorer.score_columns(columns_of(sample), len(sample)).probabilities[:, 1]
    assert pred.edges[0] == pytest.approx(proba.min()) and pred.edges[-1] == pytest.approx(
        proba.max()
    )


def test_a_regressor_gets_value_bins_and_a_multiclass_model_class_shares() -> None:
    schema = Schema(columns=(Column("x", "float64"),), outputs=(Output("v", "value"),))
    env = Envelope(name="m", sha256="", size_bytes=0, schema=schema, goldens=())
    x = np.arange(100, dtype=np.float64)
    value = Predictions(envelope=env, rows=np.arange(100), value=x * 2)
    baseline = build_baseline(schema, {"x": x}, value)
    assert baseline.prediction_source == "value"
    assert isinstance(baseline.prediction, NumericBins)
    assert baseline.prediction.edges[-1] == 198.0

    labels = Predictions(
        envelope=env, rows=np.arange(4), label=np.array(["cat", "dog", "dog", "eel"])
    )
    baseline = build_baseline(schema, {"x": x[:4]}, labels)
    assert baseline.prediction_source == "label"
    assert isinstance(baseline.prediction, CategoricalBins)
    assert baseline.prediction.categories == ("dog", "cat", "eel")


def test_a_constant_feature_has_one_edge_and_three_bins() -> None:
    schema = Schema(columns=(Column("x", "float64"),), outputs=(Output("v", "value"),))
    bins = build_baseline(schema, {"x": [3.0] * 10}).features["x"]
    assert isinstance(bins, NumericBins)
    assert bins.edges == (3.0,)
    assert bins.labels() == ["< 3", "= 3", "> 3"]
    assert bins.shares == (0.0, 1.0, 0.0)
    np.testing.assert_array_equal(bins.index(np.array([2.0, 3.0, 4.0])), [0, 1, 2])


def test_bins_are_closed_left_and_the_maximum_is_inside() -> None:
    bins = NumericBins(edges=(0.0, 1.0, 2.0), shares=(0, 0.5, 0.5, 0), missing=0.0)
    got = bins.index(np.array([-0.1, 0.0, 0.5, 1.0, 2.0, 2.1, np.inf, -np.inf]))
    np.testing.assert_array_equal(got, [0, 1, 1, 2, 2, 3, 3, 0])


def test_a_float32_column_is_binned_as_the_model_sees_it() -> None:
    # JSON carries 0.1 as a float64; Parquet as float32; the model sees float32 either way
    col = Column("x", "float32")
    from_json = numeric_values(col, [0.1, None])
    from_parquet = numeric_values(col, np.array([0.1, np.nan], dtype=np.float32))
    np.testing.assert_array_equal(from_json, from_parquet)
    assert from_json[0] == float(np.float32(0.1))


def test_a_value_that_is_no_number_is_refused_naming_the_column() -> None:
    with pytest.raises(SchemaError, match=r"column 'x': expected a number or null, got 'a'"):
        numeric_values(Column("x", "float32", nullable=True), [1.0, "a"])
    schema = Schema(columns=(Column("x", "float64"),), outputs=(Output("v", "value"),))
    with pytest.raises(SchemaError, match="training data lacks column 'x'"):
        build_baseline(schema, {"y": [1.0]})


def test_the_shape_is_versioned_json_that_round_trips(churn_baseline: Baseline) -> None:
    raw = json.dumps(churn_baseline.to_dict())
    data = json.loads(raw)
    assert data["version"] == 1
    assert data["features"]["age"]["kind"] == "numeric"
    assert data["prediction"]["source"] == "probability"
    again = Baseline.from_dict(data)
    assert again == churn_baseline
    assert again.digest == churn_baseline.digest


def test_an_unknown_baseline_version_is_refused_with_what_to_do(churn_baseline) -> None:
    data = {**churn_baseline.to_dict(), "version": 2}
    with pytest.raises(EnvelopeError, match=r"version 2 is not supported.*re-package"):
        Baseline.from_dict(data)
    with pytest.raises(EnvelopeError, match=r"data\.baseline: missing or malformed"):
        Baseline.from_dict({"version": 1, "features": {"x": {"kind": "histogram"}}, "rows": 1})


def test_envelopes_with_and_without_a_baseline_load_and_score(
    tmp_path, churn_artifact: Artifact, churn_baseline: Baseline
) -> None:
    # given an envelope from before baselines, and the same model with one
    data = {k: v for k, v in churn_artifact.envelope.data.items() if k != "baseline"}
    old = dataclasses.replace(churn_artifact.envelope, data=data)
    assert Baseline.of(old.data) is None
    new = dataclasses.replace(old, data={**old.data, "baseline": churn_baseline.to_dict()})
    archive = Archive.open(tmp_path / "archive")
    dscloud.publish(Artifact(envelope=old, model=churn_artifact.model), archive)
    dscloud.publish(Artifact(envelope=new, model=churn_artifact.model), archive)
    # then both load (sha256 + goldens) and the baseline comes back as it went in
    for version in (1, 2):
        dscloud.Scorer(archive.load(f"churn@{version}"))
    assert Baseline.of(archive.envelope("churn@1").data) is None
    assert Baseline.of(archive.envelope("churn@2").data) == churn_baseline


def test_packaging_stores_the_baseline_of_the_training_rows_and_checked_outputs(
    churn_artifact: Artifact, churn_baseline: Baseline
) -> None:
    # dscloud.package (pandas frames, records scored for parity) -> the same baseline as
    # built here from numpy columns and score_columns: the export -> core seam.
    assert Baseline.of(churn_artifact.envelope.data) == churn_baseline


def test_packaging_counts_a_nullable_text_column_as_missing_not_as_a_category() -> None:
    import pandas as pd

    ex = example.train(seed=3, rows=600)
    frame = ex.X_train.copy()
    frame["plan"] = frame["plan"].astype("string")
    frame.loc[frame.index[:30], "plan"] = pd.NA
    artifact = dscloud.package(
        ex.estimator, ex.X_test, name="churn", training_data=frame, y=ex.y_train
    )
    baseline = Baseline.of(artifact.envelope.data)
    assert baseline is not None
    plan = baseline.features["plan"]
    assert "<NA>" not in plan.categories and plan.missing == pytest.approx(30 / len(frame))


def test_counting_agrees_with_the_bin_of_each_value() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0, 1, 5000), [np.nan] * 7, [np.inf, -np.inf, 0.5]])
    for edges in [(0.5,), (-1.0, 0.0, 0.5, 2.0), tuple(np.quantile(values[:5000], [0, 0.5, 1]))]:
        bins = NumericBins(edges=edges, shares=(), missing=0.0)
        counts, missing = bins.count(values)
        present = values[~np.isnan(values)]
        np.testing.assert_array_equal(
            counts, np.bincount(bins.index(present), minlength=bins.n_bins)
        )
        assert missing == 7
