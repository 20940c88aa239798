"""One drift computation for every runtime: count rows into the baseline's bins.

Every runtime counts the rows it scores into the bins of the envelope's baseline
(:mod:`dscloud.baseline`) with :class:`DriftCounts`, and every figure is computed from those
counts by :meth:`DriftCounts.report` (:mod:`dscloud.drift_report` says how to read them).
Counts merge by addition, so the shards of a batch job, the windows of a server
(:mod:`dscloud.drift_window`) and the batches of a stream all give the figures one pass
over the same rows would give, and memory stays bounded: a few integers per bin.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt

from dscloud.baseline import (
    Baseline,
    CategoricalBins,
    NumericBins,
    Outputs,
    category_counts,
    numeric_values,
    prediction_values,
)
from dscloud.drift_report import (
    MAJOR_ABOVE,
    PREDICTION,
    PSI_EPSILON,
    READING,
    STABLE_BELOW,
    DriftReport,
    FeatureDrift,
    figures,
    psi,
    reading,
)
from dscloud.errors import DataError, SchemaError
from dscloud.schema import Column

if TYPE_CHECKING:
    from dscloud.scorer import Predictions

__all__ = [
    "COUNTS_VERSION",
    "MAJOR_ABOVE",
    "PSI_EPSILON",
    "READING",
    "STABLE_BELOW",
    "ColumnValues",
    "DriftCounts",
    "DriftReport",
    "FeatureDrift",
    "Tally",
    "pick",
    "psi",
    "reading",
]

Array = npt.NDArray[Any]

COUNTS_VERSION = 1


#: Up to this many dictionary entries, :meth:`Tally.from_codes` compares instead of bincount
#: (each comparison pass costs about a tenth of a bincount; docs/monitoring.md).
_FEW_CATEGORIES = 16


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
        missing. A Parquet string column read as a dictionary counts this way without
        touching a string per row: a few comparisons of its codes when the dictionary is
        small, else one ``bincount``."""
        codes = np.asarray(codes)
        if len(categories) <= _FEW_CATEGORIES:
            # One vectorised comparison per code (missing, then each category) reads the
            # codes as they are; bincount first widens them to 64 bits and costs 3 to 5
            # times as much for the handful of categories most columns have.
            counted = [int(np.count_nonzero(codes == code)) for code in range(-1, len(categories))]
        else:
            counted = np.bincount(
                codes.astype(np.int64) + 1, minlength=len(categories) + 1
            ).tolist()
        counts: dict[str, int] = {}
        for category, n in zip(categories, counted[1:], strict=False):
            if n:
                key = str(category)
                counts[key] = counts.get(key, 0) + n
        return cls(counts=counts, missing=int(counted[0]))

    @classmethod
    def combine(cls, tallies: Iterable[Tally]) -> Tally:
        """One tally of several (the parts of a column): counts and missing added."""
        counts: dict[str, int] = {}
        missing = 0
        for tally in tallies:
            for value, n in tally.counts.items():
                counts[value] = counts.get(value, 0) + n
            missing += tally.missing
        return cls(counts=counts, missing=missing)


#: What a column may be: raw values (a list or numpy array), or a categorical tally.
ColumnValues = Union[Sequence[Any], Array, Tally]  # noqa: UP007 (a runtime alias)


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

    def add(self, columns: Mapping[str, ColumnValues], predictions: Outputs | None = None) -> None:
        """Count rows given as columns (name -> the raw input values, or a :class:`Tally`
        for a categorical feature already counted by value).

        ``predictions`` (a :class:`~dscloud.scorer.Predictions` for exactly these rows) adds
        the model's outputs. Raises :class:`SchemaError` when a baseline feature is absent,
        columns differ in length, or a numeric column holds a value that is no number.
        """
        n = self._check(columns, predictions)
        self._count(columns, self._prediction_values(predictions), n)

    def add_scored(self, columns: Mapping[str, ColumnValues], predictions: Predictions) -> None:
        """Count the rows a scorer accepted: ``predictions.rows`` picks them out of ``columns``.

        Rejected rows are not counted (they are reported as rejects, with their reason), so
        the feature counts and the prediction counts cover the same rows. A :class:`Tally`
        must already hold only the accepted rows.
        """
        self.add(pick(columns, self.baseline.features, predictions.rows), predictions)

    def _check(self, columns: Mapping[str, ColumnValues], predictions: Outputs | None) -> int:
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

    def _prediction_values(self, predictions: Outputs | None) -> Sequence[Any] | Array | None:
        if predictions is None or self.prediction is None or len(predictions) == 0:
            return None
        return prediction_values(predictions, self.baseline.classes)[2]

    def _count(
        self, columns: Mapping[str, ColumnValues], predicted: Sequence[Any] | Array | None, n: int
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
        """New counts holding both (neither operand changes)."""
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
        """:meth:`to_dict` as compact JSON text."""
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
        """:meth:`from_dict` of JSON text; raises :class:`DataError` for text that is not
        a JSON object of counts for ``baseline``."""
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
            figures(name, bins, self.features[name], self.unseen.get(name))
            for name, bins in self.baseline.features.items()
        ]
        features.sort(key=lambda f: (-f.psi if f.psi is not None else math.inf, f.name))
        pred = self.baseline.prediction
        prediction = (
            figures(PREDICTION, pred, self.prediction, None, self.baseline.prediction_source)
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


def pick(
    columns: Mapping[str, ColumnValues], names: Iterable[str], rows: Array
) -> Mapping[str, ColumnValues]:
    """The ``rows`` of each named column (absent columns stay absent)."""
    for name in names:
        values = columns.get(name)
        if values is not None and not isinstance(values, Tally) and len(values) == len(rows):
            return columns  # every row scored: nothing to pick
        break
    picked: dict[str, ColumnValues] = {}
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
