"""The bundled example: a deterministic synthetic churn data set and its pipeline.

No download: rows come from a seeded generator, so ``seed`` alone fixes the data set and
every run, test and benchmark sees the same rows. Columns: ``user_id`` (key), five numeric
features (``age`` has missing values), three categorical ones, and the label ``churned``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CATEGORICAL",
    "FEATURES",
    "KEY",
    "LABEL",
    "NUMERIC",
    "TrainedExample",
    "churn_data",
    "train",
]

KEY = "user_id"
LABEL = "churned"
NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "age", "data_gb"]
CATEGORICAL = ["plan", "region", "payment_method"]
FEATURES = NUMERIC + CATEGORICAL
PLANS = ["basic", "standard", "premium"]
REGIONS = ["north", "south", "east", "west"]
PAYMENTS = ["card", "bank", "invoice"]


def churn_data(rows: int, *, seed: int = 0, start_id: int = 0) -> pd.DataFrame:
    """``rows`` users with features and a ``churned`` label drawn from a known model."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, rows).astype(np.float64)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    monthly = np.round(
        rng.normal(30, 8, rows) + (plan == "standard") * 20 + (plan == "premium") * 45, 2
    )
    calls = rng.poisson(1.5, rows).astype(np.float64)
    age = np.round(rng.normal(42, 12, rows).clip(18, 90))
    age[rng.random(rows) < 0.05] = np.nan
    data_gb = np.round(rng.gamma(2.0, 5.0, rows), 2)
    region = rng.choice(REGIONS, rows)
    payment = rng.choice(PAYMENTS, rows, p=[0.6, 0.3, 0.1])
    logit = (
        -1.0
        - 0.04 * tenure
        + 0.02 * (monthly - 50)
        + 0.45 * calls
        + 0.8 * (payment == "invoice")
        - 0.3 * (region == "north")
        - 0.01 * np.nan_to_num(age - 42)
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(
        {
            KEY: [f"u{start_id + i:08d}" for i in range(rows)],
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "support_calls": calls,
            "age": age,
            "data_gb": data_gb,
            "plan": plan,
            "region": region,
            "payment_method": payment,
            LABEL: churned,
        }
    )


def pipeline(*, C: float = 1.0, seed: int = 0) -> Any:
    """The example pipeline: impute and scale numbers, one-hot strings, logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    features = ColumnTransformer(
        [
            ("num", numeric, NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    return Pipeline(
        [
            ("features", features),
            ("model", LogisticRegression(C=C, max_iter=500, random_state=seed)),
        ]
    )


@dataclass
class TrainedExample:
    estimator: Any
    X_train: pd.DataFrame
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    metrics: dict[str, float]
    params: dict[str, Any]
    seconds: float


def train(
    data: pd.DataFrame | None = None, *, seed: int = 0, rows: int = 5000, C: float = 1.0
) -> TrainedExample:
    """Fit the example pipeline on ``data`` (default: ``rows`` generated with ``seed``)."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    frame = data if data is not None else churn_data(rows, seed=seed)
    cut = int(len(frame) * 0.8)
    X, y = frame[FEATURES], frame[LABEL]
    X_train, X_test, y_train, y_test = X.iloc[:cut], X.iloc[cut:], y.iloc[:cut], y.iloc[cut:]
    est = pipeline(C=C, seed=seed)
    started = time.perf_counter()
    est.fit(X_train, y_train)
    seconds = time.perf_counter() - started
    proba = est.predict_proba(X_test)[:, 1]
    metrics = {
        "auc": float(roc_auc_score(y_test, proba)),
        "accuracy": float(accuracy_score(y_test, est.predict(X_test))),
        "log_loss": float(log_loss(y_test, proba)),
    }
    params = {"C": C, "seed": seed, "rows": len(frame), "model": "LogisticRegression"}
    return TrainedExample(est, X_train, y_train, X_test, y_test, metrics, params, seconds)
