"""Drift on the online path: counts kept across invocations, published once per window.

A Lambda batch holds a hundred records or so; PSI of a hundred rows is mostly sampling
noise (``docs/monitoring.md``). So each batch only *adds* the rows it scored to a
:class:`~dscloud.drift.DriftCounts` that lives as long as the container, and the figures
are published as CloudWatch metrics (Powertools EMF) when a window has passed **and** it
holds at least ``min_rows`` rows; then counting starts afresh. A window with fewer rows
keeps counting until it has enough: a quiet stream publishes less often rather than
publishing noise. A new model version (an alias moved) starts new counts, since counts
belong to one version's baseline.

Published metrics: :func:`~dscloud.drift_report.metric_figures`, the nightly job's too,
with the metrics of the batch they are flushed with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dscloud.baseline import Baseline
from dscloud.drift import DriftCounts, DriftReport
from dscloud.drift_report import ALARMED_METRICS, metric_figures
from dscloud.scorer import Predictions, Scorer
from dscloud.settings import Settings

__all__ = ["ALARMED_METRICS", "StreamDrift"]


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
        for name, value, unit in metric_figures(report.to_dict()):
            self.publish(name, value, unit)
        self.counts = DriftCounts(self.counts.baseline)
        self._started = self.clock()
        return report
