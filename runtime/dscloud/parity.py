"""The parity gate: an exported model must score like the estimator it came from.

:func:`parity_report` compares ONNX (through the one scoring core) with the estimator on
a sample, within a :class:`Tolerance`; packaging refuses a model whose report did not
pass (:func:`parity_message` says why). The report is kept in the envelope's ``quality``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from dscloud.errors import ExportError
from dscloud.scorer import Scorer

__all__ = ["Tolerance", "parity_message", "parity_report"]


@dataclass(frozen=True)
class Tolerance:
    """How far ONNX may drift from the estimator on the parity sample.

    Probabilities and values may differ by ``atol + rtol * |expected|`` (float32 vs
    float64 arithmetic); at least ``min_label_agreement`` of predicted labels must match.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_label_agreement: float = 1.0


def parity_report(
    estimator: Any,
    sample: pd.DataFrame,
    scorer: Scorer,
    records: list[dict[str, Any]],
    tol: Tolerance,
) -> dict[str, Any]:
    """How far ``scorer`` (ONNX) is from ``estimator`` on ``sample``, as the envelope's
    parity report: max and mean abs difference, label agreement, rows beyond ``tol``,
    the worst rows with their inputs, and ``passed``.

    ``records`` are ``sample``'s rows as every runtime receives them. Raises
    :class:`ExportError` when a sample row does not fit the model's own schema.
    """
    preds = scorer.score_records(records)
    if preds.rejects:
        row, why = next(iter(preds.rejects.items()))
        raise ExportError(f"X_sample row {row} does not fit the model's own schema: {why}")
    X = (
        sample
        if isinstance(estimator, Pipeline) or hasattr(estimator, "feature_names_in_")
        else sample.to_numpy()
    )
    report: dict[str, Any] = {"rows": len(sample), "tolerance": asdict(tol)}
    if is_classifier(estimator):
        expected = np.asarray(estimator.predict_proba(X), dtype=np.float64)
        actual = np.asarray(preds.probabilities, dtype=np.float64)
        labels_ok = np.asarray(estimator.predict(X)) == np.asarray(preds.label)
        report["label_agreement"] = float(labels_ok.mean())
        column_names = [str(c) for c in preds.classes or []]
    else:
        expected = np.asarray(estimator.predict(X), dtype=np.float64).reshape(-1, 1)
        actual = np.asarray(preds.value, dtype=np.float64).reshape(-1, 1)
        labels_ok = np.ones(len(sample), dtype=bool)
        column_names = ["value"]
    diff = np.abs(actual - expected)
    excess = diff - (tol.atol + tol.rtol * np.abs(expected))
    report["max_abs_diff"] = float(np.nanmax(diff)) if diff.size else 0.0
    report["mean_abs_diff"] = float(np.nanmean(diff)) if diff.size else 0.0
    nan_mismatch = np.isnan(actual) != np.isnan(expected)
    bad_rows = np.flatnonzero((excess > 0).any(axis=1) | nan_mismatch.any(axis=1) | ~labels_ok)
    report["rows_beyond_tolerance"] = len(bad_rows)
    order = np.argsort(-np.nan_to_num(diff.max(axis=1), nan=np.inf))[:5]
    report["worst_rows"] = [
        {
            "row": int(i),
            "output": column_names[int(np.nanargmax(diff[i]))]
            if not np.isnan(diff[i]).all()
            else None,
            "abs_diff": float(np.nanmax(diff[i])) if not np.isnan(diff[i]).all() else None,
            "label_agrees": bool(labels_ok[i]),
            "inputs": records[int(i)],
        }
        for i in order
    ]
    report["worst_outputs"] = {
        name: float(np.nanmax(diff[:, j])) for j, name in enumerate(column_names)
    }
    report["passed"] = bool(
        not np.any(excess > 0)
        and not nan_mismatch.any()
        and report.get("label_agreement", 1.0) >= tol.min_label_agreement
    )
    return report


def parity_message(name: str, report: Mapping[str, Any]) -> str:
    """The :class:`ParityError` message for a failed ``report``: the worst rows, and what
    to do."""
    worst = report["worst_rows"][:3]
    rows = "; ".join(
        f"row {w['row']} output {w['output']} differs by {w['abs_diff']:.3g}"
        + ("" if w["label_agrees"] else " (label differs)")
        for w in worst
    )
    return (
        f"{name}: ONNX disagrees with the estimator on {report['rows_beyond_tolerance']} of "
        f"{report['rows']} rows (max abs diff {report['max_abs_diff']:.3g}, label agreement "
        f"{report.get('label_agreement', 1.0):.4f}, tolerance {report['tolerance']}); worst: {rows}. "
        "Not packaging a model that scores differently; loosen the tolerance only if the "
        "difference is acceptable."
    )
