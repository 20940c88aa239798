"""The server's drift: rolling counts per model version, as Prometheus series and JSON.

Every scoring request adds the rows it scored (all of them: a request with a rejected row
is refused whole, and nothing of it is counted) to the :class:`~dscloud.drift_window.RollingCounts`
of the version that scored it, one per model name and version (sha256), created when the version first
scores; a version without a training baseline is not counted. The window is
``DSC_DRIFT_WINDOW_SECONDS`` (default 300 s, in 6 slices).

``GET /metrics`` gains, per model and version (labels ``model``, ``version``):

- ``dsc_drift_rows``: rows in the window;
- ``dsc_drift_psi{feature=...}``: PSI per feature, and ``feature="(prediction)"`` for the
  model's outputs;
- ``dsc_drift_out_of_range{feature}`` (numeric), ``dsc_drift_unseen{feature}``
  (categorical), ``dsc_drift_missing_change{feature}``: shares, as in the report.

``GET /v2/models/{name}/drift`` answers the window's report as JSON (:meth:`DriftReport.to_dict`
plus ``model``, ``version``, ``window_seconds``); 404 for a version without a baseline, or
when counting is off (``DSC_DRIFT=off``).
Each per-process series covers that process's requests only (``worker`` label with
several workers), as the request counters do.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dscloud.baseline import Baseline
from dscloud.drift import ColumnValues, DriftReport
from dscloud.drift_window import RollingCounts
from dscloud.scorer import Predictions, Scorer
from dscloud.server.metrics import labels as _labels

__all__ = ["PREDICTION_LABEL", "ServerDrift"]

#: The ``feature`` label of the prediction's series.
PREDICTION_LABEL = "(prediction)"


class ServerDrift:
    """One :class:`RollingCounts` per model version served by this process. Thread-safe."""

    def __init__(
        self,
        *,
        window_seconds: float,
        worker_label: bool = False,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self.enabled = enabled
        self._extra = (("worker", str(os.getpid())),) if worker_label else ()
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], RollingCounts | None] = {}

    def window(self, scorer: Scorer) -> RollingCounts | None:
        """The window of ``scorer``'s version (None when it has no baseline)."""
        # By name too: two names may serve the same model bytes, each with its own traffic.
        key = (scorer.name, scorer.sha256)
        try:
            return self._windows[key]  # the common case: no lock
        except KeyError:
            pass
        with self._lock:
            if key not in self._windows:
                baseline = Baseline.of(scorer.envelope.data) if self.enabled else None
                self._windows[key] = (
                    RollingCounts(baseline, window=self.window_seconds, clock=self._clock)
                    if baseline is not None
                    else None
                )
            return self._windows[key]

    def add(
        self, scorer: Scorer, columns: Mapping[str, ColumnValues], predictions: Predictions
    ) -> None:
        """Count the rows ``scorer`` accepted from ``columns`` (a lock and an append)."""
        window = self.window(scorer)
        if window is not None and len(predictions):
            window.add_scored(columns, predictions)

    def report(self, scorer: Scorer) -> DriftReport | None:
        """The report of ``scorer``'s window, or None when its version has no baseline."""
        window = self.window(scorer)
        return window.total().report() if window is not None else None

    def render(self, scorers: Iterable[Scorer]) -> str:
        """Prometheus text of the served versions' drift."""
        extra = self._extra
        series: dict[str, list[str]] = {name: [] for name in _HELP}
        for scorer in scorers:
            report = self.report(scorer)
            if report is None:
                continue
            base = (("model", scorer.name), ("version", str(scorer.version)), *extra)
            series["dsc_drift_rows"].append(f"dsc_drift_rows{{{_labels(base)}}} {report.rows}")
            features = [*([report.prediction] if report.prediction else []), *report.features]
            for f in features:
                name = PREDICTION_LABEL if f is report.prediction else f.name
                labels = _labels((*base, ("feature", name)))
                for metric, value in (
                    ("dsc_drift_psi", f.psi),
                    ("dsc_drift_out_of_range", f.out_of_range),
                    ("dsc_drift_unseen", f.unseen),
                    ("dsc_drift_missing_change", f.missing_change),
                ):
                    if value is not None:
                        series[metric].append(f"{metric}{{{labels}}} {value:.6g}")
        lines: list[str] = []
        for metric, help_text in _HELP.items():
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *series[metric]]
        return "\n".join(lines) + "\n"

    def report_body(self, scorer: Scorer) -> dict[str, Any] | None:
        """The JSON body of the drift endpoint, or None without a baseline."""
        report = self.report(scorer)
        if report is None:
            return None
        return {
            "model": scorer.name,
            "version": scorer.version,
            "window_seconds": self.window_seconds,
            **report.to_dict(),
        }


_HELP = {
    "dsc_drift_rows": "Rows counted for drift over the rolling window, by model and version.",
    "dsc_drift_psi": "Population stability index against the training baseline "
    "(< 0.1 stable, 0.1 to 0.25 moderate, > 0.25 major), by feature.",
    "dsc_drift_out_of_range": "Share of present values outside the training range, by feature.",
    "dsc_drift_unseen": "Share of present values never seen in training, by feature.",
    "dsc_drift_missing_change": "Missing rate now minus in training, by feature.",
}
