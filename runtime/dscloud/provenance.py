"""Provenance and data: what the envelope records about how a model came to be.

:func:`git_info` (the code), :func:`data_summary` (the training data's fingerprint and
per-feature summary) and the estimator's description, parameters and seed. Nothing here
converts or scores; packaging (:mod:`dscloud.export`) calls it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

__all__ = ["data_summary", "describe", "estimator_params", "git_info", "jsonable", "random_state"]


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


def describe(estimator: Any) -> str:
    """``Pipeline(ColumnTransformer, LogisticRegression)``, or the estimator's class name."""
    if isinstance(estimator, Pipeline):
        return "Pipeline(" + ", ".join(type(s).__name__ for _, s in estimator.steps) + ")"
    return type(estimator).__name__


def estimator_params(estimator: Any) -> dict[str, Any]:
    """The estimator's scalar parameters (deep), without nested estimators and lists."""
    if not isinstance(estimator, BaseEstimator):
        return {}
    params = estimator.get_params(deep=True)
    return {k: v for k, v in params.items() if not isinstance(v, BaseEstimator | list | tuple)}


def random_state(estimator: Any) -> Any:
    """The first integer ``random_state`` among the estimator's parameters, else None."""
    state = estimator_params(estimator)
    seeds = {k: v for k, v in state.items() if k.endswith("random_state") and isinstance(v, int)}
    return next(iter(seeds.values()), None)


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy scalars as Python, non-finite floats and
    anything else unknown as text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    return repr(value)
