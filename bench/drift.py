"""Drift counting cost, side by side with the scoring it rides on.

The issue's budget: counting costs at most 5% of batch scoring throughput and 10% of
serving throughput. This measures the core alone (no transport), on the example churn
pipeline (5 numeric and 3 string features, 10 quantile bins), best of ``--repeat``:

- batch chunk (``--rows`` rows, numpy columns as the batch reader has them):
  ``Scorer.score_columns`` vs ``DriftCounts.add_scored`` with the string columns counted
  by value in Python, and with them tallied by Arrow (``pyarrow.compute.value_counts``,
  tally time included), and with them read as dictionaries and counted from their codes
  (``Tally.from_codes``), which is what the batch adapter should do;
- serving (one JSON row per request): ``Scorer.score_records`` vs
  ``RollingCounts.add_scored`` (rows buffered and counted 1,024 at a time, flush cost
  included).

    .venv/bin/python bench/drift.py [--rows 200000] [--repeat 5]

Writes bench/results/drift.json. Run by hand, not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runtime"))

import dscloud  # noqa: E402
from dscloud import example  # noqa: E402
from dscloud.baseline import build_baseline  # noqa: E402
from dscloud.drift import DriftCounts, Tally  # noqa: E402
from dscloud.drift_window import RollingCounts  # noqa: E402
from dscloud.scorer import Scorer  # noqa: E402


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def arrow_tally(values: pa.Array) -> Tally:
    counted = pc.value_counts(values)
    names = counted.field("values").to_pylist()
    counts = counted.field("counts").to_pylist()
    tally = {str(k): int(n) for k, n in zip(names, counts, strict=True) if k is not None}
    return Tally(counts=tally, missing=values.null_count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    ex = example.train(seed=0, rows=3000)
    artifact = dscloud.package(
        ex.estimator, ex.X_test, name="churn", training_data=ex.X_train, y=ex.y_train
    )
    scorer = Scorer(artifact)
    train = {c: ex.X_train[c].to_numpy() for c in example.FEATURES}
    sample = {c: ex.X_test[c].to_numpy() for c in example.FEATURES}
    baseline = build_baseline(scorer.schema, train, scorer.score_columns(sample, len(ex.X_test)))

    frame = example.churn_data(args.rows, seed=5)
    columns = {c: frame[c].to_numpy() for c in example.FEATURES}
    arrow = {c: pa.array(frame[c].to_numpy()) for c in example.CATEGORICAL}
    preds = scorer.score_columns(columns, args.rows)

    encoded = {c: arrow[c].dictionary_encode() for c in example.CATEGORICAL}

    def tallied() -> None:
        cols = {**columns, **{c: arrow_tally(arrow[c]) for c in example.CATEGORICAL}}
        DriftCounts(baseline).add_scored(cols, preds)

    def from_codes() -> None:
        tallies = {
            c: Tally.from_codes(
                pc.fill_null(encoded[c].indices, -1).to_numpy(), encoded[c].dictionary.to_pylist()
            )
            for c in example.CATEGORICAL
        }
        DriftCounts(baseline).add_scored({**columns, **tallies}, preds)

    score = best(lambda: scorer.score_columns(columns, args.rows), args.repeat)
    count_python = best(lambda: DriftCounts(baseline).add_scored(columns, preds), args.repeat)
    count_arrow = best(tallied, args.repeat)
    count_codes = best(from_codes, args.repeat)

    records = frame[example.FEATURES].iloc[:2048].to_dict("records")
    records = [{k: (None if v != v else v) for k, v in r.items()} for r in records]
    one_row = [{k: [v] for k, v in r.items()} for r in records]
    scored = [scorer.score_records([r]) for r in records]

    def serve_score() -> None:
        for r in records:
            scorer.score_records([r])

    def serve_count() -> None:
        window = RollingCounts(baseline, window=300.0)
        for cols, p in zip(one_row, scored, strict=True):
            window.add_scored(cols, p)
        window.total()

    # Both sides allocate; a full collection over the benchmark's own heap (pandas,
    # scikit-learn) would land on whichever happens to trigger it.
    gc.collect()
    gc.freeze()
    serve = best(serve_score, args.repeat)
    serve_drift = best(serve_count, args.repeat)

    n = args.rows
    results = {
        "machine": platform.platform(),
        "rows": n,
        "batch_score_ns_per_row": score / n * 1e9,
        "batch_count_python_ns_per_row": count_python / n * 1e9,
        "batch_count_arrow_tally_ns_per_row": count_arrow / n * 1e9,
        "batch_cost_python": count_python / score,
        "batch_count_dictionary_ns_per_row": count_codes / n * 1e9,
        "batch_cost_arrow_tally": count_arrow / score,
        "batch_cost_dictionary": count_codes / score,
        "serve_score_us_per_request": serve / len(records) * 1e6,
        "serve_count_us_per_request": serve_drift / len(records) * 1e6,
        "serve_cost": serve_drift / serve,
    }
    out = ROOT / "bench" / "results" / "drift.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:40} {value:.3f}" if isinstance(value, float) else f"{key:40} {value}")


if __name__ == "__main__":
    main()
