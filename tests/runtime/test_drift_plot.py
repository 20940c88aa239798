"""The drift picture: a PNG with the ranking and one panel per top feature."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pandas as pd

from dscloud.baseline import Baseline
from dscloud.drift import DriftCounts
from dscloud.drift_plot import plot_drift
from dscloud.scorer import Scorer
from tests.runtime.conftest import columns_of, shifted


def test_the_plot_is_a_png_with_a_panel_per_top_feature(
    tmp_path: Path, churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = shifted(fresh_sample)
    columns = columns_of(frame)
    counts = DriftCounts(churn_baseline)
    counts.add_scored(columns, churn_scorer.score_columns(columns, len(frame)))
    report = counts.report()

    few = plot_drift(report, tmp_path / "few.png", top=2)
    many = plot_drift(report, tmp_path / "many.png", top=8, title="churn@1")

    assert few.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height_few = matplotlib.image.imread(few).shape[0]
    height_many = matplotlib.image.imread(many).shape[0]
    # the prediction and 2 features fit one row of panels; 8 more need three rows
    assert height_many > height_few
