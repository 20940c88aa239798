"""The training baseline stored in the envelope (``data.baseline``), and how a row is binned.

Drift is only as good as what it compares against. At packaging, each feature of the
training data is summarised as a distribution that later data can be counted into:

- a numeric feature: bin edges at the training quantiles (``bins`` of them, 10 by default;
  repeated edges are dropped, so a feature with few distinct values gets fewer bins), plus
  a *below-min* and an *above-max* bin that hold no training rows at all, so that values
  outside the training range are seen rather than folded into the end bins;
- a categorical feature: the shares of its most frequent categories, plus *other* (every
  other category seen in training). The remaining categories seen in training are listed
  (up to :data:`MAX_SEEN`), so that a value never seen in training can be told from a rare
  one;
- every feature: its missing rate (null or NaN);
- the prediction: the distribution of the model's own outputs on the rows it was checked
  on, as the positive-class probability of a binary classifier, the predicted class of a
  multi-class one, or the value of a regressor.

Shares of value bins are over the non-missing rows (they sum to 1); ``missing`` is over all
rows. The shape is JSON, versioned (``"version": 1``) and optional: an envelope without
``data.baseline`` keeps loading and scoring, it only cannot report drift.

Bins hold values *as the model sees them*: a ``float32`` column is rounded to float32
before it is binned, at packaging and at runtime alike, so a value that arrives as JSON,
Parquet or CSV lands in the same bin in every runtime. Bins are ``[lo, hi)`` except the
last, which includes the training maximum.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dscloud.errors import EnvelopeError, SchemaError
from dscloud.schema import Column, Schema

__all__ = [
    "BASELINE_VERSION",
    "MAX_SEEN",
    "Baseline",
    "CategoricalBins",
    "NumericBins",
    "Outputs",
    "build_baseline",
    "prediction_values",
]

Array = npt.NDArray[Any]


class Outputs(Protocol):
    """What a baseline reads from model outputs: a :class:`~dscloud.scorer.Predictions`,
    or several of them end to end."""

    @property
    def label(self) -> Array | None: ...
    @property
    def probabilities(self) -> Array | None: ...
    @property
    def value(self) -> Array | None: ...
    def __len__(self) -> int: ...


BASELINE_VERSION = 1
#: Categories of a feature that get their own bin; the rest share the *other* bin.
TOP_CATEGORIES = 20
#: Training categories listed beyond the top ones, so that "unseen" can be told from "rare".
MAX_SEEN = 1000
OTHER = "(other)"


@dataclass(frozen=True)
class NumericBins:
    """Quantile bins of one numeric distribution: ``edges`` ascending, no repeats.

    Bin 0 is below ``edges[0]``, bins ``1..k`` are the interior bins, bin ``k+1`` is above
    ``edges[-1]``; ``k`` is ``len(edges) - 1`` (or 1 when all training values were equal).
    """

    edges: tuple[float, ...]
    shares: tuple[float, ...]  # one per bin, over non-missing rows
    missing: float
    dtype: str = "float64"

    kind = "numeric"

    @property
    def n_bins(self) -> int:
        return max(len(self.edges) - 1, 1) + 2

    def labels(self) -> list[str]:
        """One human label per bin, e.g. ``"< 1"``, ``"[1, 3)"``, ``"[70, 71]"``, ``"> 71"``."""
        e = [_short(x) for x in self.edges]
        if len(e) == 1:
            inner = [f"= {e[0]}"]
        else:
            inner = [f"[{a}, {b})" for a, b in itertools.pairwise(e[:-1])]
            inner.append(f"[{e[-2]}, {e[-1]}]")
        return [f"< {e[0]}", *inner, f"> {e[-1]}"]

    def index(self, values: Array) -> Array:
        """Bin index of each present value (no NaN): the definition :meth:`count` follows."""
        edges = np.asarray(self.edges, dtype=np.float64)
        inner = self.n_bins - 2
        idx = np.searchsorted(edges, values, side="right")
        idx[values == edges[-1]] = inner  # the last interior bin includes the maximum
        idx[values > edges[-1]] = inner + 1
        return idx

    @cached_property
    def _edges(self) -> Array:
        return np.asarray(self.edges, dtype=np.float32 if self.dtype == "float32" else np.float64)

    def count(self, values: Array) -> tuple[Array, int]:
        """Count ``values`` (from :func:`numeric_values`; NaN is missing) into the bins.

        Returns ``(counts per bin, missing)``. One comparison pass per edge, no per-value
        index: with a dozen edges this is several times faster than a binary search per
        value, and it is what every runtime pays per row.
        """
        n_missing = int(np.count_nonzero(np.isnan(values)))
        edges = self._edges
        below = [int(np.count_nonzero(values < e)) for e in edges]
        upto_last = int(np.count_nonzero(values <= edges[-1]))
        inner = [b - a for a, b in itertools.pairwise(below)][:-1] if len(edges) > 1 else []
        inner.append(upto_last - below[-2 if len(edges) > 1 else 0])
        above = len(values) - n_missing - upto_last
        return np.array([below[0], *inner, above], dtype=np.int64), n_missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dtype": self.dtype,
            "edges": list(self.edges),
            "shares": list(self.shares),
            "missing": self.missing,
        }


@dataclass(frozen=True)
class CategoricalBins:
    """Shares of the top ``categories`` and of *other*; ``seen`` lists the rest, when known."""

    categories: tuple[str, ...]
    shares: tuple[float, ...]  # one per category, then other; over non-missing rows
    missing: float
    seen: tuple[str, ...] | None  # training categories beyond the top ones; None: too many

    kind = "categorical"

    @property
    def n_bins(self) -> int:
        return len(self.categories) + 1

    def labels(self) -> list[str]:
        return [*self.categories, OTHER]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "categories": list(self.categories),
            "shares": list(self.shares),
            "missing": self.missing,
            "seen": list(self.seen) if self.seen is not None else None,
        }


Bins = NumericBins | CategoricalBins


@dataclass(frozen=True)
class Baseline:
    """The training distribution of every feature and of the model's output."""

    rows: int
    features: dict[str, Bins]
    prediction: Bins | None
    prediction_source: str | None  # "probability", "label" or "value"
    classes: tuple[Any, ...] | None = None  # of the probabilities output, when it has one
    version: int = BASELINE_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready ``data.baseline`` section."""
        out: dict[str, Any] = {
            "version": self.version,
            "rows": self.rows,
            "features": {name: bins.to_dict() for name, bins in self.features.items()},
            "prediction": None,
        }
        if self.prediction is not None:
            out["prediction"] = {
                "source": self.prediction_source,
                "classes": list(self.classes) if self.classes is not None else None,
                **self.prediction.to_dict(),
            }
        return out

    @cached_property
    def digest(self) -> str:
        """``sha256:...`` of the canonical JSON: counts built on another baseline differ."""
        raw = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return "sha256:" + hashlib.sha256(raw).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        """Read ``data.baseline``; raises :class:`EnvelopeError` naming what is malformed."""
        version = data.get("version")
        if version != BASELINE_VERSION:
            raise EnvelopeError(
                f"data.baseline: version {version!r} is not supported (expected "
                f"{BASELINE_VERSION}); re-package the model with this dscloud"
            )
        try:
            features = {str(k): _bins(v) for k, v in data["features"].items()}
            pred = data.get("prediction")
            return cls(
                rows=int(data["rows"]),
                features=features,
                prediction=_bins(pred) if pred else None,
                prediction_source=str(pred["source"]) if pred else None,
                classes=tuple(pred["classes"]) if pred and pred.get("classes") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EnvelopeError(f"data.baseline: missing or malformed {exc}") from exc

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Baseline | None:
        """The baseline in an envelope's ``data`` section, or None when it has none."""
        section = data.get("baseline")
        return cls.from_dict(section) if isinstance(section, Mapping) else None


