"""One drift computation: a known shift is ranked first and read as major, an unshifted
sample is stable, shards and windows merge exactly, counts survive JSON."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dscloud import example
from dscloud.baseline import Baseline, NumericBins
from dscloud.drift import PSI_EPSILON, DriftCounts, Tally, psi, reading
from dscloud.errors import DataError, SchemaError
from dscloud.scorer import Scorer
from tests.runtime.conftest import columns_of, counted, shifted


def test_an_unshifted_sample_of_the_training_distribution_is_stable(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    report = counted(churn_baseline, churn_scorer, fresh_sample).report()
    assert report.rows == len(fresh_sample)
    assert {f.name for f in report.features} == set(example.FEATURES)
    for feature in report.features:
        assert feature.psi is not None and feature.psi < 0.1, feature
        assert feature.reading == "stable"
    assert report.prediction is not None and report.prediction.psi < 0.1


def test_a_known_shift_is_ranked_first_and_read_as_major(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    # given age moved by one standard deviation and one plan's share doubled
    report = counted(churn_baseline, churn_scorer, shifted(fresh_sample)).report()
    # then exactly those two lead the ranking, above 0.25, and nothing else moved
    ranked = [f.name for f in report.features]
    assert set(ranked[:2]) == {"age", "plan"}
    assert report.worst is report.features[0]
    for feature in report.features[:2]:
        assert feature.psi > 0.25 and feature.reading == "major"
    for feature in report.features[2:]:
        assert feature.psi < 0.1, feature
    plan = next(f for f in report.features if f.name == "plan")
    assert plan.current_shares[plan.labels.index("standard")] == pytest.approx(0.6, abs=0.001)


def test_out_of_range_unseen_and_missing_are_reported(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = fresh_sample.copy()
    n = len(frame)
    frame.loc[: n // 10 - 1, "tenure_months"] = 500.0  # 10% above the training maximum
    frame.loc[: n // 4 - 1, "region"] = "midwest"  # 25% a region never seen in training
    frame.loc[: n // 2 - 1, "age"] = np.nan  # half missing instead of 5%
    report = counted(churn_baseline, churn_scorer, frame).report()
    figures = {f.name: f for f in report.features}
    assert figures["tenure_months"].out_of_range == pytest.approx(0.1)
    assert figures["region"].unseen == pytest.approx(0.25)
    assert figures["plan"].unseen == 0.0
    missing = float(frame["age"].isna().mean())
    assert missing > 0.5
    assert figures["age"].missing_current == pytest.approx(missing)
    assert figures["age"].missing_change == pytest.approx(
        missing - churn_baseline.features["age"].missing
    )
    assert figures["age"].psi > 0.25


def test_shards_merge_to_exactly_one_pass(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = shifted(fresh_sample)
    whole = counted(churn_baseline, churn_scorer, frame)
    # given three uneven shards, each counted on its own and written to JSON (a manifest)
    cuts = [0, 700, 2500, len(frame)]
    manifests = [
        counted(churn_baseline, churn_scorer, frame.iloc[a:b].reset_index(drop=True)).to_json()
        for a, b in itertools.pairwise(cuts)
    ]
    merged = DriftCounts(churn_baseline)
    for raw in manifests:
        merged.merge(DriftCounts.from_json(raw, churn_baseline))
    assert merged.to_dict() == whole.to_dict()
    assert merged.report() == whole.report()
    assert (DriftCounts.from_json(manifests[0], churn_baseline) + merged).rows == len(frame) + 700


def test_counts_round_trip_through_json(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    counts = counted(churn_baseline, churn_scorer, shifted(fresh_sample))
    again = DriftCounts.from_json(counts.to_json().encode(), churn_baseline)
    assert again.to_dict() == counts.to_dict()
    assert again.report().to_dict() == counts.report().to_dict()


def test_counts_of_another_baseline_are_refused(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    other = Baseline.from_dict({**churn_baseline.to_dict(), "rows": 1})
    counts = counted(churn_baseline, churn_scorer, fresh_sample)
    with pytest.raises(DataError, match="different baselines"):
        DriftCounts(other).merge(counts)
    with pytest.raises(DataError, match="belong to another model version"):
        DriftCounts.from_json(counts.to_json(), other)
    with pytest.raises(DataError, match="missing or malformed"):
        broken = counts.to_dict()
        del broken["features"]["age"]
        DriftCounts.from_dict(broken, churn_baseline)


def test_json_lists_and_numpy_columns_count_the_same(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    # the server hands over JSON values (None for null), batch numpy arrays (NaN for null)
    frame = fresh_sample.iloc[:500]
    records = json.loads(frame[example.FEATURES].to_json(orient="records"))
    preds_json = churn_scorer.score_records(records)
    from_json = DriftCounts(churn_baseline)
    from_json.add_scored({k: [r[k] for r in records] for k in example.FEATURES}, preds_json)
    from_numpy = counted(churn_baseline, churn_scorer, frame.reset_index(drop=True))
    assert any(r["age"] is None for r in records)
    assert from_json.to_dict() == from_numpy.to_dict()


def test_rejected_rows_are_not_counted(churn_baseline: Baseline, churn_scorer: Scorer) -> None:
    good = churn_scorer.envelope.goldens[0].inputs
    records = [good, {**good, "tenure_months": "x"}, good]
    preds = churn_scorer.score_records(records)
    counts = DriftCounts(churn_baseline)
    counts.add_scored({k: [r[k] for r in records] for k in example.FEATURES}, preds)
    assert counts.rows == 2
    assert counts.prediction is not None and int(counts.prediction.sum()) == 2
    assert all(int(c.sum()) == 2 for c in counts.features.values())


def test_a_missing_column_is_named(churn_baseline: Baseline) -> None:
    with pytest.raises(SchemaError, match="drift: column 'tenure_months' is missing"):
        DriftCounts(churn_baseline).add({"plan": ["basic"]})


def test_psi_floors_empty_bins_at_the_documented_epsilon() -> None:
    # a bin empty in training that now holds 1% of rows
    got = psi([0.5, 0.5, 0.0], [0.5, 0.49, 0.01])
    expected = (0.49 - 0.5) * math.log(0.49 / 0.5) + (0.01 - PSI_EPSILON) * math.log(
        0.01 / PSI_EPSILON
    )
    assert got == pytest.approx(expected)
    assert psi([0.2, 0.8], [0.2, 0.8]) == 0.0


def test_the_reading_follows_the_usual_thresholds() -> None:
    assert [reading(x) for x in (0.0, 0.099, 0.1, 0.25, 0.2501, None)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "major",
        "no data",
    ]


def test_the_report_states_its_reading_and_ranks_in_text_and_json(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    report = counted(churn_baseline, churn_scorer, shifted(fresh_sample)).report()
    data = json.loads(report.to_json())
    assert data["reading"] == "PSI < 0.1 stable, 0.1 to 0.25 moderate, > 0.25 major"
    assert data["psi_epsilon"] == PSI_EPSILON
    assert data["worst_feature"] == report.features[0].name
    assert [f["psi"] for f in data["features"]] == sorted(
        (f["psi"] for f in data["features"]), reverse=True
    )
    assert data["prediction"]["source"] == "probability"
    lines = report.table().splitlines()
    assert "PSI < 0.1 stable" in lines[0]
    assert lines[1].split()[:3] == ["feature", "kind", "PSI"]
    assert lines[2].startswith("(prediction)")
    assert lines[3].split()[0] == report.features[0].name
    assert "major" in lines[3]


def test_an_empty_count_reports_no_data(churn_baseline: Baseline) -> None:
    report = DriftCounts(churn_baseline).report()
    assert report.rows == 0 and report.worst is None
    assert all(f.psi is None and f.reading == "no data" for f in report.features)
    assert "no data" in report.table()


def test_numeric_predictions_are_counted_into_the_prediction_bins(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = fresh_sample.iloc[:300].reset_index(drop=True)
    columns = columns_of(frame)
    preds = churn_scorer.score_columns(columns, len(frame))
    counts = DriftCounts(churn_baseline)
    counts.add_scored(columns, preds)
    bins = churn_baseline.prediction
    assert isinstance(bins, NumericBins) and counts.prediction is not None
    expected = np.bincount(
        bins.index(preds.probabilities[:, 1].astype(np.float64)), minlength=bins.n_bins
    )
    np.testing.assert_array_equal(counts.prediction[:-1], expected)


def test_a_tally_counts_like_the_values_it_summarises(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = fresh_sample.copy()
    frame.loc[:9, "region"] = None  # rejected: region is not nullable
    frame.loc[10:19, "region"] = "midwest"
    columns = columns_of(frame)
    preds = churn_scorer.score_columns(columns, len(frame))
    assert len(preds.rejects) == 10
    # a tally holds the accepted rows only, as the batch adapter counts them with Arrow
    tallied = {**columns, **{k: Tally.of(columns[k][preds.rows]) for k in example.CATEGORICAL}}
    by_tally = DriftCounts(churn_baseline)
    by_tally.add_scored(tallied, preds)
    by_value = DriftCounts(churn_baseline)
    by_value.add_scored(columns, preds)
    assert by_tally.to_dict() == by_value.to_dict()
    assert by_tally.unseen["region"] == 10
    with pytest.raises(SchemaError, match="'age' is numeric; a tally counts categories"):
        DriftCounts(churn_baseline).add({**tallied, "age": Tally({"1": 1})})


def test_dictionary_codes_tally_like_the_values() -> None:
    categories = ["north", "south", "east"]
    codes = np.array([0, 2, 2, -1, 1, 0, 0])
    values = [categories[c] if c >= 0 else None for c in codes]
    assert Tally.from_codes(codes, categories) == Tally.of(values)
    assert Tally.from_codes(codes, categories) == Tally({"north": 3, "south": 1, "east": 2}, 1)


@pytest.mark.parametrize(
    ("size", "dtype"),
    [
        (size, dtype)
        for size in (3, 16, 17, 300)
        for dtype in (np.int8, np.int16, np.int32, np.int64)
        if np.iinfo(dtype).max >= size  # Arrow indexes a larger dictionary with wider codes
    ],
)
def test_dictionary_codes_tally_alike_whether_compared_or_bincounted(
    size: int, dtype: type[np.integer[Any]]
) -> None:
    # given codes of every integer width Arrow uses, over small and large dictionaries (the
    # two ways of counting: one comparison per code, or one bincount), with nulls, a
    # category repeated under two codes, and dictionary entries no row uses
    rng = np.random.default_rng(size)
    categories = [f"c{i}" for i in range(size - 1)] + ["c0"]
    codes = rng.integers(-1, max(size // 2, 2), 5000).astype(dtype)
    codes[-1] = size - 1
    values = [categories[c] if c >= 0 else None for c in codes.tolist()]

    tally = Tally.from_codes(codes, categories)

    assert tally == Tally.of(values)
    assert tally.missing == int(np.count_nonzero(codes == -1)) > 0
