"""Drift on the online path: counts kept across invocations, published once per window.

A Lambda batch holds a hundred records or so; PSI of a hundred rows is mostly sampling
noise (``docs/monitoring.md``). So each batch only *adds* the rows it scored to a
:class:`~dscloud.drift.DriftCounts` that lives as long as the container, and the figures
are published as CloudWatch metrics (Powertools EMF) when a window has passed **and** it
holds at least ``min_rows`` rows; then counting starts afresh. A window with fewer rows
keeps counting until it has enough: a quiet stream publishes less often rather than
publishing noise. A new model version (an alias moved) starts new counts, since counts
belong to one version's baseline.

Published metrics (unit: none, except ``DriftRows``, a count), with the metrics of the
batch they are flushed with:

- ``DriftPredictionPsi``: PSI of the model's outputs;
- ``DriftWorstFeaturePsi``: the highest feature PSI (the alarm's other input);
- ``DriftOutOfRangeShare`` / ``DriftUnseenShare``: the highest share of values outside
  the training range / of categories never seen in training, over the features;
- ``DriftMissingChange``: the largest rise of a feature's missing rate;
- ``DriftRows``: the rows the figures are over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dscloud.baseline import Baseline
from dscloud.drift import DriftCounts, DriftReport
from dscloud.scorer import Predictions, Scorer
from dscloud.settings import Settings

__all__ = ["ALARMED_METRICS", "StreamDrift", "drift_metrics"]

#: The metrics the deployed alarms watch (stacks/online.py; tests/stacks/test_online.py
#: checks the alarms name exactly these).
ALARMED_METRICS = ("DriftPredictionPsi", "DriftWorstFeaturePsi")


class StreamDrift:
    """The running drift counts of one stream container.

    ``publish(name, value, unit)`` emits one metric (the handler passes Powertools'
    ``add_metric``). ``clock`` returns seconds (monotonic). The defaults are
    :class:`~dscloud.settings.Settings`' (``DSC_DRIFT_WINDOW_SECONDS``, ``DSC_DRIFT_MIN_ROWS``).
    """

    def __init__(
        self,
        publish: Callable[[str, float, str], None],
        *,
        window_seconds: float = Settings.drift_window_seconds,
        min_rows: int = Settings.drift_min_rows,
        enabled: bool = True,
        clock: Callable[[], float],
    ) -> None:
        self.publish = publish
        self.enabled = enabled
        self.window_seconds = window_seconds
        self.min_rows = min_rows
        self.clock = clock
        self.counts: DriftCounts | None = None
        self._sha256: str | None = None
        self._started = clock()

    def add(
        self, scorer: Scorer, records: Sequence[Mapping[str, Any]], predictions: Predictions
    ) -> DriftReport | None:
        """Count the accepted ``records`` scored as ``predictions``; publish when due.

        Returns the published report, or None (nothing published, counting is off, or the
        model has no baseline: such a model scores as before and reports no drift).
        """
        if scorer.sha256 != self._sha256:
            baseline = Baseline.of(scorer.envelope.data) if self.enabled else None
            self._sha256 = scorer.sha256
            self.counts = DriftCounts(baseline) if baseline is not None else None
            self._started = self.clock()
        if self.counts is None:
            return None
        names = self.counts.baseline.features
        columns = {name: [r.get(name) for r in records] for name in names}
        self.counts.add_scored(columns, predictions)
        if self.clock() - self._started < self.window_seconds or self.counts.rows < self.min_rows:
            return None
        report = self.counts.report()
        for name, value, unit in drift_metrics(report):
            self.publish(name, value, unit)
        self.counts = DriftCounts(self.counts.baseline)
        self._started = self.clock()
        return report


def drift_metrics(report: DriftReport) -> list[tuple[str, float, str]]:
    """The metrics of ``report``: ``(name, value, unit)``, the figures that are defined."""
    out: list[tuple[str, float, str]] = [("DriftRows", float(report.rows), "Count")]
    if report.prediction is not None and report.prediction.psi is not None:
        out.append(("DriftPredictionPsi", report.prediction.psi, "None"))
    worst = report.worst
    if worst is not None and worst.psi is not None:
        out.append(("DriftWorstFeaturePsi", worst.psi, "None"))
    for metric, values in (
        ("DriftOutOfRangeShare", [f.out_of_range for f in report.features]),
        ("DriftUnseenShare", [f.unseen for f in report.features]),
        ("DriftMissingChange", [f.missing_change for f in report.features]),
    ):
        present = [v for v in values if v is not None]
        if present:
            out.append((metric, max(present), "None"))
    return out
