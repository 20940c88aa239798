"""One rollout's comparison as a server process counts it: a window since the last record,
the total since the rollout started in the process, and the pairs of predictions held
until they are counted together (:class:`RolloutCounts`)."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from dscloud.rollout import Rollout
from dscloud.rollout_compare import Comparison
from dscloud.scorer import Predictions
from dscloud.server.protocols import Batch

__all__ = ["PENDING", "RolloutCounts"]

#: Compared requests held before they are counted together (see :class:`RolloutCounts`).
PENDING = 1024
#: ... or compared rows, whichever comes first: held rows are decoded inputs in memory.
PENDING_ROWS = 4096
_Pair = tuple[Predictions, Predictions, Batch, float, float]
Array = npt.NDArray[Any]


class RolloutCounts:
    """One rollout as this process compares it: the window since the last record and the
    total since the rollout started here. Thread-safe.

    A :meth:`Comparison.add` costs some 100 to 300 µs of numpy and sorting whatever the
    number of rows, five times the scoring of one row; so pairs of predictions are held
    (an append) and counted :data:`PENDING` requests or :data:`PENDING_ROWS` rows at a
    time (whichever comes first, so held inputs stay small) as one call of stacked rows,
    with each request's latencies counted as its own call. Figures and records count the
    held pairs first."""

    def __init__(
        self, name: str, alias: str, rollout: Rollout, current: int, *, feeds_like: bool = False
    ) -> None:
        self.name, self.alias, self.rollout, self.current = name, alias, rollout, current
        #: True when the two versions build the same feeds (:meth:`Schema.feeds_like`): the
        #: other version then runs the answering call's feeds.
        self.feeds_like = feeds_like
        self.window = Comparison(current, rollout.candidate)
        self.total = Comparison(current, rollout.candidate)
        self.skipped = 0
        self.failures = 0
        self.aborted = False
        #: Counts a failed archive write did not record, for the next window's record
        #: (touched by the poller thread only).
        self.unrecorded: Comparison | None = None
        self.pending: list[_Pair] = []
        self.rows = _OneRowPairs()  # held pairs of one-row requests both versions scored
        self.pending_rows = 0
        self.lock = threading.Lock()

    def add(
        self,
        current: Predictions,
        candidate: Predictions | None,
        batch: Batch,
        seconds: tuple[float, float],
    ) -> None:
        """Count one request's predictions of both versions (candidate None: its call
        failed, every row its error)."""
        with self.lock:
            if candidate is None:
                self.window.add(current, None, seconds=seconds, n_rows=batch.n_rows)
                return
            if batch.n_rows == 1 and len(current.rows) == 1 and len(candidate.rows) == 1:
                self.rows.add(current, candidate, batch, seconds)
            else:
                self.pending.append((current, candidate, batch, *seconds))
            self.pending_rows += batch.n_rows
            if len(self.pending) + len(self.rows) >= PENDING or self.pending_rows >= PENDING_ROWS:
                self._count_pending()

    def _count_pending(self) -> None:
        """Count the held pairs as one stacked call each for one-row requests and for the
        others (under the lock)."""
        if len(self.rows):
            current, candidate, inputs, times = self.rows.take()
            self.window.add(current, candidate, inputs=inputs, n_rows=len(inputs))
            self.window.versions["current"].add_latencies(times[0])
            self.window.versions["candidate"].add_latencies(times[1])
        pending, self.pending, self.pending_rows = self.pending, [], 0
        if not pending:
            return
        batches = [p[2] for p in pending]
        current = _stacked([p[0] for p in pending], batches)
        candidate = _stacked([p[1] for p in pending], batches)
        rows = _Stacked(batches)
        self.window.add(current, candidate, inputs=rows, n_rows=len(rows))
        self.window.versions["current"].add_latencies([p[3] for p in pending])
        self.window.versions["candidate"].add_latencies([p[4] for p in pending])

    def take_window(self) -> Comparison:
        """The window so far (now part of the total); a new one starts."""
        with self.lock:
            self._count_pending()
            window = self.window
            self.window = Comparison(self.current, self.rollout.candidate)
            self.total = self.total + window
            return window

    def figures(self) -> dict[str, Any]:
        """Everything compared here since the rollout started, the open window included."""
        with self.lock:
            self._count_pending()
            return (self.total + self.window).figures()

    def labels(self) -> tuple[tuple[str, str], ...]:
        return (
            ("model", self.name),
            ("alias", self.alias),
            ("rollout", self.rollout.id),
            ("current", str(self.current)),
            ("candidate", str(self.rollout.candidate)),
        )


class _OneRowPairs:
    """Held pairs of one-row requests that both versions scored (a server's common case),
    as flat lists of plain values: the row's inputs one after the other, and each
    version's outputs; so no per-request object outlives its request (freeing a thousand
    held requests at once cost more than keeping their values), and counting them is one
    array per output."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self._take_none()

    def _take_none(self) -> None:
        self.values: list[Any] = []
        self.outputs: tuple[dict[str, list[Any]], dict[str, list[Any]]] = ({}, {})
        self.times: tuple[list[float], list[float]] = ([], [])
        self.n = 0
        self.envelopes: tuple[Any, Any] = (None, None)
        self.dtypes: dict[str, Any] = {}

    def __len__(self) -> int:
        return self.n

    def add(
        self,
        current: Predictions,
        candidate: Predictions,
        batch: Batch,
        seconds: tuple[float, float],
    ) -> None:
        columns = batch.columns
        if not self.n:
            self.names = tuple(columns)
        self.values += [columns[name][0] for name in self.names]  # one model: one layout
        for outputs, preds in ((self.outputs[0], current), (self.outputs[1], candidate)):
            for kind in _KINDS:
                array = getattr(preds, kind)
                if array is not None:
                    if kind not in outputs:
                        outputs[kind] = []
                        self.dtypes[kind] = array.dtype
                    outputs[kind] += array.ravel().tolist()
        self.times[0].append(seconds[0])
        self.times[1].append(seconds[1])
        self.envelopes = (current.envelope, candidate.envelope)
        self.n += 1

    def take(
        self,
    ) -> tuple[Predictions, Predictions, Sequence[Mapping[str, Any]], tuple[list[float], ...]]:
        """The held pairs as two predictions of one row per request, and their inputs (and
        forget them)."""
        n, rows = self.n, np.arange(self.n, dtype=np.int64)

        def joined(outputs: dict[str, list[Any]], kind: str) -> Array | None:
            values = outputs.get(kind)
            if not values or len(values) % n:
                return None
            array = np.asarray(values, dtype=self.dtypes[kind])
            return array.reshape(n, -1) if kind == "probabilities" else array

        current, candidate = (
            Predictions(
                envelope=envelope,
                rows=rows,
                label=joined(outputs, "label"),
                probabilities=joined(outputs, "probabilities"),
                value=joined(outputs, "value"),
            )
            for outputs, envelope in zip(self.outputs, self.envelopes, strict=True)
        )
        inputs, times = _FlatRows(self.names, self.values), self.times
        self._take_none()
        return current, candidate, inputs, times


