"""The rollout comparison: both versions really scored on the same rows, counted in bins that
merge by addition, read back from JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dscloud.envelope import Artifact
from dscloud.errors import DataError
from dscloud.rollout_compare import DELTA_EDGES, LARGEST, Comparison
from dscloud.scorer import Scorer


@pytest.fixture(scope="module")
def rows(fresh_sample: pd.DataFrame) -> list[dict]:
    """JSON rows, as a server or stream would decode them (NaN as a missing number)."""
    frame = fresh_sample.head(1000).astype(object)
    return json.loads(frame.where(frame.notna(), None).to_json(orient="records"))


@pytest.fixture(scope="module")
def scorers(churn_artifact: Artifact, churn_retrained: Artifact) -> tuple[Scorer, Scorer]:
    return Scorer(churn_artifact), Scorer(churn_retrained)


def compared(scorers: tuple[Scorer, Scorer], rows: list[dict]) -> Comparison:
    current, candidate = scorers
    counts = Comparison(1, 2)
    counts.add(
        current.score_records(rows),
        candidate.score_records(rows),
        inputs=rows,
        seconds=(0.003, 0.004),
    )
    return counts


def test_a_version_compared_with_itself_agrees_everywhere(
    churn_artifact: Artifact, rows: list[dict]
) -> None:
    scorer = Scorer(churn_artifact)
    counts = Comparison(1, 1)
    counts.add(scorer.score_records(rows), scorer.score_records(rows), inputs=rows)
    figures = counts.figures()
    assert figures["rows_compared"] == len(rows) and figures["disagreement_rate"] == 0.0
    assert figures["delta"]["counts"][0] == len(rows)  # every |Δ| is exactly 0
    assert figures["largest"] == []


def test_a_retrained_candidate_shows_its_differences(
    scorers: tuple[Scorer, Scorer], rows: list[dict]
) -> None:
    current, candidate = (s.score_records(rows) for s in scorers)
    figures = compared(scorers, rows).figures()

    # then the figures are the predictions' own differences
    assert current.probabilities is not None and candidate.probabilities is not None
    delta = np.abs(current.probabilities - candidate.probabilities).max(axis=1)
    disagree = int(np.count_nonzero(current.label != candidate.label))
    assert figures["rows_compared"] == len(rows)
    assert figures["disagreements"] == disagree > 0
    assert sum(figures["delta"]["counts"]) == len(rows)
    bins = np.searchsorted(np.asarray(DELTA_EDGES), delta, side="left")
    assert figures["delta"]["counts"] == np.bincount(bins, minlength=len(DELTA_EDGES)).tolist()
    top = figures["largest"]
    assert len(top) == LARGEST and top[0]["delta"] == pytest.approx(delta.max())
    worst = int(np.argmax(delta))
    assert top[0]["inputs"] == rows[worst]
    assert top[0]["candidate"] == candidate.row(worst)
    assert figures["versions"]["candidate"]["latency_ms"]["counts"][3] == 1  # 4 ms: (2, 5]


def test_counts_merge_by_addition(scorers: tuple[Scorer, Scorer], rows: list[dict]) -> None:
    whole = compared(scorers, rows).to_dict()
    merged = (compared(scorers, rows[:400]) + compared(scorers, rows[400:])).to_dict()
    # every row count as one pass; latency counts calls, and the halves made two
    for role in ("current", "candidate"):
        assert merged["versions"][role].pop("latency")[3] == 2
        assert whole["versions"][role].pop("latency")[3] == 1
    assert merged == whole


def test_counts_survive_json(scorers: tuple[Scorer, Scorer], rows: list[dict]) -> None:
    counts = compared(scorers, rows[:50])
    assert Comparison.from_json(counts.to_json()).to_dict() == counts.to_dict()
    with pytest.raises(DataError, match="not rollout comparison counts"):
        Comparison.from_json('{"versions": {}}')
    with pytest.raises(DataError, match="cannot merge"):
        counts + Comparison(1, 3)


def test_a_failed_candidate_call_counts_every_row_as_its_error(
    scorers: tuple[Scorer, Scorer], rows: list[dict]
) -> None:
    counts = Comparison(1, 2)
    counts.add(scorers[0].score_records(rows[:10]), None)
    figures = counts.figures()
    assert figures["versions"]["candidate"]["error_rate"] == 1.0
    assert figures["versions"]["current"]["error_rate"] == 0.0
    assert figures["rows_compared"] == 0


def test_bad_input_is_not_the_candidates_error(
    scorers: tuple[Scorer, Scorer], rows: list[dict]
) -> None:
    # given one row both versions refuse
    bad = [*rows[:9], {**rows[9], "age": "old"}]
    counts = Comparison(1, 2)
    counts.add(scorers[0].score_records(bad), scorers[1].score_records(bad), inputs=bad)
    figures = counts.figures()
    assert figures["rows_compared"] == 9
    assert figures["versions"]["current"]["errors"] == 1
    assert figures["versions"]["candidate"]["errors"] == 0
