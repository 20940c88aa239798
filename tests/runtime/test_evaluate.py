"""Live metrics from outcomes: the join by key, metrics equal to scikit-learn's on the same
rows, counts of what did not match, and the audited record in the archive."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from dscloud import example
from dscloud.archive import Archive
from dscloud.errors import DataError, NotFoundError
from dscloud.evaluate import Outcomes, Scored, evaluate, roc_auc
from dscloud.scorer import Scorer
from tests.runtime.conftest import columns_of


@pytest.fixture(scope="module")
def scored_run(churn_scorer: Scorer) -> tuple[dict[str, object], object]:
    """A batch run's output for 1000 fresh users (the columns the batch writer writes),
    and the users' observed labels."""
    frame = example.churn_data(1000, seed=3)
    preds = churn_scorer.score_columns(columns_of(frame), len(frame))
    output = {
        example.KEY: frame[example.KEY].to_numpy(),
        "label": preds.label,
        "probability_0": preds.probabilities[:, 0],
        "probability_1": preds.probabilities[:, 1],
    }
    return output, frame


# ONNX Runtime's float32 probabilities sum to 1 within float32, not float64, precision.
@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
def test_classifier_metrics_equal_sklearns_on_the_matched_rows(scored_run) -> None:
    output, frame = scored_run
    # given labels for users 100..1099 (users 0..99 have no outcome yet, 1000..1099 were
    # never scored), in another order, as floats from a CSV
    keys = output[example.KEY]
    rng = np.random.default_rng(0)
    order = rng.permutation(900) + 100
    label_keys = np.concatenate([keys[order], [f"u9{i:07d}" for i in range(100)]])
    labels = np.concatenate([frame[example.LABEL].to_numpy()[order], np.ones(100)]).astype(float)

    result = evaluate(
        Scored.from_columns(output, key=example.KEY, classes=(0, 1)),
        Outcomes(keys=label_keys, labels=labels),
    )

    assert result.kind == "classifier"
    assert result.rows == {
        "predictions": 1000,
        "labels": 1000,
        "matched": 900,
        "unmatched_predictions": 100,
        "unmatched_labels": 100,
        "used": 900,
        "unusable_labels": 0,
    }
    y = frame[example.LABEL].to_numpy()[100:]
    p = output["probability_1"][100:].astype(np.float64)
    assert result.metrics["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(y, output["label"][100:]))
    proba = np.column_stack([output["probability_0"][100:], p]).astype(np.float64)
    assert result.metrics["log_loss"] == pytest.approx(log_loss(y, proba), rel=1e-12)
    assert result.window is None


def test_labels_that_are_no_class_are_counted_and_named(scored_run) -> None:
    output, _ = scored_run
    keys = output[example.KEY][:10].tolist()
    labels = [1, 0, None, "maybe", 1, 0, 1, 0, 1, float("nan")]
    result = evaluate(
        Scored.from_columns(output, key=example.KEY, classes=(0, 1)),
        Outcomes(keys=keys, labels=labels),
    )
    assert result.rows["matched"] == 10
    assert result.rows["used"] == 7 and result.rows["unusable_labels"] == 3
    assert any("'maybe' is not one of the classes ['0', '1']" in n for n in result.notes)
    assert json.loads(json.dumps(result.to_dict()))["rows"]["unusable_labels"] == 3


def test_auc_is_left_out_when_one_class_was_observed(scored_run) -> None:
    output, _ = scored_run
    result = evaluate(
        Scored.from_columns(output, key=example.KEY),
        Outcomes(keys=output[example.KEY][:5], labels=[1] * 5),
    )
    assert "auc" not in result.metrics and "accuracy" in result.metrics
    assert "AUC is undefined" in result.notes[0]


def test_a_repeated_key_is_refused_naming_it() -> None:
    scored = Scored(keys=["a", "b", "a"], value=[1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"predictions: key 'a' occurs 2 times"):
        evaluate(scored, Outcomes(keys=["a"], labels=[1.0]))
    with pytest.raises(DataError, match=r"labels: key 'b' occurs 2 times"):
        evaluate(Scored(keys=["a", "b"], value=[1, 2]), Outcomes(keys=["b", "b"], labels=[1, 2]))


def test_no_match_at_all_is_an_error_that_shows_both_sides() -> None:
    with pytest.raises(DataError, match=r"no key matched.*\['a', 'b'\] vs \['x'\]\); check --key"):
        evaluate(Scored(keys=["a", "b"], value=[1.0, 2.0]), Outcomes(keys=["x"], labels=[1.0]))


def test_regressor_metrics_equal_sklearns_and_keys_match_as_text() -> None:
    rng = np.random.default_rng(1)
    predicted = rng.normal(10, 3, 200)
    observed = predicted + rng.normal(0, 1, 200)
    # predictions keyed by int, labels by text (as read from CSV)
    result = evaluate(
        Scored(keys=np.arange(200), value=predicted),
        Outcomes(keys=[str(i) for i in range(200)], labels=observed.tolist()),
    )
    assert result.kind == "regressor"
    assert result.rows["matched"] == 200
    assert result.metrics["rmse"] == pytest.approx(
        np.sqrt(mean_squared_error(observed, predicted)), rel=1e-12
    )
    assert result.metrics["mae"] == pytest.approx(
        mean_absolute_error(observed, predicted), rel=1e-12
    )


def test_multiclass_auc_is_sklearns_one_vs_rest_macro() -> None:
    rng = np.random.default_rng(2)
    raw = rng.random((300, 3))
    probs = raw / raw.sum(axis=1, keepdims=True)
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, 300)]
    result = evaluate(
        Scored(keys=np.arange(300), probabilities=probs, classes=("a", "b", "c")),
        Outcomes(keys=np.arange(300), labels=y),
    )
    assert result.metrics["auc"] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro"), rel=1e-12
    )
    assert result.metrics["log_loss"] == pytest.approx(
        log_loss(y, probs, labels=["a", "b", "c"]), rel=1e-12
    )
    predicted = np.array(["a", "b", "c"])[probs.argmax(axis=1)]
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(y, predicted))