def _bins(data: Mapping[str, Any]) -> Bins:
    if data["kind"] == "numeric":
        return NumericBins(
            edges=tuple(float(x) for x in data["edges"]),
            shares=tuple(float(x) for x in data["shares"]),
            missing=float(data["missing"]),
            dtype=str(data.get("dtype", "float64")),
        )
    if data["kind"] == "categorical":
        seen = data.get("seen")
        return CategoricalBins(
            categories=tuple(str(c) for c in data["categories"]),
            shares=tuple(float(x) for x in data["shares"]),
            missing=float(data["missing"]),
            seen=tuple(str(c) for c in seen) if seen is not None else None,
        )
    raise ValueError(f"kind {data['kind']!r}")


# -- building -------------------------------------------------------------------------------


def build_baseline(
    schema: Schema,
    columns: Mapping[str, Sequence[Any] | Array],
    predictions: Outputs | None = None,
    *,
    bins: int = 10,
    top_categories: int = TOP_CATEGORIES,
) -> Baseline:
    """The baseline of training ``columns`` (name -> values) and of the model's outputs.

    ``predictions`` is the :class:`~dscloud.scorer.Predictions` of the model on the rows it
    was checked on (None: no prediction baseline). Returns a :class:`Baseline`; store
    ``baseline.to_dict()`` as the envelope's ``data["baseline"]``. Raises
    :class:`SchemaError` when a schema column is absent from ``columns`` or holds a value
    that is not of its type.
    """
    if bins < 2:
        raise SchemaError(f"bins: expected at least 2 quantile bins, got {bins}", field="bins")
    features: dict[str, Bins] = {}
    rows = 0
    for col in schema.columns:
        if col.name not in columns:
            raise SchemaError(
                f"training data lacks column {col.name!r}; the model expects {schema.names}",
                field=col.name,
            )
        values = columns[col.name]
        rows = len(values)
        if col.numeric:
            features[col.name] = _numeric_bins(numeric_values(col, values), bins, col.dtype)
        else:
            features[col.name] = _categorical_bins(values, top_categories)
    prediction: Bins | None = None
    source = None
    out = schema.output("probabilities")
    classes = out.classes if out is not None else None
    if predictions is not None and len(predictions) > 0:
        source, _, values = prediction_values(predictions, classes)
        if source == "label":
            prediction = _categorical_bins(values, top_categories)
        else:
            prediction = _numeric_bins(np.asarray(values), bins, "float64")
    return Baseline(
        rows=rows,
        features=features,
        prediction=prediction,
        prediction_source=source,
        classes=classes,
    )


