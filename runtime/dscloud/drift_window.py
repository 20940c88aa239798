"""A server's drift: counts per model version over a rolling time window.

Counting one row costs far more per row than counting a thousand (numpy and dict work per
column per call), and a server scores one row per request. :class:`RollingCounts` keeps
the rows a request scored and counts them in bulk; the figures are those of counting every
row, at a fraction of the cost per request. A one-row request leaves only its values
behind (one list append per feature), not the request's own objects: keeping a thousand
requests' dicts, tuples and :class:`~dscloud.scorer.Predictions` alive until the flush
cost the server more than the counting itself (they outlive the young GC generation and
keep every request's memory cold; ``bench/serve.md``).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from dscloud.baseline import Baseline, Outputs
from dscloud.drift import ColumnValues, DriftCounts, Tally, pick
from dscloud.errors import SchemaError
from dscloud.schema import OUTPUT_KINDS

if TYPE_CHECKING:
    from dscloud.scorer import Predictions

__all__ = ["RollingCounts"]

Array = npt.NDArray[Any]


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
        self._pending: list[tuple[Mapping[str, ColumnValues] | _Records, Any, int, Any]] = []
        self._pending_rows = 0
        # Waiting one-row requests: their values row after row in one flat list (feature i
        # of request j at j * features + i), and each output's arrays. No per-request
        # container outlives the request (numpy arrays are not tracked by the GC).
        self._names = tuple(baseline.features)
        self._row_values: list[Any] = []
        self._row_count = 0
        self._row_outputs: dict[str, list[Array]] = {k: [] for k in OUTPUT_KINDS}

    def _current(self) -> DriftCounts:
        key = math.floor(self.clock() / self.slice_seconds)
        if not self._slices or self._slices[-1][0] != key:
            self._flush()  # waiting rows belong to the slice they arrived in
            self._slices.append((key, DriftCounts(self.baseline)))
        while self._slices[0][0] <= key - self.slices:
            self._slices.popleft()
        return self._slices[-1][1]

    def _flush(self) -> None:
        if self._row_count:
            self._pending.append(self._one_row_requests())
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, [], 0
        counts = self._slices[-1][1]
        names = self.baseline.features
        first = next(iter(names), None)
        picked = [
            _gather(cols.rows, names, preds.rows)
            if isinstance(cols, _Records)
            else cols
            if preds is None or first is None or len(cols[first]) == n_rows
            else pick(cols, names, preds.rows)
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

    def add(self, columns: Mapping[str, ColumnValues], predictions: Outputs | None = None) -> None:
        """:meth:`DriftCounts.add` into the current slice (counted at the next flush)."""
        with self._lock:
            counts = self._current()
            n = counts._check(columns, predictions)
            self._pending.append((columns, None, n, counts._prediction_values(predictions)))
            self._add_rows(n)

    def add_scored(self, columns: Mapping[str, ColumnValues], predictions: Predictions) -> None:
        """:meth:`DriftCounts.add_scored` into the current slice (counted at the next flush).

        Nothing is checked here: the scorer accepted these rows from these columns, so
        every feature is present; picking and counting wait for the flush. This is the
        server's per-request cost: a lock and an append (one per feature for one row).
        """
        n = len(predictions)
        with self._lock:
            self._current()
            if n == 1 and self._one_row(columns, predictions):
                self._add_rows(1)
                return
            self._pending.append((columns, predictions, n, None))
            self._add_rows(n)

    def _one_row(self, columns: Mapping[str, ColumnValues], predictions: Predictions) -> bool:
        """Keep a one-row request's values and outputs; False when ``columns`` hold more
        rows than were accepted, or a tally, which the general path picks from."""
        names = self._names
        try:
            if len(columns[names[0]]) != 1:
                return False
            row = [columns[name][0] for name in names]  # type: ignore[index]
        except (IndexError, TypeError):  # no features, or a Tally (no single values)
            return False
        self._row_values += row
        self._row_count += 1
        outputs = self._row_outputs
        for kind in OUTPUT_KINDS:
            array = getattr(predictions, kind)
            if array is not None:
                outputs[kind].append(array)
        return True

    def _one_row_requests(self) -> tuple[dict[str, ColumnValues], _Outputs, int, None]:
        """The waiting one-row requests as one pending entry (and forget them)."""
        values, self._row_values = self._row_values, []
        n, self._row_count = self._row_count, 0
        width = len(self._names)
        columns: dict[str, ColumnValues] = {
            name: values[i::width] for i, name in enumerate(self._names)
        }
        arrays = {
            k: np.concatenate(a) if len(a) == n else None for k, a in self._row_outputs.items()
        }
        self._row_outputs = {k: [] for k in OUTPUT_KINDS}
        return columns, _Outputs(**arrays), n, None

    def add_scored_records(
        self, records: Sequence[Mapping[str, Any]], predictions: Predictions
    ) -> None:
        """:meth:`add_scored` for rows as the server decodes them (one dict per row); the
        columns are gathered at the flush, for the accepted rows only."""
        with self._lock:
            self._current()
            self._pending.append((_Records(records), predictions, len(predictions), None))
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
class _Records:
    """Rows given as dicts, waiting to become columns."""

    rows: Sequence[Mapping[str, Any]]


def _gather(
    records: Sequence[Mapping[str, Any]], names: Iterable[str], rows: Array
) -> dict[str, ColumnValues]:
    """The accepted ``rows`` of ``records`` as columns (the scorer saw every name in them)."""
    accepted = [records[i] for i in rows.tolist()]
    return {name: [r[name] for r in accepted] for name in names}


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


def _concat(parts: Sequence[ColumnValues]) -> ColumnValues:
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
