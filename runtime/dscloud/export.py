"""Package a scikit-learn estimator as an envelope: convert, check parity, record everything.

This is the only module that imports scikit-learn and skl2onnx (the ``export`` extra)::

    artifact = dscloud.package(pipeline, X_test, name="churn", metrics={"auc": 0.91},
                               params={"C": 1.0}, training_data=X_train, y=y_train)
    envelope = dscloud.publish(artifact)

A DataFrame becomes one ONNX input per column (numbers as float32, strings as string
tensors), which is what a ``ColumnTransformer`` pipeline needs; a purely numeric estimator
gets one ``[N, k]`` float matrix. Packaging fails with :class:`ParityError` when ONNX and
the estimator disagree beyond tolerance on ``X_sample``: it never silently produces a model
that scores differently.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from dscloud.archive import current_user
from dscloud.envelope import Artifact, Envelope, Golden, sha256_hex
from dscloud.errors import ExportError, ParityError
from dscloud.onnx_import import graph_info, library_versions
from dscloud.schema import Column, Output, Schema
from dscloud.scorer import Scorer

__all__ = ["Tolerance", "data_summary", "git_info", "package"]

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
MAX_CATEGORIES = 1000


@dataclass(frozen=True)
class Tolerance:
    """How far ONNX may drift from the estimator on the parity sample.

    Probabilities and values may differ by ``atol + rtol * |expected|`` (float32 vs
    float64 arithmetic); at least ``min_label_agreement`` of predicted labels must match.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_label_agreement: float = 1.0


def package(
    estimator: Any,
    X_sample: Any,
    *,
    name: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    training_data: Any = None,
    y: Any = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    tolerance: Tolerance | None = None,
    n_goldens: int = 5,
    seed: int | None = None,
    parent_version: int | None = None,
    training_seconds: float | None = None,
    code_dir: str | os.PathLike[str] | None = None,
    created_by: str | None = None,
) -> Artifact:
    """Convert a fitted estimator to ONNX and wrap it in an envelope.

    Returns an :class:`Artifact` (envelope + model bytes) ready for ``publish``. Raises
    :class:`ExportError` when the estimator cannot be converted and :class:`ParityError`
    when ONNX scores differently beyond ``tolerance``.
    """
    tolerance = tolerance or Tolerance()
    sample = _frame(X_sample, estimator)
    if len(sample) == 0:
        raise ExportError("X_sample is empty: parity needs rows to compare on")
    train = _frame(training_data, estimator) if training_data is not None else sample
    schema_columns = _columns(estimator, train)
    matrix = not _needs_column_inputs(estimator, schema_columns)
    model = _convert(estimator, schema_columns, matrix)
    outputs = _outputs(estimator)
    schema = Schema(
        columns=schema_columns, outputs=outputs, matrix_input="input" if matrix else None
    )

    draft = Envelope(
        name=name, sha256=sha256_hex(model), size_bytes=len(model), schema=schema, goldens=()
    )
    scorer = Scorer(Artifact(envelope=draft, model=model), check_goldens=False)
    records = _records(sample, schema)
    parity = _parity(estimator, sample, scorer, records, tolerance)
    if not parity["passed"]:
        raise ParityError(_parity_message(name, parity), parity)
    golden_rows = _golden_rows(sample, records, n_goldens)
    goldens = tuple(
        Golden(inputs=inp, outputs=out)
        for inp, out in zip(golden_rows, scorer.golden_outputs(golden_rows), strict=True)
    )
    hyper = dict(params) if params is not None else {}
    envelope = Envelope(
        name=name,
        sha256=draft.sha256,
        size_bytes=len(model),
        schema=schema,
        goldens=goldens,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        created_by=created_by or current_user(),
        description=description,
        tags=dict(tags or {}),
        onnx=graph_info(model),
        provenance={
            "code": git_info(code_dir),
            "estimator": _describe(estimator),
            "hyperparameters": _jsonable(hyper),
            "estimator_params": _jsonable(_estimator_params(estimator)),
            "libraries": library_versions(
                "scikit-learn", "skl2onnx", "onnxruntime", "onnx", "numpy", "pandas", "dscloud"
            ),
            "random_seed": seed if seed is not None else _random_state(estimator),
            "training_seconds": training_seconds,
            "parent_version": parent_version,
        },
        data=data_summary(train, y),
        quality={"metrics": dict(metrics or {}), "parity": parity},
    )
    return Artifact(envelope=envelope, model=model)


