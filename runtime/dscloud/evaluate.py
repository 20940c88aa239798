"""Live metrics from outcomes: join scored rows with the labels observed later, by key.

"Performance dipped" is only a fact once predictions meet outcomes. :func:`evaluate` joins
the rows a model scored (:class:`Scored`, e.g. a batch run's output) with the observed
labels (:class:`Outcomes`) on a key and computes the metrics the envelope records offline,
under the same names: ``auc``, ``accuracy`` and ``log_loss`` for a classifier, ``rmse``
and ``mae`` for a regressor. The result says how many rows matched, how many on either
side did not, how many labels could not be used (null, or not one of the model's classes)
and the time window the matched rows cover; :meth:`Archive.record_evaluation
<dscloud.archive.Archive.record_evaluation>` keeps it as an audited record of the version.

Decisions where the question is open:

- keys are compared as text (``123`` matches ``"123"``; an integral float ``123.0`` is
  written ``123``), because labels often arrive as CSV while predictions come from Parquet;
- a key that occurs twice on one side makes the join ambiguous and is refused
  (:class:`DataError`, naming the key), rather than picking one row silently;
- labels are matched to classes as text, the same way;
- AUC needs both outcomes present: with a single class observed it is left out (and said
  so in ``notes``); a multi-class AUC is the one-vs-rest macro average;
- log loss clips probabilities to ``[eps, 1 - eps]`` with float64's eps, as scikit-learn.

Files are read by the adapters (the batch reader for Parquet/CSV); this module takes arrays
and plain sequences, so the core stays free of pyarrow and pandas.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dscloud.errors import DataError

__all__ = ["Evaluation", "Outcomes", "Scored", "evaluate", "roc_auc"]

Array = npt.NDArray[Any]

#: The prediction columns of a batch run's output (``dscloud.batch.writer``).
LABEL_COLUMN = "label"
PROBABILITY_PREFIX = "probability_"
VALUE_COLUMN = "value"
MAX_NOTES = 5


@dataclass(frozen=True)
class Scored:
    """Rows a model scored: one key per row and its outputs (``probabilities`` is
    ``[n, classes]``, ordered as ``classes``). ``times`` (ISO text or datetime64) are when
    each row was scored, if known."""

    keys: Sequence[Any] | Array
    label: Sequence[Any] | Array | None = None
    probabilities: Array | None = None
    value: Sequence[Any] | Array | None = None
    classes: tuple[Any, ...] | None = None
    times: Sequence[Any] | Array | None = None

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Any] | Array],
        *,
        key: str,
        classes: Sequence[Any] | None = None,
        time: str | None = None,
    ) -> Scored:
        """Read a batch run's output columns: ``key``, ``label``, ``probability_<class>``
        per class (in ``classes`` order, else as found), ``value``.

        Raises :class:`DataError` when the key column or every prediction column is absent.
        """
        if key not in columns:
            raise DataError(f"predictions: no key column {key!r}; columns: {sorted(columns)}")
        names = [c for c in columns if c.startswith(PROBABILITY_PREFIX)]
        if classes is not None:
            wanted = [f"{PROBABILITY_PREFIX}{c}" for c in classes]
            names = wanted if all(w in columns for w in wanted) else []
        probs = (
            np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names])
            if names
            else None
        )
        found = tuple(n[len(PROBABILITY_PREFIX) :] for n in names) if classes is None else None
        scored = cls(
            keys=columns[key],
            label=columns.get(LABEL_COLUMN),
            probabilities=probs,
            value=columns.get(VALUE_COLUMN),
            classes=tuple(classes) if classes is not None else found,
            times=columns.get(time) if time else None,
        )
        if scored.label is None and scored.probabilities is None and scored.value is None:
            raise DataError(
                f"predictions: none of {LABEL_COLUMN!r}, {PROBABILITY_PREFIX}<class> or "
                f"{VALUE_COLUMN!r} among columns {sorted(columns)}"
            )
        return scored


@dataclass(frozen=True)
class Outcomes:
    """Observed labels by key; ``times`` (ISO text or datetime64) when each was observed."""

    keys: Sequence[Any] | Array
    labels: Sequence[Any] | Array
    times: Sequence[Any] | Array | None = None


@dataclass(frozen=True)
class Evaluation:
    """Live metrics of one model version on matched rows, with the counts behind them."""

    kind: str  # "classifier" or "regressor"
    metrics: dict[str, float]
    rows: dict[str, int]
    window: dict[str, str] | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metrics": self.metrics,
            "rows": self.rows,
            "window": self.window,
            "notes": self.notes,
        }


def evaluate(
    scored: Scored, outcomes: Outcomes, *, window: tuple[str, str] | None = None
) -> Evaluation:
    """Join ``scored`` and ``outcomes`` on their keys and compute live metrics.

    ``window`` (start, end) overrides the window taken from the times of matched rows
    (outcome times first, then scoring times). Returns an :class:`Evaluation`. Raises
    :class:`DataError` when a key repeats on either side, lengths disagree, or no row
    matched.
    """
    p_keys = _keys(scored.keys, "predictions")
    l_keys = _keys(outcomes.keys, "labels")
    if len(outcomes.labels) != len(l_keys):
        raise DataError(f"labels: {len(outcomes.labels)} labels for {len(l_keys)} keys")
    _, pi, li = np.intersect1d(p_keys, l_keys, assume_unique=True, return_indices=True)
    rows = {
        "predictions": len(p_keys),
        "labels": len(l_keys),
        "matched": len(pi),
        "unmatched_predictions": len(p_keys) - len(pi),
        "unmatched_labels": len(l_keys) - len(pi),
    }
    if len(pi) == 0:
        raise DataError(
            f"no key matched between {len(p_keys)} predictions and {len(l_keys)} labels "
            f"(e.g. {p_keys[:3].tolist()} vs {l_keys[:3].tolist()}); check --key"
        )
    labels = _take(outcomes.labels, li)
    notes: list[str] = []
    if scored.value is not None:
        kind = "regressor"
        metrics, usable = _regression(_take(scored.value, pi), labels, l_keys[li], notes)
    else:
        kind = "classifier"
        metrics, usable = _classification(scored, pi, labels, l_keys[li], notes)
    rows["used"] = int(np.count_nonzero(usable))
    rows["unusable_labels"] = len(pi) - rows["used"]
    times = outcomes.times if outcomes.times is not None else scored.times
    index = li if outcomes.times is not None else pi
    span = (
        {"start": window[0], "end": window[1]}
        if window is not None
        else _window(times, index[usable])
        if times is not None
        else None
    )
    return Evaluation(kind=kind, metrics=metrics, rows=rows, window=span, notes=notes[:MAX_NOTES])


# -- joining ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A key or label as text: ``1.0`` -> ``"1"``, ``np.int64(3)`` -> ``"3"``."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _keys(values: Sequence[Any] | Array, side: str) -> Array:
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    keys = np.asarray([_text(v) for v in items], dtype=object)
    counts = Counter(keys.tolist())
    repeated = [k for k, n in counts.items() if n > 1]
    if repeated:
        raise DataError(
            f"{side}: key {repeated[0]!r} occurs {counts[repeated[0]]} times "
            f"({len(repeated)} keys repeat); the join needs one row per key"
        )
    return keys


def _take(values: Sequence[Any] | Array, index: Array) -> list[Any]:
    items = values.tolist() if isinstance(values, np.ndarray) else values
    return [items[i] for i in index.tolist()]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# -- metrics ----------------------------------------------------------------------------------


def _regression(
    predicted: list[Any], labels: list[Any], keys: Array, notes: list[str]
) -> tuple[dict[str, float], Array]:
    usable = np.array(
        [
            not _missing(y) and isinstance(y, int | float) and not isinstance(y, bool)
            for y in labels
        ],
        dtype=bool,
    )
    for i in np.flatnonzero(~usable)[:MAX_NOTES].tolist():
        notes.append(f"key {keys[i]!r}: label {labels[i]!r} is not a number")
    y = np.asarray([labels[i] for i in np.flatnonzero(usable)], dtype=np.float64)
    p = np.asarray([predicted[i] for i in np.flatnonzero(usable)], dtype=np.float64)
    if len(y) == 0:
        return {}, usable
    err = p - y
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}, usable


def _classification(
    scored: Scored, pi: Array, labels: list[Any], keys: Array, notes: list[str]
) -> tuple[dict[str, float], Array]:
    probs = scored.probabilities[pi] if scored.probabilities is not None else None
    classes = scored.classes
    if classes is None and probs is not None:
        classes = tuple(range(probs.shape[1]))
    if classes is not None:
        names = [_text(c) for c in classes]
        index = {c: i for i, c in enumerate(names)}
    else:  # a label output alone: the classes are whatever was predicted or observed
        label = scored.label if scored.label is not None else []
        seen = {_text(v) for v in _take(label, pi)} | {_text(y) for y in labels if not _missing(y)}
        names = sorted(seen)
        index = {c: i for i, c in enumerate(names)}
    y = np.asarray([index.get(_text(v), -1) if not _missing(v) else -1 for v in labels])
    usable = y >= 0
    for i in np.flatnonzero(~usable)[:MAX_NOTES].tolist():
        notes.append(f"key {keys[i]!r}: label {labels[i]!r} is not one of the classes {names}")
    y = y[usable]
    if len(y) == 0:
        return {}, usable
    if scored.label is not None:
        predicted = np.asarray([index.get(_text(v), -1) for v in _take(scored.label, pi)])[usable]
    else:
        assert probs is not None
        predicted = np.argmax(probs[usable], axis=1)
    metrics = {"accuracy": float(np.mean(predicted == y))}
    if probs is not None:
        p = probs[usable].astype(np.float64)
        metrics["log_loss"] = _log_loss(y, p)
        present = np.unique(y)
        if len(present) < 2:
            notes.append(f"only class {names[int(present[0])]!r} observed: AUC is undefined")
        elif p.shape[1] == 2:
            metrics["auc"] = roc_auc(y == 1, p[:, 1])
        elif len(present) == p.shape[1]:
            metrics["auc"] = float(np.mean([roc_auc(y == j, p[:, j]) for j in range(p.shape[1])]))
        else:
            notes.append("not every class observed: the one-vs-rest AUC is undefined")
    return metrics, usable


def roc_auc(positive: Array, score: Array) -> float:
    """Area under the ROC curve: the chance a positive outscores a negative (ties count
    half), from average ranks. Needs both classes present; returns a float in [0, 1]."""
    positive = np.asarray(positive, dtype=bool)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based average rank of each tie group
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _log_loss(y: Array, probs: Array) -> float:
    eps = float(np.finfo(np.float64).eps)
    p = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def _window(times: Sequence[Any] | Array, index: Array) -> dict[str, str] | None:
    if len(index) == 0:
        return None
    picked = _take(times, index)
    try:
        stamps = np.asarray(
            [str(t).removesuffix("Z").removesuffix("+00:00") for t in picked if not _missing(t)],
            dtype="datetime64[us]",
        )
    except ValueError as exc:
        raise DataError(f"times: expected ISO 8601 timestamps in UTC ({exc})") from exc
    if len(stamps) == 0:
        return None
    # To the second: a window says which days or hours the outcomes cover.
    return {
        "start": np.datetime_as_string(stamps.min(), unit="s") + "Z",
        "end": np.datetime_as_string(stamps.max(), unit="s") + "Z",
    }
