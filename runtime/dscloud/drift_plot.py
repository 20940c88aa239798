"""The drift report as a picture: features ranked by PSI, then training vs current per bin.

Needs the ``plot`` extra (matplotlib); nothing in the scoring core imports this module.
The top panel ranks every feature and the prediction by PSI, coloured by the reading, with
the 0.1 and 0.25 thresholds drawn; below it, for the prediction and the features that moved
most, the training and current shares of each bin side by side (missing values as their
own bar when either side has any).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from dscloud.drift_report import MAJOR_ABOVE, READING, STABLE_BELOW, DriftReport, FeatureDrift
from dscloud.errors import ConfigError

__all__ = ["plot_drift"]

COLOURS = {"stable": "#4c9a5f", "moderate": "#e0a030", "major": "#c8453a", "no data": "#999999"}
TRAINING, CURRENT = "#8aa4c8", "#2d4e80"


def plot_drift(
    report: DriftReport, out: str | os.PathLike[str], *, top: int = 6, title: str = ""
) -> Path:
    """Write the drift picture of ``report`` to ``out`` (PNG); returns the path.

    ``top`` features (by PSI) get their own panel beside the prediction. Raises
    :class:`ConfigError` when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'dscloud[plot]'") from None

    panels = ([report.prediction] if report.prediction is not None else []) + list(
        report.features[:top]
    )
    cols = 3
    rows = math.ceil(len(panels) / cols)
    ranked = ([report.prediction] if report.prediction is not None else []) + list(report.features)
    fig = plt.figure(figsize=(5 * cols, 0.35 * len(ranked) + 1.8 + 3.4 * rows))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[0.1 * len(ranked) + 0.6] + [1.0] * rows)
    _ranking(fig.add_subplot(grid[0, :]), ranked)
    for i, feature in enumerate(panels):
        _bins(fig.add_subplot(grid[1 + i // cols, i % cols]), feature)
    heading = title or "Drift against the training baseline"
    fig.suptitle(
        f"{heading}: {report.rows} rows vs {report.baseline_rows} training rows\n{READING}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(out)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ranking(ax: object, ranked: list[FeatureDrift]) -> None:
    names = [f.name for f in ranked][::-1]
    values = [f.psi or 0.0 for f in ranked][::-1]
    colours = [COLOURS.get(f.reading, "#999999") for f in ranked][::-1]
    ax.barh(names, values, color=colours)  # type: ignore[attr-defined]
    for threshold in (STABLE_BELOW, MAJOR_ABOVE):
        ax.axvline(threshold, color="#555555", linestyle="--", linewidth=0.8)  # type: ignore[attr-defined]
    for y, (value, feature) in enumerate(zip(values, ranked[::-1], strict=True)):
        label = f"{value:.3f} {feature.reading}" if feature.psi is not None else "no data"
        ax.text(value, y, " " + label, va="center", fontsize=8)  # type: ignore[attr-defined]
    ax.set_xlabel("PSI (population stability index)")  # type: ignore[attr-defined]
    ax.set_xlim(0, max([*values, MAJOR_ABOVE]) * 1.25)  # type: ignore[attr-defined]
    ax.set_title("Features ranked by PSI", fontsize=10)  # type: ignore[attr-defined]


def _bins(ax: object, feature: FeatureDrift) -> None:
    labels = list(feature.labels)
    train = list(feature.baseline_shares)
    now = list(feature.current_shares)
    if feature.missing_baseline or feature.missing_current:
        # Shares of value bins are over present values; missing is over all rows.
        labels.append("missing")
        train.append(feature.missing_baseline)
        now.append(feature.missing_current or 0.0)
    xs = range(len(labels))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], train, width, label="training", color=TRAINING)  # type: ignore[attr-defined]
    ax.bar([x + width / 2 for x in xs], now, width, label="current", color=CURRENT)  # type: ignore[attr-defined]
    ax.set_xticks(list(xs))  # type: ignore[attr-defined]
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)  # type: ignore[attr-defined]
    ax.set_ylabel("share", fontsize=8)  # type: ignore[attr-defined]
    psi = f"{feature.psi:.3f}" if feature.psi is not None else "-"
    ax.set_title(  # type: ignore[attr-defined]
        f"{feature.name}: PSI {psi} ({feature.reading})",
        fontsize=9,
        color=COLOURS.get(feature.reading, "black"),
    )
    ax.legend(fontsize=7)  # type: ignore[attr-defined]