class _Rows(Sequence[Mapping[str, Any]]):
    """Held input rows as row dicts with JSON-ready values, built only for the rows a
    comparison keeps (its largest differences); subclasses say where row ``i`` is."""

    def _row(self, i: int) -> Mapping[str, Any]:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Mapping[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        if isinstance(i, slice):
            return [self._row(j) for j in range(*i.indices(len(self)))]
        return self._row(i)


class _FlatRows(_Rows):
    """Rows held as one flat list of values, row after row."""

    def __init__(self, names: tuple[str, ...], values: list[Any]) -> None:
        self._names, self._values, self._width = names, values, len(names)

    def __len__(self) -> int:
        return len(self._values) // self._width if self._width else 0

    def _row(self, i: int) -> Mapping[str, Any]:
        start = i * self._width
        row = self._values[start : start + self._width]
        return {name: _plain(v) for name, v in zip(self._names, row, strict=True)}


_KINDS = ("label", "probabilities", "value")


def _stacked(parts: Sequence[Predictions], batches: Sequence[Batch]) -> Predictions:
    """Several requests' predictions (of ``batches``) as one, rows numbered on from
    request to request as :class:`_Stacked` numbers the inputs."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0, *(b.n_rows for b in batches[:-1])])
    scored = [p for p in parts if len(p.rows)]

    def joined(kind: str) -> Any:
        arrays = [getattr(p, kind) for p in scored]
        if not arrays or any(a is None for a in arrays):
            return None
        return np.concatenate(arrays)

    rows = np.concatenate([p.rows for p in parts])
    out = Predictions(
        envelope=parts[0].envelope,
        rows=rows + np.repeat(offsets, [len(p.rows) for p in parts]),
        label=joined("label"),
        probabilities=joined("probabilities"),
        value=joined("value"),
    )
    for p, o in zip(parts, offsets, strict=True):
        if p.rejects:
            out.rejects.update({int(i) + int(o): why for i, why in p.rejects.items()})
    return out


class _Stacked(_Rows):
    """The decoded rows of several requests, numbered on from one to the next."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        self._batches = batches
        self._starts = list(itertools.accumulate((b.n_rows for b in batches), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def _row(self, i: int) -> Mapping[str, Any]:
        k = bisect.bisect_right(self._starts, i) - 1
        batch, j = self._batches[k], i - self._starts[k]
        return {name: _plain(values[j]) for name, values in batch.columns.items()}


def _plain(value: Any) -> Any:
    """A cell as JSON holds it: numpy scalars as Python values, NaN as null (missing)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
