"""One drift computation for every runtime: count rows into the baseline's bins, then compare.

Every runtime counts the rows it scores into the bins of the envelope's baseline
(:mod:`dscloud.baseline`) with :class:`DriftCounts`, and every figure is computed from those
counts by :meth:`DriftCounts.report`. Counts merge by addition, so the shards of a batch
job, the windows of a server and the batches of a stream all give the figure one pass over
the same rows would give, and memory stays bounded: a few integers per bin.

The figures, per feature and for the prediction:

- **PSI**, the population stability index ``sum((c - b) * ln(c / b))`` over the bins, where
  ``b`` and ``c`` are the baseline and current shares of all rows (value bins and a missing
  bin). An empty bin has no logarithm, so both shares are floored at
  :data:`PSI_EPSILON` (1e-4, i.e. 0.01%): a bin that held nothing in training and holds
  1% of rows now adds about 0.046. The usual reading, stated in every report:
  below 0.1 *stable*, 0.1 to 0.25 *moderate*, above 0.25 *major*.
- **missing-rate change**: current minus training share of nulls/NaN;
- **out of range** (numeric): share of present values below the training minimum or above
  its maximum;
- **unseen** (categorical): share of present values that never occurred in training (None
  when the training data had too many categories to list).

Features are ranked by PSI, highest first.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from dscloud.baseline import (
    Baseline,
    Bins,
    CategoricalBins,
    NumericBins,
    category_counts,
    numeric_values,
    prediction_values,
)
from dscloud.errors import DataError, SchemaError
from dscloud.schema import Column

__all__ = [
    "COUNTS_VERSION",
    "MAJOR_ABOVE",
    "PSI_EPSILON",
    "STABLE_BELOW",
    "DriftCounts",
    "DriftReport",
    "FeatureDrift",
    "RollingCounts",
    "Tally",
    "psi",
    "reading",
]

Array = npt.NDArray[Any]

COUNTS_VERSION = 1
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
class Tally:
    """A categorical column already counted by value: ``counts`` of each present value
    (as text) and the number of ``missing`` ones.

    The batch adapter counts a string column with Arrow's ``value_counts`` (C++, a few ns
    a row) and hands the tally over; counting Python strings here costs far more.
    """

    counts: Mapping[str, int]
    missing: int = 0

    def __len__(self) -> int:
        return sum(self.counts.values()) + self.missing

    @classmethod
    def of(cls, values: Sequence[Any] | Array) -> Tally:
        """Count ``values`` (None and NaN are missing; other values count as their text)."""
        counts, missing = category_counts(values)
        return cls(counts=counts, missing=missing)

    @classmethod
    def from_codes(cls, codes: Array, categories: Sequence[Any]) -> Tally:
        """Count dictionary-encoded values: ``codes`` index ``categories``, below 0 is
        missing. A Parquet string column read as a dictionary counts this way in about a
        nanosecond a row (one ``bincount``), without touching a string per row."""
        counted = np.bincount(np.asarray(codes, dtype=np.int64) + 1, minlength=len(categories) + 1)
        counts: dict[str, int] = {}
        for category, n in zip(categories, counted[1:].tolist(), strict=False):
            if n:
                key = str(category)
                counts[key] = counts.get(key, 0) + n
        return cls(counts=counts, missing=int(counted[0]))

    @classmethod
    def combine(cls, tallies: Iterable[Tally]) -> Tally:
        counts: dict[str, int] = {}
        missing = 0
        for tally in tallies:
            for value, n in tally.counts.items():
                counts[value] = counts.get(value, 0) + n
            missing += tally.missing
        return cls(counts=counts, missing=missing)


#: What a column may be: raw values (a list or numpy array), or a categorical tally.
Column_ = Union[Sequence[Any], Array, Tally]  # noqa: UP007 (a runtime alias)


class DriftCounts:
    """Rows counted into a baseline's bins. Add rows or other counts; report any time.

    Per feature: one count per bin, then the count of missing values; per categorical
    feature also the count of unseen values. Not thread-safe: give each thread its own, or
    use :class:`RollingCounts`.
    """

    def __init__(self, baseline: Baseline) -> None:
        self.baseline = baseline
        self.rows = 0
        self.features: dict[str, Array] = {
            name: np.zeros(bins.n_bins + 1, dtype=np.int64)
            for name, bins in baseline.features.items()
        }
        self.unseen: dict[str, int] = {
            name: 0 for name, bins in baseline.features.items() if isinstance(bins, CategoricalBins)
        }
        pred = baseline.prediction
        self.prediction: Array | None = (
            np.zeros(pred.n_bins + 1, dtype=np.int64) if pred is not None else None
        )
        self._columns = {
            name: Column(name=name, dtype=bins.dtype, nullable=True)
            for name, bins in baseline.features.items()
            if isinstance(bins, NumericBins)
        }
        self._known = {
            name: frozenset(bins.categories) | frozenset(bins.seen)
            for name, bins in baseline.features.items()
            if isinstance(bins, CategoricalBins) and bins.seen is not None
        }
        self._index = {
            name: {c: i for i, c in enumerate(bins.categories)}
            for name, bins in baseline.features.items()
            if isinstance(bins, CategoricalBins)
        }

    # -- adding ---------------------------------------------------------------------------

    def add(self, columns: Mapping[str, Column_], predictions: Any = None) -> None:
        """Count rows given as columns (name -> the raw input values, or a :class:`Tally`
        for a categorical feature already counted by value).

        ``predictions`` (a :class:`~dscloud.scorer.Predictions` for exactly these rows) adds
        the model's outputs. Raises :class:`SchemaError` when a baseline feature is absent,
        columns differ in length, or a numeric column holds a value that is no number.
        """
        n = self._check(columns, predictions)
        self._count(columns, self._prediction_values(predictions), n)

    def add_scored(self, columns: Mapping[str, Column_], predictions: Any) -> None:
        """Count the rows a scorer accepted: ``predictions.rows`` picks them out of ``columns``.

        Rejected rows are not counted (they are reported as rejects, with their reason), so
        the feature counts and the prediction counts cover the same rows. A :class:`Tally`
        must already hold only the accepted rows.
        """
        self.add(_pick(columns, self.baseline.features, predictions.rows), predictions)

    def _check(self, columns: Mapping[str, Column_], predictions: Any) -> int:
        """The number of rows in ``columns``; raises :class:`SchemaError` if they are unfit."""
        # The common case in a few set operations: a server calls this once per request.
        try:
            lengths = {len(columns[name]) for name in self.baseline.features}
        except KeyError:
            lengths = set()
        if (
            len(lengths) == 1
            and (predictions is None or len(predictions) in lengths)
            and not any(type(columns[name]) is Tally for name in self._columns)
        ):
            return lengths.pop()
        n: int | None = None
        for name, bins in self.baseline.features.items():
            if name not in columns:
                raise SchemaError(
                    f"drift: column {name!r} is missing; the baseline has "
                    f"{sorted(self.baseline.features)}",
                    field=name,
                )
            values = columns[name]
            if isinstance(values, Tally) and isinstance(bins, NumericBins):
                raise SchemaError(
                    f"drift: column {name!r} is numeric; a tally counts categories", field=name
                )
            if n is None:
                n = len(values)
            elif len(values) != n:
                raise SchemaError(
                    f"drift: column {name!r} has {len(values)} values, expected {n}", field=name
                )
        if predictions is not None:
            if n is not None and len(predictions) != n:
                raise SchemaError(
                    f"drift: {len(predictions)} predictions for {n} rows", field="predictions"
                )
            n = len(predictions)
        return n or 0

    def _prediction_values(self, predictions: Any) -> Sequence[Any] | Array | None:
        if predictions is None or self.prediction is None or len(predictions) == 0:
            return None
        return prediction_values(predictions, self.baseline.classes)[2]

    def _count(
        self, columns: Mapping[str, Column_], predicted: Sequence[Any] | Array | None, n: int
    ) -> None:
        for name, bins in self.baseline.features.items():
            values = columns[name]
            if isinstance(bins, NumericBins):
                assert not isinstance(values, Tally)
                _add_numeric(self.features[name], bins, numeric_values(self._columns[name], values))
            else:
                tally = values if isinstance(values, Tally) else Tally.of(values)
                self.unseen[name] += _add_categorical(
                    self.features[name], bins, tally, self._index[name], self._known.get(name)
                )
        pred = self.baseline.prediction
        if predicted is not None and pred is not None and self.prediction is not None:
            if isinstance(pred, NumericBins):
                _add_numeric(self.prediction, pred, np.asarray(predicted, dtype=np.float64))
            else:
                index = {c: i for i, c in enumerate(pred.categories)}
                _add_categorical(self.prediction, pred, Tally.of(predicted), index, None)
        self.rows += n

    # -- merging --------------------------------------------------------------------------

    def merge(self, other: DriftCounts) -> DriftCounts:
        """Add ``other``'s counts to these (in place); returns self.

        Raises :class:`DataError` when ``other`` was counted against another baseline.
        """
        if other.baseline is not self.baseline and other.baseline.digest != self.baseline.digest:
            raise DataError(
                "drift counts from different baselines cannot be merged: they were counted "
                "for different model versions"
            )
        self.rows += other.rows
        for name, counts in other.features.items():
            self.features[name] += counts
        for name, n in other.unseen.items():
            self.unseen[name] += n
        if self.prediction is not None and other.prediction is not None:
            self.prediction += other.prediction
        return self

    def __add__(self, other: DriftCounts) -> DriftCounts:
        return DriftCounts(self.baseline).merge(self).merge(other)

    # -- serialisation --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts, e.g. for a batch shard manifest."""
        return {
            "version": COUNTS_VERSION,
            "baseline": self.baseline.digest,
            "rows": self.rows,
            "features": {
                name: {"counts": counts[:-1].tolist(), "missing": int(counts[-1])}
                | ({"unseen": self.unseen[name]} if name in self.unseen else {})
                for name, counts in self.features.items()
            },
            "prediction": (
                {"counts": self.prediction[:-1].tolist(), "missing": int(self.prediction[-1])}
                if self.prediction is not None
                else None
            ),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], baseline: Baseline) -> DriftCounts:
        """Counts written by :meth:`to_dict`. Raises :class:`DataError` when they do not
        fit ``baseline`` (another version, or a malformed document), naming what differs."""
        if data.get("version") != COUNTS_VERSION:
            raise DataError(
                f"drift counts: version {data.get('version')!r} is not {COUNTS_VERSION}"
            )
        if data.get("baseline") != baseline.digest:
            raise DataError(
                f"drift counts were made against baseline {data.get('baseline')}, not "
                f"{baseline.digest}: they belong to another model version"
            )
        out = cls(baseline)
        try:
            out.rows = int(data["rows"])
            for name, counts in out.features.items():
                item = data["features"][name]
                counts[:] = [*item["counts"], item["missing"]]
                if name in out.unseen:
                    out.unseen[name] = int(item["unseen"])
            if out.prediction is not None:
                item = data["prediction"]
                out.prediction[:] = [*item["counts"], item["missing"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"drift counts: missing or malformed {exc}") from exc
        return out

    @classmethod
    def from_json(cls, raw: str | bytes, baseline: Baseline) -> DriftCounts:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"drift counts: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DataError("drift counts: expected a JSON object")
        return cls.from_dict(data, baseline)

    # -- the report -----------------------------------------------------------------------

    def report(self) -> DriftReport:
        """The drift figures of everything counted so far, features ranked by PSI."""
        features = [
            _figures(name, bins, self.features[name], self.unseen.get(name))
            for name, bins in self.baseline.features.items()
        ]
        features.sort(key=lambda f: (-f.psi if f.psi is not None else math.inf, f.name))
        pred = self.baseline.prediction
        prediction = (
            _figures(PREDICTION, pred, self.prediction, None, self.baseline.prediction_source)
            if pred is not None and self.prediction is not None
            else None
        )
        return DriftReport(
            rows=self.rows,
            baseline_rows=self.baseline.rows,
            features=tuple(features),
            prediction=prediction,
            prediction_source=self.baseline.prediction_source,
        )


def _add_numeric(counts: Array, bins: NumericBins, values: Array) -> None:
    """Count ``values`` (NaN: missing) into ``counts`` (bins, then missing)."""
    bin_counts, n_missing = bins.count(values)
    counts[:-1] += bin_counts
    counts[-1] += n_missing


def _add_categorical(
    counts: Array,
    bins: CategoricalBins,
    tally: Tally,
    index: Mapping[str, int],
    known: frozenset[str] | None,
) -> int:
    """Count ``tally`` into ``counts`` (categories, other, missing); returns how many
    present values are not in ``known`` (0 when the training categories are not known)."""
    other = len(bins.categories)
    unseen = 0
    for value, n in tally.counts.items():
        counts[index.get(value, other)] += n
        if known is not None and value not in known:
            unseen += n
    counts[-1] += tally.missing
    return unseen


def _pick(
    columns: Mapping[str, Column_], names: Iterable[str], rows: Array
) -> Mapping[str, Column_]:
    """The ``rows`` of each named column (absent columns stay absent)."""
    for name in names:
        values = columns.get(name)
        if values is not None and not isinstance(values, Tally) and len(values) == len(rows):
            return columns  # every row scored: nothing to pick
        break
    picked: dict[str, Column_] = {}
    for name in names:
        values = columns.get(name)
        if values is None or isinstance(values, Tally) or len(values) == len(rows):
            if values is not None:
                picked[name] = values
        elif isinstance(values, np.ndarray):
            picked[name] = values[rows]
        else:
            picked[name] = [values[i] for i in rows.tolist()]
    return picked


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


def _figures(
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


class RollingCounts:
    """Counts over the last ``window`` seconds, kept as ``slices`` sub-windows: a server's
    per-version drift. Old slices drop off whole, so the window is ``window`` seconds to
    within one slice. Thread-safe; ``clock`` is injectable for tests.

    Counting one row costs far more per row than counting a thousand (numpy and dict work
    per column per call), and a server scores one row per request. So :meth:`add` only
    checks the rows and keeps them, and they are counted together once ``flush_rows`` are
    waiting, when the slice ends, or when :meth:`total` is asked: the figures are those
    of counting every row, at a fraction of the cost per request. Memory is bounded by
    ``flush_rows`` rows plus the counts.
    """

    def __init__(
        self,
        baseline: Baseline,
        *,
        window: float,
        slices: int = 6,
        flush_rows: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or slices < 1 or flush_rows < 1:
            raise SchemaError(
                f"drift window {window}s in {slices} slices, flushing every {flush_rows} rows: "
                "expected all three positive"
            )
        self.baseline = baseline
        self.slice_seconds = window / slices
        self.slices = slices
        self.flush_rows = flush_rows
        self.clock = clock
        self._lock = threading.Lock()
        self._slices: deque[tuple[int, DriftCounts]] = deque()
        # Waiting rows: (columns, predictions) as given to add_scored, or (columns, None, n,
        # prediction values) from add.
        self._pending: list[tuple[Mapping[str, Column_], Any, int, Any]] = []
        self._pending_rows = 0

    def _current(self) -> DriftCounts:
        key = math.floor(self.clock() / self.slice_seconds)
        if not self._slices or self._slices[-1][0] != key:
            self._flush()  # waiting rows belong to the slice they arrived in
            self._slices.append((key, DriftCounts(self.baseline)))
        while self._slices[0][0] <= key - self.slices:
            self._slices.popleft()
        return self._slices[-1][1]

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        counts = self._slices[-1][1]
        names = self.baseline.features
        first = next(iter(names), None)
        picked = [
            cols
            if preds is None or first is None or len(cols[first]) == n_rows
            else _pick(cols, names, preds.rows)
            for cols, preds, n_rows, _ in pending
        ]
        columns = {name: _concat([cols[name] for cols in picked]) for name in names}
        n = sum(p[2] for p in pending)
        if all(p[1] is not None for p in pending):
            predicted = counts._prediction_values(_Outputs.concat([p[1] for p in pending]))
        elif all(p[3] is not None for p in pending):
            predicted = _concat([p[3] for p in pending])  # type: ignore[assignment]
        else:
            predicted = None
        counts._count(columns, predicted, n)

    def add(self, columns: Mapping[str, Column_], predictions: Any = None) -> None:
        """:meth:`DriftCounts.add` into the current slice (counted at the next flush)."""
        with self._lock:
            counts = self._current()
            n = counts._check(columns, predictions)
            self._pending.append((columns, None, n, counts._prediction_values(predictions)))
            self._add_rows(n)

    def add_scored(self, columns: Mapping[str, Column_], predictions: Any) -> None:
        """:meth:`DriftCounts.add_scored` into the current slice (counted at the next flush).

        Nothing is checked here: the scorer accepted these rows from these columns, so
        every feature is present; picking and counting wait for the flush. This is the
        server's per-request cost: a lock and an append.
        """
        with self._lock:
            self._current()
            self._pending.append((columns, predictions, len(predictions), None))
            self._add_rows(len(predictions))

    def _add_rows(self, n: int) -> None:
        self._pending_rows += n
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def total(self) -> DriftCounts:
        """The sum of the slices still inside the window (a new object)."""
        with self._lock:
            self._current()
            self._flush()
            out = DriftCounts(self.baseline)
            for _, counts in self._slices:
                out.merge(counts)
            return out


@dataclass(frozen=True)
class _Outputs:
    """The outputs of several scorer calls end to end: what :func:`prediction_values`
    reads from a :class:`~dscloud.scorer.Predictions`."""

    label: Array | None
    probabilities: Array | None
    value: Array | None

    def __len__(self) -> int:
        first = next(a for a in (self.label, self.probabilities, self.value) if a is not None)
        return len(first)

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> _Outputs:
        def join(kind: str) -> Array | None:
            arrays = [getattr(p, kind) for p in parts]
            if any(a is None for a in arrays):
                return None
            return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

        return cls(label=join("label"), probabilities=join("probabilities"), value=join("value"))


def _concat(parts: Sequence[Column_]) -> Column_:
    """One column from the parts of several calls: a tally if any part is one, else one
    array (all numpy) or one list."""
    if len(parts) == 1:
        return parts[0]
    kinds = set(map(type, parts))
    if kinds == {list}:
        return list(itertools.chain.from_iterable(parts))  # type: ignore[arg-type]
    if Tally in kinds:
        return Tally.combine(p if isinstance(p, Tally) else Tally.of(p) for p in parts)
    if kinds == {np.ndarray}:
        return np.concatenate(parts)  # type: ignore[arg-type]
    return list(
        itertools.chain.from_iterable(
            p.tolist() if isinstance(p, np.ndarray) else p  # type: ignore[misc]
            for p in parts
        )
    )
