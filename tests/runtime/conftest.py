"""Factories for the runtime tests: the churn model's training baseline and fresh samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from dscloud import example
from dscloud.baseline import Baseline, build_baseline
from dscloud.drift import DriftCounts
from dscloud.envelope import Artifact
from dscloud.scorer import Scorer


def columns_of(frame: pd.DataFrame) -> dict[str, Any]:
    """A frame's feature columns as numpy arrays, as the batch reader hands them over."""
    return {name: frame[name].to_numpy() for name in example.FEATURES}


@pytest.fixture(scope="session")
def churn_scorer(churn_artifact: Artifact) -> Scorer:
    return Scorer(churn_artifact)


@pytest.fixture(scope="session")
def churn_baseline(churn_example: example.TrainedExample, churn_scorer: Scorer) -> Baseline:
    """The baseline packaging builds: features from the training rows, predictions from
    the model's outputs on the rows it was checked on."""
    sample = churn_example.X_test
    preds = churn_scorer.score_columns(columns_of(sample), len(sample))
    return build_baseline(churn_scorer.schema, columns_of(churn_example.X_train), preds)


@pytest.fixture(scope="session")
def fresh_sample() -> pd.DataFrame:
    """New rows from the training distribution (another seed): no drift."""
    return example.churn_data(4000, seed=1)


def shifted(frame: pd.DataFrame, *, seed: int = 2) -> pd.DataFrame:
    """``age`` moved up by one standard deviation and the ``standard`` plan's share doubled
    (30% -> 60%, taken evenly from the other plans); every other column as it was."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["age"] = out["age"] + out["age"].std()
    others = np.flatnonzero(out["plan"].to_numpy() != "standard")
    wanted = int(0.6 * len(out)) - int((out["plan"] == "standard").sum())
    out.loc[rng.choice(others, wanted, replace=False), "plan"] = "standard"
    return out


def counted(baseline: Baseline, scorer: Scorer, frame: pd.DataFrame) -> DriftCounts:
    """Score ``frame`` and count what scored, as every runtime does."""
    columns = columns_of(frame)
    counts = DriftCounts(baseline)
    counts.add_scored(columns, scorer.score_columns(columns, len(frame)))
    return counts
