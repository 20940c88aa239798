"""Guard rails: a breach aborts the rollout exactly once among concurrent runtimes, audited
with the figures; recorded comparisons merge in the archive. Both stores."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.rollout import Rollout, Thresholds, start, status
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import comparison, guard, record_comparison
from dscloud.scorer import Scorer


@pytest.fixture(scope="module")
def counts(
    churn_artifact: Artifact, churn_retrained: Artifact, fresh_sample: pd.DataFrame
) -> Comparison:
    """Both churn versions really scored on 500 rows (they disagree on some)."""
    rows = fresh_sample.head(500).fillna(0.0).to_dict(orient="records")
    out = Comparison(1, 2)
    out.add(Scorer(churn_artifact).score_records(rows), Scorer(churn_retrained).score_records(rows))
    return out


def started(archive: Archive, **limits: float) -> Rollout:
    return start(
        archive, "churn", "production", 2, mode="canary", share=0.2, thresholds=Thresholds(**limits)
    )


def test_figures_within_the_thresholds_abort_nothing(
    rollout_archive: Archive, counts: Comparison
) -> None:
    rollout = started(rollout_archive, max_disagreement=1.0, max_error_rate=0.0)
    assert guard(rollout_archive, "churn", "production", rollout, counts.figures()) is None
    assert status(rollout_archive, "churn", "production")[1] == rollout


def test_too_few_rows_abort_nothing(rollout_archive: Archive, counts: Comparison) -> None:
    rollout = started(rollout_archive, max_disagreement=0.0, min_rows=10_000)
    assert guard(rollout_archive, "churn", "production", rollout, counts.figures()) is None


def test_concurrent_runtimes_abort_a_breach_exactly_once(
    rollout_archive: Archive, counts: Comparison
) -> None:
    # given a rollout that tolerates no disagreement, and eight runtimes that see the breach
    rollout = started(rollout_archive, max_disagreement=0.0)
    figures = counts.figures()
    barrier = threading.Barrier(8)
    results: list[dict | None] = []

    def runtime(i: int) -> None:
        barrier.wait()
        results.append(
            guard(rollout_archive, "churn", "production", rollout, figures, by=f"server-{i}")
        )

    threads = [threading.Thread(target=runtime, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then one wins, and one audit record holds the figures that tripped it
    won = [r for r in results if r is not None]
    assert len(results) == 8 and len(won) == 1
    aborts = [r for r in rollout_archive.audit("churn") if r["event"] == "rollout-abort"]
    assert aborts == won
    assert aborts[0]["why"].startswith("guard rail: disagreement rate")
    assert aborts[0]["figures"]["disagreements"] == figures["disagreements"] > 0
    record, after = status(rollout_archive, "churn", "production")
    assert after is None and record["version"] == 1


def test_a_guard_never_aborts_a_newer_rollout(rollout_archive: Archive, counts: Comparison) -> None:
    # given a runtime still holding an old rollout that was aborted and restarted since
    old = started(rollout_archive, max_disagreement=0.0)
    assert guard(rollout_archive, "churn", "production", old, counts.figures()) is not None
    new = started(rollout_archive, max_disagreement=0.0)

    # when the stale runtime sees its old figures again
    assert guard(rollout_archive, "churn", "production", old, counts.figures()) is None
    assert status(rollout_archive, "churn", "production")[1] == new


def test_recorded_comparisons_merge_per_rollout(
    rollout_archive: Archive, counts: Comparison
) -> None:
    rollout = started(rollout_archive)
    assert comparison(rollout_archive, "churn", "production", rollout) is None
    record_comparison(rollout_archive, "churn", "production", rollout, counts, by="server-1")
    record_comparison(rollout_archive, "churn", "production", rollout, counts, by="server-2")
    merged = comparison(rollout_archive, "churn", "production", rollout)
    assert merged is not None and merged.to_dict() == (counts + counts).to_dict()