def _numeric_bins(values: Array, bins: int, dtype: str) -> NumericBins:
    present = values[~np.isnan(values)]
    missing = 1.0 - len(present) / len(values) if len(values) else 0.0
    finite = present[np.isfinite(present)]
    if len(finite) == 0:
        # Nothing to cut: one edge at 0 keeps the shape valid, and any value is then
        # counted below, at or above it.
        edges = np.zeros(1)
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1), method="linear"))
    # Edges in the column's own precision, so that comparing float32 values is exact.
    edges = np.unique(edges.astype(values.dtype))
    shaped = NumericBins(edges=tuple(float(e) for e in edges), shares=(), missing=missing)
    counts, _ = shaped.count(present)
    return NumericBins(
        edges=shaped.edges,
        shares=_shares(counts),
        missing=missing,
        dtype=dtype,
    )


def _categorical_bins(values: Sequence[Any] | Array, top: int) -> CategoricalBins:
    counts, n_missing = category_counts(values)
    total = sum(counts.values()) + n_missing
    # Most frequent first; ties by name, so the same data always gives the same baseline.
    order = sorted(counts, key=lambda c: (-counts[c], c))
    head, tail = order[:top], order[top:]
    bin_counts = np.array([counts[c] for c in head] + [sum(counts[c] for c in tail)])
    return CategoricalBins(
        categories=tuple(head),
        shares=_shares(bin_counts),
        missing=n_missing / total if total else 0.0,
        seen=tuple(sorted(tail)) if len(tail) <= MAX_SEEN else None,
    )


def _shares(counts: Array) -> tuple[float, ...]:
    total = int(np.sum(counts))
    return tuple(float(c) / total if total else 0.0 for c in counts)


# -- values as the model sees them ----------------------------------------------------------


def numeric_values(col: Column, values: Sequence[Any] | Array) -> Array:
    """``values`` as the model sees them: float32 for a float32 column, else float64; NaN
    for missing. Raises :class:`SchemaError` for a value that is no number.
    """
    items: Sequence[Any]
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        with np.errstate(over="ignore"):
            return values.astype(np.float32 if col.dtype == "float32" else np.float64, copy=False)
    if _NUMBERS.issuperset(map(type, items := _items(values))):
        out = np.asarray(items, dtype=np.float64)  # None becomes NaN
    else:
        out = np.empty(len(items), dtype=np.float64)
        for i, v in enumerate(items):
            if v is None:
                out[i] = math.nan
            elif isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise SchemaError(
                    f"column {col.name!r}: expected {col.describe()}, got {v!r} (row {i})",
                    field=col.name,
                    row=i,
                )
            else:
                out[i] = v
    if col.dtype == "float32":
        with np.errstate(over="ignore"):
            out = out.astype(np.float32)
    return out


def category_counts(values: Sequence[Any] | Array) -> tuple[dict[str, int], int]:
    """Counts of each distinct value as text, and the number of missing values (null, NaN).

    One C-speed pass (``Counter``) over the rows, then work per distinct value only.
    """
    items = values.tolist() if isinstance(values, np.ndarray) else values
    counts: dict[str, int] = {}
    missing = 0
    for v, n in Counter(items).items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            missing += n
        else:
            key = v if type(v) is str else str(v)
            counts[key] = counts.get(key, 0) + n
    return counts, missing


_NUMBERS = frozenset({int, float, type(None), np.float64, np.float32, np.int64})


def _items(values: Sequence[Any] | Array) -> Sequence[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else values


def prediction_values(
    predictions: Outputs, classes: Sequence[Any] | None
) -> tuple[str, Any, Sequence[Any] | Array]:
    """What the prediction baseline holds, from a :class:`~dscloud.scorer.Predictions`.

    ``classes`` are the class names of the probabilities output (None: 0, 1, ...).
    Returns ``(source, positive_class, values)``: ``("probability", classes[1], p)`` for a
    binary classifier with probabilities (float64), ``("label", None, labels)`` for any
    other classifier, ``("value", None, v)`` for a regressor (float64). Raises
    :class:`SchemaError` when the predictions carry no output the baseline can use.
    """
    probs = predictions.probabilities
    if probs is not None and probs.ndim == 2 and probs.shape[1] == 2:
        positive = classes[1] if classes is not None else 1
        return "probability", positive, np.asarray(probs[:, 1], dtype=np.float64)
    if predictions.label is not None:
        return "label", None, predictions.label.tolist()
    if probs is not None:
        names = list(classes) if classes is not None else list(range(probs.shape[1]))
        return "label", None, [names[j] for j in np.argmax(probs, axis=1).tolist()]
    if predictions.value is not None:
        return "value", None, np.asarray(predictions.value, dtype=np.float64).reshape(-1)
    raise SchemaError("the predictions have no label, probabilities or value to compare")


def _short(x: float) -> str:
    return f"{x:.4g}"
