"""One rollout's comparison as a server process counts it: a window since the last record,
the total since the rollout started in the process, and the pairs of predictions held
until they are counted together (:class:`RolloutCounts`)."""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, overload

import numpy as np

from dscloud.rollout import Rollout
from dscloud.rollout_compare import Comparison
from dscloud.scorer import Predictions, Scorer
from dscloud.server.protocols import Batch

__all__ = ["PENDING", "TIMED_EVERY", "RolloutCounts"]

log = logging.getLogger("dscloud.server.rollout")

#: Compared requests held before they are counted together (see :class:`RolloutCounts`).
PENDING = 1024
#: ... or compared rows, whichever comes first: held rows are decoded inputs in memory.
PENDING_ROWS = 4096
#: One held one-row request in this many has the other version's latency measured.
TIMED_EVERY = 32
_Pair = tuple[Predictions, Predictions, Batch, float, float]
Seconds = tuple[float, float | None]


class RolloutCounts:
    """One rollout as this process compares it: the window since the last record and the
    total since the rollout started here. Thread-safe.

    A :meth:`Comparison.add` costs some 100 to 300 µs of numpy and sorting whatever the
    number of rows, five times the scoring of one row; so requests are held (an append)
    and counted :data:`PENDING` requests or :data:`PENDING_ROWS` rows at a time (whichever
    comes first, so held inputs stay small) as one call of stacked rows, with each
    request's latencies counted as its own call. Figures and records count the held
    requests first.

    One-row requests whose versions build the same feeds (a server's common case) are
    held as their values (:meth:`hold`), and both versions score the held rows in one
    session call each when they are counted: a fraction of one call per request, and
    both sides scored alike. The answering call's latency is counted for every request;
    the other version's on every :data:`TIMED_EVERY`-th such request, with one call of
    its own on that request's feeds."""

    def __init__(
        self, alias: str, rollout: Rollout, scorers: tuple[Scorer, Scorer], current: int
    ) -> None:
        self.name, self.alias, self.rollout, self.current = scorers[0].name, alias, rollout, current
        #: The serving version (``current``) and the candidate, which score the held rows.
        self.scorers = scorers
        #: True when the two versions build the same feeds (:meth:`Schema.feeds_like`): the
        #: other version then runs the answering call's feeds, or the held rows.
        self.feeds_like = scorers[0].schema.feeds_like(scorers[1].schema)
        self.window = Comparison(current, rollout.candidate)
        self.total = Comparison(current, rollout.candidate)
        self.skipped = 0
        self.failures = 0
        self.aborted = False
        #: Counts a failed archive write did not record, for the next window's record
        #: (touched by the poller thread only).
        self.unrecorded: Comparison | None = None
        self.pending: list[_Pair] = []
        #: Held one-row requests answered by the serving version (shadow) and by the
        #: candidate (canary): a rollout's mode may change while it runs.
        self.held = (_HeldRows(by_candidate=False), _HeldRows(by_candidate=True))
        #: Requests and rows held or pending, counted when either reaches its limit.
        self.pending_requests = self.pending_rows = 0
        self._timed = itertools.count()
        self.lock = threading.Lock()

    def times_other(self) -> bool:
        """Whether the held request about to be scored has the other version's latency
        measured (one in :data:`TIMED_EVERY`)."""
        return next(self._timed) % TIMED_EVERY == 0

    def hold(self, batch: Batch, seconds: Seconds, *, by_candidate: bool) -> None:
        """Hold a one-row request that both versions accept alike, for both to score with
        the other held rows when they are counted. ``seconds``: the answering call's, and
        the other version's when it was timed (else None)."""
        with self.lock:
            self.held[by_candidate].add(batch, seconds)
            self._pend(1)

    def _pend(self, rows: int) -> None:
        """One more request of ``rows`` held or pending (under the lock): count them all
        once :data:`PENDING` requests or :data:`PENDING_ROWS` rows wait."""
        self.pending_requests += 1
        self.pending_rows += rows
        if self.pending_requests >= PENDING or self.pending_rows >= PENDING_ROWS:
            self._count_pending()

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
            self.pending.append((current, candidate, batch, *seconds))
            self._pend(batch.n_rows)

    def _count_pending(self) -> None:
        """Count the held requests (under the lock): the held one-row requests of each kind
        once the other version scored them in one call, and the pairs as one stacked call."""
        for held in self.held:
            if len(held):
                self._count_held(held)
        pending, self.pending = self.pending, []
        self.pending_requests = self.pending_rows = 0
        if not pending:
            return
        batches = [p[2] for p in pending]
        current = _stacked([p[0] for p in pending], batches)
        candidate = _stacked([p[1] for p in pending], batches)
        rows = _Stacked(batches)
        self.window.add(current, candidate, inputs=rows, n_rows=len(rows))
        self.window.versions["current"].add_latencies([p[3] for p in pending])
        self.window.versions["candidate"].add_latencies([p[4] for p in pending])

    def _count_held(self, held: _HeldRows) -> None:
        """Both versions score the held rows, one call each (rows scored together, by the
        same kernels on both sides, so a version compared with itself differs by 0), and
        the pair is counted like any other."""
        inputs, columns, times = held.take()
        scored: list[Predictions | None] = []
        for scorer in self.scorers:
            try:
                scored.append(scorer.score_columns(columns, len(inputs)))
            except Exception:
                scored.append(None)
                self.failures += 1
                if self.failures == 1:  # once per rollout and process, as the trials do
                    log.warning(
                        "version %s failed on %d held rows (rollout %s of %s@%s)",
                        scorer.version,
                        len(inputs),
                        self.rollout.id,
                        self.name,
                        self.alias,
                        exc_info=True,
                    )
        current, candidate = scored
        if current is None:
            return  # the serving version failed on the rows: nothing to hold to
        self.window.add(current, candidate, inputs=inputs, n_rows=len(inputs))
        roles = ("candidate", "current") if held.by_candidate else ("current", "candidate")
        for role, role_times in zip(roles, times, strict=True):
            self.window.versions[role].add_latencies(role_times)

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


class _HeldRows:
    """Held one-row requests of one kind (shadow or canary), for both versions to score
    together when they are counted (a server's common case): the rows' values one after
    the other in one flat list, and the call latencies; so no per-request object outlives
    its request (freeing a thousand held requests at once cost more than keeping their
    values)."""

    def __init__(self, *, by_candidate: bool) -> None:
        self.by_candidate = by_candidate
        self.names: tuple[str, ...] = ()
        self._take_none()

    def _take_none(self) -> None:
        self.values: list[Any] = []
        self.times: tuple[list[float], list[float]] = ([], [])  # (answering, other)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, batch: Batch, seconds: Seconds) -> None:
        columns = batch.columns
        if not self.n:
            self.names = tuple(columns)
        self.values += [columns[name][0] for name in self.names]  # one model: one layout
        self.times[0].append(seconds[0])
        if seconds[1] is not None:
            self.times[1].append(seconds[1])
        self.n += 1

    def take(self) -> tuple[_FlatRows, dict[str, list[Any]], tuple[list[float], list[float]]]:
        """The held rows as inputs and as columns, and the latencies (and forget them)."""
        values, width = self.values, len(self.names)
        columns = {name: values[i::width] for i, name in enumerate(self.names)}
        inputs, times = _FlatRows(self.names, values), self.times
        self._take_none()
        return inputs, columns, times


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
