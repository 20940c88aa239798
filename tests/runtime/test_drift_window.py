"""A server's rolling drift window: old slices drop off, buffered rows count exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dscloud import example
from dscloud.baseline import Baseline
from dscloud.drift import DriftCounts, Tally
from dscloud.drift_window import RollingCounts
from dscloud.scorer import Scorer
from tests.runtime.conftest import columns_of, counted, shifted


def test_a_rolling_window_drops_old_slices(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    now = [0.0]
    window = RollingCounts(churn_baseline, window=60.0, slices=6, clock=lambda: now[0])
    first = fresh_sample.iloc[:100].reset_index(drop=True)
    second = fresh_sample.iloc[100:250].reset_index(drop=True)
    columns = columns_of(first)
    window.add_scored(columns, churn_scorer.score_columns(columns, len(first)))
    now[0] = 30.0
    columns = columns_of(second)
    window.add_scored(columns, churn_scorer.score_columns(columns, len(second)))
    both = window.total()
    assert both.rows == 250
    assert (
        both.to_dict()
        == counted(
            churn_baseline, churn_scorer, fresh_sample.iloc[:250].reset_index(drop=True)
        ).to_dict()
    )
    now[0] = 65.0  # the first slice [0, 10) is now more than a window old
    assert window.total().rows == 150
    now[0] = 200.0
    assert window.total().rows == 0


def test_one_row_at_a_time_in_a_window_counts_as_one_pass(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    # given a server's traffic: 300 single-row requests (JSON values) over 3 time slices
    frame = shifted(fresh_sample).iloc[:300].reset_index(drop=True)
    records = json.loads(frame[example.FEATURES].to_json(orient="records"))
    now = [0.0]
    window = RollingCounts(
        churn_baseline, window=600.0, slices=6, flush_rows=7, clock=lambda: now[0]
    )
    for i, record in enumerate(records):
        now[0] = float(i)  # slices of 100 s: rows 0-99, 100-199, 200-299
        window.add_scored({k: [v] for k, v in record.items()}, churn_scorer.score_records([record]))
    # then the window holds exactly what one pass over the same rows counts
    assert window.total().to_dict() == counted(churn_baseline, churn_scorer, frame).to_dict()


def test_batch_server_and_stream_forms_of_the_same_rows_give_the_same_figures(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = shifted(fresh_sample).iloc[:600].reset_index(drop=True)
    records = json.loads(frame[example.FEATURES].to_json(orient="records"))

    # batch: numpy chunks, strings as dictionary codes, counts through shard manifests
    merged = DriftCounts(churn_baseline)
    for start in range(0, 600, 250):
        chunk = frame.iloc[start : start + 250].reset_index(drop=True)
        columns = columns_of(chunk)
        preds = churn_scorer.score_columns(columns, len(chunk))
        for name in example.CATEGORICAL:
            categories, codes = np.unique(columns[name].astype(str), return_inverse=True)
            columns[name] = Tally.from_codes(codes[preds.rows], categories.tolist())
        shard = DriftCounts(churn_baseline)
        shard.add_scored(columns, preds)
        merged.merge(DriftCounts.from_json(shard.to_json(), churn_baseline))

    # server: one JSON row per request into a rolling window
    window = RollingCounts(churn_baseline, window=3600.0, clock=lambda: 0.0)
    for record in records:
        window.add_scored({k: [v] for k, v in record.items()}, churn_scorer.score_records([record]))

    # stream: batches of 100 JSON records, one DriftCounts across the window
    stream = DriftCounts(churn_baseline)
    for start in range(0, 600, 100):
        batch = records[start : start + 100]
        columns = {k: [r[k] for r in batch] for k in example.FEATURES}
        stream.add_scored(columns, churn_scorer.score_records(batch))

    reports = [merged.report(), window.total().report(), stream.report()]
    assert reports[0] == reports[1] == reports[2]
    assert reports[0].worst is not None and reports[0].worst.name == "age"


def test_records_as_the_server_decodes_them_count_the_accepted_rows(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    frame = fresh_sample.iloc[:40].reset_index(drop=True)
    records = json.loads(frame[example.FEATURES].to_json(orient="records"))
    bad = {**records[0], "tenure_months": "soon"}
    window = RollingCounts(churn_baseline, window=60.0, flush_rows=16, clock=lambda: 0.0)
    for start in range(0, 40, 4):  # requests of four rows, one bad row among them
        batch = records[start : start + 4] + ([bad] if start == 8 else [])
        window.add_scored_records(batch, churn_scorer.score_records(batch))
    assert window.total().to_dict() == counted(churn_baseline, churn_scorer, frame).to_dict()


def test_one_row_and_many_row_requests_mixed_count_as_one_pass(
    churn_baseline: Baseline, churn_scorer: Scorer, fresh_sample: pd.DataFrame
) -> None:
    # given requests of one row (kept as values) between requests of several rows (kept
    # as given), one of them with a rejected row, flushed mid-way and across two slices
    frame = shifted(fresh_sample).iloc[:120].reset_index(drop=True)
    records = json.loads(frame[example.FEATURES].to_json(orient="records"))
    bad = {**records[0], "tenure_months": "soon"}
    now = [0.0]
    window = RollingCounts(churn_baseline, window=600.0, flush_rows=9, clock=lambda: now[0])
    start = 0
    while start < len(records):
        now[0] = float(start)  # slices of 100 s
        size = 1 if start % 3 else 5
        batch = records[start : start + size] + ([bad] if start == 30 else [])
        columns = {k: [r[k] for r in batch] for k in example.FEATURES}
        window.add_scored(columns, churn_scorer.score_columns(columns, len(batch)))
        start += size
    # then the figures are those of the good rows counted at once
    assert window.total().to_dict() == counted(churn_baseline, churn_scorer, frame).to_dict()
