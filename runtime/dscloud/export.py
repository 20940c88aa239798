"""Package a scikit-learn estimator as an envelope: convert, check parity, record everything.

The conversion lives here; the parity gate in :mod:`dscloud.parity`, what is recorded about
the code and data in :mod:`dscloud.provenance`. These three are the only modules that
import scikit-learn (and this one skl2onnx): the ``export`` extra::

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

import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from dscloud.archive import current_user
from dscloud.baseline import build_baseline
from dscloud.envelope import Artifact, Envelope, Golden, sha256_hex
from dscloud.errors import ExportError, ParityError
from dscloud.onnx_import import graph_info, library_versions
from dscloud.parity import Tolerance, parity_message, parity_report
from dscloud.provenance import (
    data_summary,
    describe,
    estimator_params,
    git_info,
    jsonable,
    random_state,
)
from dscloud.schema import Column, Output, Schema
from dscloud.scorer import Scorer

# Tolerance (the parity gate's) and data_summary, git_info (provenance) stay importable here.
__all__ = ["Tolerance", "data_summary", "git_info", "package"]

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
MAX_CATEGORIES = 1000


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
    parity = parity_report(estimator, sample, scorer, records, tolerance)
    if not parity["passed"]:
        raise ParityError(parity_message(name, parity), parity)
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
            "estimator": describe(estimator),
            "hyperparameters": jsonable(hyper),
            "estimator_params": jsonable(estimator_params(estimator)),
            "libraries": library_versions(
                "scikit-learn", "skl2onnx", "onnxruntime", "onnx", "numpy", "pandas", "dscloud"
            ),
            "random_seed": seed if seed is not None else random_state(estimator),
            "training_seconds": training_seconds,
            "parent_version": parent_version,
        },
        data={**data_summary(train, y), "baseline": _baseline(schema, train, scorer, records)},
        quality={"metrics": dict(metrics or {}), "parity": parity},
    )
    return Artifact(envelope=envelope, model=model)


def _baseline(
    schema: Schema, train: pd.DataFrame, scorer: Scorer, records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The drift baseline (:mod:`dscloud.baseline`): features from the training rows, the
    prediction from the model's outputs on the rows parity checked (``records``)."""
    # Numbers (bools too, as the model reads them) as floats with NaN; text as objects with
    # None: a nullable column's pd.NA would otherwise count as the category "<NA>".
    columns = {
        c.name: train[c.name].to_numpy(dtype=np.float64, na_value=np.nan)
        if c.numeric
        else _objects(train[c.name])
        for c in schema.columns
    }
    return build_baseline(schema, columns, scorer.score_records(records)).to_dict()


def _objects(series: pd.Series[Any]) -> Any:
    """The values as an object array, None for every kind of missing (NaN, None, pd.NA)."""
    values = series.to_numpy(dtype=object, copy=True)  # never the caller's frame
    values[series.isna().to_numpy()] = None
    return values


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
            f"skl2onnx cannot convert {describe(estimator)}: {type(exc).__name__}: {exc}"
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