def test_auc_counts_ties_as_half() -> None:
    positive = np.array([True, False, True, False, True])
    score = np.array([0.5, 0.5, 0.9, 0.1, 0.5])
    assert roc_auc(positive, score) == pytest.approx(roc_auc_score(positive, score))


def test_the_window_covers_the_matched_rows() -> None:
    result = evaluate(
        Scored(keys=["a", "b", "c"], value=[1.0, 2.0, 3.0]),
        Outcomes(
            keys=["c", "a", "z"],
            labels=[3.0, 1.5, 9.0],
            times=["2026-11-02T08:00:00Z", "2026-11-01T12:30:00Z", "2026-12-31T00:00:00Z"],
        ),
    )
    assert result.window == {"start": "2026-11-01T12:30:00Z", "end": "2026-11-02T08:00:00Z"}
    explicit = evaluate(
        Scored(keys=["a"], value=[1.0]),
        Outcomes(keys=["a"], labels=[1.0]),
        window=("2026-11-01", "2026-11-30"),
    )
    assert explicit.window == {"start": "2026-11-01", "end": "2026-11-30"}


def test_predictions_without_prediction_columns_are_refused() -> None:
    with pytest.raises(DataError, match="no key column 'id'"):
        Scored.from_columns({"user_id": [1]}, key="id")
    with pytest.raises(DataError, match="none of 'label'"):
        Scored.from_columns({"id": [1], "score": [0.3]}, key="id")


# -- recorded in the archive ----------------------------------------------------------------


def test_an_evaluation_is_an_audited_record_of_its_version(archive: Archive, scored_run) -> None:
    output, frame = scored_run
    result = evaluate(
        Scored.from_columns(output, key=example.KEY, classes=(0, 1)),
        Outcomes(keys=frame[example.KEY], labels=frame[example.LABEL]),
        window=("2026-11-01", "2026-11-30"),
    )
    record = archive.record_evaluation(
        "churn", 1, {**result.to_dict(), "labels": "s3://b/labels.csv"}, by="tests"
    )
    assert record["event"] == "evaluate" and record["version"] == 1
    assert record["sha256"] == archive.envelope("churn@1").sha256

    stored = archive.evaluations("churn")
    assert stored == [record]
    assert stored[0]["metrics"] == result.metrics
    assert stored[0]["labels"] == "s3://b/labels.csv" and stored[0]["by"] == "tests"
    assert any(r["event"] == "evaluate" for r in archive.audit("churn"))
    assert archive.evaluations("churn", version=2) == []


def test_evaluations_are_kept_in_order_and_never_overwritten(archive: Archive) -> None:
    first = archive.record_evaluation("churn", 1, {"metrics": {"auc": 0.8}})
    second = archive.record_evaluation("churn", 1, {"metrics": {"auc": 0.7}})
    assert archive.evaluations("churn", version=1) == [first, second]


def test_an_evaluation_of_an_unknown_version_is_refused(archive: Archive) -> None:
    with pytest.raises(NotFoundError, match="version 7"):
        archive.record_evaluation("churn", 7, {"metrics": {}})
    # the archive's own fields cannot be overridden by what is recorded
    record = archive.record_evaluation("churn", 1, {"version": 9, "event": "publish"})
    assert (record["version"], record["event"]) == (1, "evaluate")
