"""The drift figures and how to read them: PSI per feature and for the prediction.

:class:`~dscloud.drift.DriftCounts` counts; this module turns counts into figures.

- **PSI**, the population stability index ``sum((c - b) * ln(c / b))`` over the bins, where
  ``b`` and ``c`` are the baseline and current shares of all rows (value bins and a missing
  bin). An empty bin has no logarithm, so both shares are floored at
  :data:`PSI_EPSILON` (1e-4, i.e. 0.01%): a bin that held nothing in training and holds
  1% of rows now adds about 0.046. The usual reading, stated in every report:
  below 0.1 *stable*, 0.1 to 0.25 *moderate*, above 0.25 *major*. PSI needs rows: with
  ten bins, a few hundred rows at least, or sampling noise alone reads as drift.
- **missing-rate change**: current minus training share of nulls/NaN;
- **out of range** (numeric): share of present values below the training minimum or above
  its maximum;
- **unseen** (categorical): share of present values that never occurred in training (None
  when the training data had too many categories to list).

Features are ranked by PSI, highest first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dscloud.baseline import Bins, NumericBins

__all__ = [
    "ALARMED_METRICS",
    "MAJOR_ABOVE",
    "PREDICTION",
    "PSI_EPSILON",
    "READING",
    "ROWS_METRIC",
    "STABLE_BELOW",
    "DriftReport",
    "FeatureDrift",
    "figures",
    "metric_figures",
    "psi",
    "reading",
]

Array = npt.NDArray[Any]

#: Floor on a bin's share before the logarithm: an empty bin would make PSI infinite.
PSI_EPSILON = 1e-4
STABLE_BELOW = 0.1
MAJOR_ABOVE = 0.25
READING = "PSI < 0.1 stable, 0.1 to 0.25 moderate, > 0.25 major"
PREDICTION = "(prediction)"


def psi(baseline: Sequence[float] | Array, current: Sequence[float] | Array) -> float:
    """Population stability index of ``current`` shares against ``baseline`` shares.

    Both are shares of the same bins (each summing to 1); each is floored at
    :data:`PSI_EPSILON`. Returns a float >= 0.
    """
    b = np.maximum(np.asarray(baseline, dtype=np.float64), PSI_EPSILON)
    c = np.maximum(np.asarray(current, dtype=np.float64), PSI_EPSILON)
    return float(np.sum((c - b) * np.log(c / b)))


def reading(value: float | None) -> str:
    """``"stable"`` below 0.1, ``"moderate"`` up to 0.25, ``"major"`` above; ``"no data"``."""
    if value is None:
        return "no data"
    if value < STABLE_BELOW:
        return "stable"
    return "moderate" if value <= MAJOR_ABOVE else "major"


@dataclass(frozen=True)
class FeatureDrift:
    """The drift figures of one feature (or of the prediction) against its baseline."""

    name: str
    kind: str  # "numeric" or "categorical"; the prediction's source for the prediction
    rows: int
    psi: float | None
    reading: str
    missing_baseline: float
    missing_current: float | None
    out_of_range: float | None  # numeric: share of present values outside training range
    unseen: float | None  # categorical: share of present values never seen in training
    labels: tuple[str, ...]
    baseline_shares: tuple[float, ...]  # per value bin, over present values
    current_shares: tuple[float, ...]

    @property
    def missing_change(self) -> float | None:
        if self.missing_current is None:
            return None
        return self.missing_current - self.missing_baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "rows": self.rows,
            "psi": self.psi,
            "reading": self.reading,
            "missing": {
                "baseline": self.missing_baseline,
                "current": self.missing_current,
                "change": self.missing_change,
            },
            "out_of_range": self.out_of_range,
            "unseen": self.unseen,
            "bins": [
                {"bin": label, "baseline": b, "current": c}
                for label, b, c in zip(
                    self.labels, self.baseline_shares, self.current_shares, strict=True
                )
            ],
        }


def figures(
    name: str, bins: Bins, counts: Array, unseen: int | None, kind: str | None = None
) -> FeatureDrift:
    total = int(counts.sum())
    present = total - int(counts[-1])
    value_counts = counts[:-1]
    current = tuple(float(c) / present if present else 0.0 for c in value_counts)
    base_all = [s * (1.0 - bins.missing) for s in bins.shares] + [bins.missing]
    value = psi(base_all, counts / total) if total else None
    out_of_range = unseen_share = None
    if isinstance(bins, NumericBins) and present:
        out_of_range = float(value_counts[0] + value_counts[-1]) / present
    if unseen is not None and present:
        unseen_share = unseen / present
    return FeatureDrift(
        name=name,
        kind=kind or bins.kind,
        rows=total,
        psi=value,
        reading=reading(value),
        missing_baseline=bins.missing,
        missing_current=float(counts[-1]) / total if total else None,
        out_of_range=out_of_range,
        unseen=unseen_share,
        labels=tuple(bins.labels()),
        baseline_shares=tuple(bins.shares),
        current_shares=current,
    )


@dataclass(frozen=True)
class DriftReport:
    """Drift of counted rows against the training baseline; features ranked by PSI."""

    rows: int
    baseline_rows: int
    features: tuple[FeatureDrift, ...]
    prediction: FeatureDrift | None
    prediction_source: str | None

    @property
    def worst(self) -> FeatureDrift | None:
        """The feature with the highest PSI (None when there are no rows or features)."""
        return self.features[0] if self.features and self.features[0].psi is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: rows, the reading, the worst feature, the prediction's and every
        feature's figures with each bin's training and current share."""
        worst = self.worst
        return {
            "rows": self.rows,
            "baseline_rows": self.baseline_rows,
            "reading": READING,
            "psi_epsilon": PSI_EPSILON,
            "worst_feature": worst.name if worst is not None else None,
            "worst_feature_psi": worst.psi if worst is not None else None,
            "prediction": (
                {"source": self.prediction_source, **self.prediction.to_dict()}
                if self.prediction is not None
                else None
            ),
            "features": [f.to_dict() for f in self.features],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text (the CLI's ``--json`` and the server's
        report endpoint)."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A plain-text table: one line per feature, ranked by PSI, the prediction first."""
        head = (
            f"drift of {self.rows} rows against the training baseline ({self.baseline_rows} "
            f"rows); {READING}"
        )
        header = (
            "feature",
            "kind",
            "PSI",
            "reading",
            "missing train -> now",
            "out of range",
            "unseen",
        )
        lines = [
            _row(f) for f in ([self.prediction] if self.prediction else []) + list(self.features)
        ]
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        fmt = "  ".join(f"{{:{'>' if i == 2 else '<'}{w}}}" for i, w in enumerate(widths))
        body = [fmt.format(*r).rstrip() for r in [header, *lines]]
        return "\n".join([head, *body])


def _row(f: FeatureDrift) -> tuple[str, ...]:
    missing = (
        f"{f.missing_baseline:.1%} -> {f.missing_current:.1%}"
        if f.missing_current is not None
        else "-"
    )
    return (
        f.name,
        f.kind,
        f"{f.psi:.3f}" if f.psi is not None else "-",
        f.reading,
        missing,
        f"{f.out_of_range:.1%}" if f.out_of_range is not None else "-",
        f"{f.unseen:.1%}" if f.unseen is not None else "-",
    )


# -- as CloudWatch metrics ---------------------------------------------------------------

#: The metrics the deployed alarms watch, on the online path and the nightly job
#: (stacks/online.py and stacks/batch.py; tests/stacks check the alarms name exactly these).
ALARMED_METRICS = ("DriftPredictionPsi", "DriftWorstFeaturePsi")
#: The rows a report's figures are over.
ROWS_METRIC = "DriftRows"


def metric_figures(report: Mapping[str, Any]) -> list[tuple[str, float, str]]:
    """A drift report (:meth:`DriftReport.to_dict`, as ``_SUCCESS`` holds it) as the
    metrics the stream and the nightly job publish, ``(name, value, unit)``; a figure that
    is undefined (no rows, no prediction baseline) is left out:

    - ``DriftRows`` (Count): the rows the figures are over;
    - ``DriftPredictionPsi``: PSI of the model's outputs;
    - ``DriftWorstFeaturePsi``: the highest feature PSI;
    - ``DriftOutOfRangeShare`` / ``DriftUnseenShare``: the highest share of values outside
      the training range / of categories never seen in training, over the features;
    - ``DriftMissingChange``: the largest rise of a feature's missing rate.
    """
    out: list[tuple[str, float, str]] = [(ROWS_METRIC, float(report["rows"]), "Count")]
    prediction = report.get("prediction")
    if prediction is not None and prediction.get("psi") is not None:
        out.append((ALARMED_METRICS[0], float(prediction["psi"]), "None"))
    if report.get("worst_feature_psi") is not None:
        out.append((ALARMED_METRICS[1], float(report["worst_feature_psi"]), "None"))
    features = report.get("features") or []
    for metric, values in (
        ("DriftOutOfRangeShare", [f.get("out_of_range") for f in features]),
        ("DriftUnseenShare", [f.get("unseen") for f in features]),
        ("DriftMissingChange", [(f.get("missing") or {}).get("change") for f in features]),
    ):
        present = [float(v) for v in values if v is not None]
        if present:
            out.append((metric, max(present), "None"))
    return out