# -- interface ------------------------------------------------------------------------------


def _frame(X: Any, estimator: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.reset_index(drop=True)
    array = np.asarray(X)
    if array.ndim != 2:
        raise ExportError(f"X_sample: expected a 2-d table, got shape {array.shape}")
    names = getattr(estimator, "feature_names_in_", None)
    cols = (
        [str(c) for c in names] if names is not None else [f"f{i}" for i in range(array.shape[1])]
    )
    return pd.DataFrame(array, columns=cols)


def _columns(estimator: Any, frame: pd.DataFrame) -> tuple[Column, ...]:
    unknown_policy = _unknown_policy(estimator)
    cols = []
    for name in frame.columns:
        series = frame[name]
        nullable = bool(series.isna().any())
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            cols.append(Column(name=str(name), dtype="float32", nullable=nullable))
            continue
        cats = sorted({str(v) for v in series.dropna().unique()})
        cols.append(
            Column(
                name=str(name),
                dtype="string",
                nullable=nullable,
                categories=tuple(cats) if len(cats) <= MAX_CATEGORIES else None,
                allow_unknown=unknown_policy.get(str(name), True),
            )
        )
    return tuple(cols)


def _unknown_policy(estimator: Any) -> dict[str, bool]:
    """Column -> whether its OneHotEncoder tolerates unseen categories."""
    policy: dict[str, bool] = {}
    steps = estimator.steps if isinstance(estimator, Pipeline) else [("", estimator)]
    for _, step in steps:
        if not isinstance(step, ColumnTransformer):
            continue
        for _, transformer, cols in step.transformers_:
            encoders = (
                transformer.steps if isinstance(transformer, Pipeline) else [("", transformer)]
            )
            for _, enc in encoders:
                if isinstance(enc, OneHotEncoder) and isinstance(cols, list | tuple):
                    for col in cols:
                        policy[str(col)] = enc.handle_unknown != "error"
    return policy


def _needs_column_inputs(estimator: Any, columns: tuple[Column, ...]) -> bool:
    first = estimator.steps[0][1] if isinstance(estimator, Pipeline) else estimator
    return isinstance(first, ColumnTransformer) or any(not c.numeric for c in columns)


def _final(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _convert(estimator: Any, columns: tuple[Column, ...], matrix: bool) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if matrix:
        initial = [("input", FloatTensorType([None, len(columns)]))]
    else:
        initial = [
            (c.name, FloatTensorType([None, 1]) if c.numeric else StringTensorType([None, 1]))
            for c in columns
        ]
    options = {id(_final(estimator)): {"zipmap": False}} if is_classifier(estimator) else None
    try:
        onx = to_onnx(estimator, initial_types=initial, options=options, target_opset=TARGET_OPSET)
    except Exception as exc:
        raise ExportError(
            f"skl2onnx cannot convert {_describe(estimator)}: {type(exc).__name__}: {exc}"
        ) from exc
    return bytes(onx.SerializeToString())


def _outputs(estimator: Any) -> tuple[Output, ...]:
    if is_classifier(estimator):
        classes = tuple(np.asarray(_final(estimator).classes_).tolist())
        return (
            Output(name="label", kind="label", classes=classes),
            Output(name="probabilities", kind="probabilities", classes=classes),
        )
    return (Output(name="variable", kind="value"),)


def _records(frame: pd.DataFrame, schema: Schema) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts, the form every runtime receives (NaN as null)."""
    out = []
    for row in frame.to_dict(orient="records"):
        rec: dict[str, Any] = {}
        for col in schema.columns:
            v = row[col.name]
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                rec[col.name] = None
            elif col.numeric:
                rec[col.name] = float(v)
            else:
                rec[col.name] = str(v)
        out.append(rec)
    return out


def _golden_rows(
    frame: pd.DataFrame, records: list[dict[str, Any]], n: int
) -> list[dict[str, Any]]:
    """The first ``n`` rows, swapping in a row with missing values when the sample has one."""
    picked = list(range(min(n, len(records))))
    missing = [i for i in range(len(records)) if any(v is None for v in records[i].values())]
    if missing and not any(i in picked for i in missing) and picked:
        picked[-1] = missing[0]
    return [records[i] for i in picked]


# -- parity ---------------------------------------------------------------------------------


def _parity(
    estimator: Any,
    sample: pd.DataFrame,
    scorer: Scorer,
    records: list[dict[str, Any]],
    tol: Tolerance,
) -> dict[str, Any]:
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
        column_names = [str(c) for c in _final(estimator).classes_]
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


def _parity_message(name: str, report: Mapping[str, Any]) -> str:
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


# -- provenance and data --------------------------------------------------------------------


def git_info(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit, dirty flag, branch and remote of the repository holding ``directory``
    (default: the current directory), plus the entry point. Outside a git checkout the
    commit comes from ``DSC_GIT_COMMIT`` (set by image builds), else it is None."""
    cwd = Path(directory) if directory is not None else Path.cwd()
    entry = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else None

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        # In an image without git (the batch job), the build stamps the commit instead.
        stamped = os.environ.get("DSC_GIT_COMMIT") or None
        return {
            "commit": stamped,
            "dirty": None,
            "branch": None,
            "remote": os.environ.get("DSC_GIT_REMOTE") or None,
            "entry_point": entry,
            "source": "DSC_GIT_COMMIT" if stamped else None,
        }
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "dirty": bool(status),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "remote": git("config", "--get", "remote.origin.url"),
        "entry_point": entry,
    }


def data_summary(frame: pd.DataFrame, y: Any = None) -> dict[str, Any]:
    """Fingerprint, row count, per-feature summary and label distribution of training data."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(json.dumps([str(c) for c in frame.columns]).encode())
    features: dict[str, Any] = {}
    for name in frame.columns:
        s = frame[name]
        missing = int(s.isna().sum())
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            v = s.dropna().astype(float)
            q = v.quantile([0.01, 0.25, 0.5, 0.75, 0.99]).tolist() if len(v) else []
            features[str(name)] = {
                "type": "numeric",
                "missing": missing,
                "min": float(v.min()) if len(v) else None,
                "max": float(v.max()) if len(v) else None,
                "mean": float(v.mean()) if len(v) else None,
                "std": float(v.std()) if len(v) > 1 else None,
                "quantiles": dict(zip(["p01", "p25", "p50", "p75", "p99"], q, strict=False)),
            }
        else:
            counts = s.dropna().astype(str).value_counts()
            features[str(name)] = {
                "type": "categorical",
                "missing": missing,
                "distinct": len(counts),
                "counts": {str(k): int(c) for k, c in counts.head(50).items()},
            }
    out: dict[str, Any] = {
        "fingerprint": "sha256:" + digest.hexdigest(),
        "rows": len(frame),
        "features": features,
    }
    if y is not None:
        labels = pd.Series(np.asarray(y).reshape(-1))
        if pd.api.types.is_float_dtype(labels) and labels.nunique() > 20:
            out["label"] = {
                "type": "numeric",
                "mean": float(labels.mean()),
                "min": float(labels.min()),
                "max": float(labels.max()),
            }
        else:
            out["label"] = {
                "type": "classes",
                "counts": {str(k): int(c) for k, c in labels.value_counts().sort_index().items()},
            }
    return out


def _describe(estimator: Any) -> str:
    if isinstance(estimator, Pipeline):
        return "Pipeline(" + ", ".join(type(s).__name__ for _, s in estimator.steps) + ")"
    return type(estimator).__name__


def _estimator_params(estimator: Any) -> dict[str, Any]:
    if not isinstance(estimator, BaseEstimator):
        return {}
    params = estimator.get_params(deep=True)
    return {k: v for k, v in params.items() if not isinstance(v, BaseEstimator | list | tuple)}


def _random_state(estimator: Any) -> Any:
    state = _estimator_params(estimator)
    seeds = {k: v for k, v in state.items() if k.endswith("random_state") and isinstance(v, int)}
    return next(iter(seeds.values()), None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    return repr(value)
