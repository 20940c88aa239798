"""The scoring core: golden replay before use, one session call per batch, exact answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dscloud.envelope import Artifact, Golden
from dscloud.errors import GoldenMismatchError, SchemaError
from dscloud.scorer import Scorer


def test_scores_match_the_envelope_goldens(churn_artifact: Artifact) -> None:
    scorer = Scorer(churn_artifact)
    goldens = churn_artifact.envelope.goldens
    got = scorer.score_records([g.inputs for g in goldens]).to_records()
    assert got == [g.outputs for g in goldens]


def test_a_model_whose_goldens_fail_is_refused(churn_artifact: Artifact) -> None:
    env = churn_artifact.envelope
    first = env.goldens[0]
    flipped = 1 - first.outputs["label"]
    bad = dataclasses.replace(
        env, goldens=(Golden(first.inputs, {**first.outputs, "label": flipped}), *env.goldens[1:])
    )
    with pytest.raises(GoldenMismatchError, match=f"golden example 0 label: expected {flipped}"):
        Scorer(Artifact(envelope=bad, model=churn_artifact.model))


def test_good_rows_score_and_bad_rows_are_reported(churn_artifact: Artifact) -> None:
    good = churn_artifact.envelope.goldens[0].inputs
    preds = Scorer(churn_artifact).score_records([good, {**good, "tenure_months": "x"}, good])
    assert preds.rows.tolist() == [0, 2]
    assert list(preds.rejects) == [1]
    assert preds.probabilities is not None and preds.probabilities.shape == (2, 2)
    np.testing.assert_array_equal(preds.probabilities[0], preds.probabilities[1])
    with pytest.raises(SchemaError, match=r"row 1: column 'tenure_months': expected a number"):
        preds.raise_for_rejects()


def test_columns_and_records_give_identical_answers(churn_artifact, churn_example) -> None:
    X = churn_example.X_test.iloc[:50]
    scorer = Scorer(churn_artifact)
    columns = {c: X[c].to_numpy() for c in X.columns}
    by_columns = scorer.score_columns(columns, len(X))
    records = [{k: (None if v != v else v) for k, v in r.items()} for r in X.to_dict("records")]
    by_records = scorer.score_records(records)
    np.testing.assert_array_equal(by_columns.probabilities, by_records.probabilities)
    expected = churn_example.estimator.predict_proba(X)
    np.testing.assert_allclose(by_columns.probabilities, expected, atol=1e-5)


def test_all_rows_rejected_makes_no_session_call(churn_artifact) -> None:
    preds = Scorer(churn_artifact).score_records([{"plan": 1}])
    assert len(preds) == 0 and preds.probabilities is None and 0 in preds.rejects


def test_the_reported_reject_is_the_first_bad_row(churn_artifact) -> None:
    good = churn_artifact.envelope.goldens[0].inputs
    preds = Scorer(churn_artifact).score_records([good, {**good, "plan": 1}, "not a row"])
    with pytest.raises(SchemaError, match=r"^row 1: column 'plan'") as err:
        preds.raise_for_rejects()
    assert err.value.row == 1
