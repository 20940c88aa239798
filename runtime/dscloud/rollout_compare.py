"""The comparison of a rollout: the serving version and its candidate, prediction by prediction.

Every runtime that scores the same rows with both versions adds them to a
:class:`Comparison`; figures come from its counts only, and counts merge by addition (like
:mod:`dscloud.drift`), so a server's windows, a stream's batches and a batch job's shards
give the figures one pass over the same rows would give, in bounded memory:

- rows compared (both versions scored the row) and label disagreements;
- |Δ| in fixed bins (:data:`DELTA_EDGES`): the largest per-class difference of
  probability for a classifier, the absolute difference of value for a regression (where a
  difference above :data:`VALUE_TOLERANCE` counts as a disagreement);
- the :data:`LARGEST` rows that differ most, with their inputs (ties broken by the inputs'
  JSON, so a merge keeps the same rows whatever the order);
- per version: rows attempted, rows in error (refused by that version alone, or lost to a
  failed session call), and latency in fixed bins (:data:`LATENCY_EDGES_MS`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dscloud.errors import DataError
from dscloud.scorer import Predictions

__all__ = [
    "DELTA_EDGES",
    "LARGEST",
    "LATENCY_EDGES_MS",
    "ROLES",
    "VALUE_TOLERANCE",
    "Comparison",
    "VersionCounts",
]

Array = npt.NDArray[Any]

#: Upper edges of the |Δ| bins; the last bin holds everything above the last finite edge.
DELTA_EDGES = (0.0, 1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, math.inf)
#: Upper edges of the latency bins, in milliseconds per call.
LATENCY_EDGES_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, math.inf)
#: How many of the largest differences are kept, with their inputs.
LARGEST = 10
#: A regression's values differing by more than this count as a disagreement.
VALUE_TOLERANCE = 1e-6
ROLES = ("current", "candidate")
_LATENCY_EDGES = np.asarray(LATENCY_EDGES_MS)


@dataclass
class VersionCounts:
    """One version's share of a comparison: rows tried, rows in error, call latencies."""

    version: int
    rows: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_EDGES_MS))

    def add_call(self, rows: int, errors: int, seconds: float | None) -> None:
        self.rows += rows
        self.errors += errors
        if seconds is not None:
            self.add_latencies((seconds,))

    def add_latencies(self, seconds: Sequence[float]) -> None:
        """Count calls' latencies, each in the first bin whose upper edge holds it (their
        rows are counted by :meth:`add_call` or :meth:`Comparison.add`)."""
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        bins = np.searchsorted(_LATENCY_EDGES, ms, side="left")
        for b, count in enumerate(np.bincount(bins, minlength=len(LATENCY_EDGES_MS)).tolist()):
            self.latency[b] += count

    def figures(self) -> dict[str, Any]:
        calls = sum(self.latency)
        return {
            "version": self.version,
            "rows": self.rows,
            "errors": self.errors,
            "error_rate": self.errors / self.rows if self.rows else 0.0,
            "calls": calls,
            "latency_ms": {
                "edges": [_edge(e) for e in LATENCY_EDGES_MS],
                "counts": list(self.latency),
                "p50": _quantile(self.latency, LATENCY_EDGES_MS, 0.5),
                "p95": _quantile(self.latency, LATENCY_EDGES_MS, 0.95),
            },
        }


class Comparison:
    """Counts comparing ``current`` and ``candidate`` on the same rows (see the module)."""

    def __init__(self, current: int, candidate: int) -> None:
        self.versions = {"current": VersionCounts(current), "candidate": VersionCounts(candidate)}
        self.rows_compared = 0
        self.disagreements = 0
        self.delta = [0] * len(DELTA_EDGES)
        self.largest: list[dict[str, Any]] = []

    def add(
        self,
        current: Predictions,
        candidate: Predictions | None,
        *,
        inputs: Sequence[Mapping[str, Any]] | None = None,
        seconds: tuple[float | None, float | None] = (None, None),
        n_rows: int | None = None,
    ) -> None:
        """Add one call's predictions of both versions on the same ``n_rows`` input rows.

        ``candidate`` None means its call failed: every row counts as its error. ``inputs``
        (the rows as JSON-ready dicts) feed the sample of largest differences; ``seconds``
        are each version's time for the call. Raises :class:`DataError` when the two
        predictions do not carry the same kind of output.
        """
        n = n_rows if n_rows is not None else len(current) + len(current.rejects)
        cur_errors = len(current.rejects)
        self.versions["current"].add_call(n, cur_errors, seconds[0])
        if candidate is None:
            self.versions["candidate"].add_call(n, n, seconds[1])
            return
        # A row both refuse is bad input, not the candidate's error.
        own = len(set(candidate.rejects) - set(current.rejects))
        self.versions["candidate"].add_call(n, own, seconds[1])
        both, i_cur, i_cand = np.intersect1d(
            current.rows, candidate.rows, assume_unique=True, return_indices=True
        )
        if not len(both):
            return
        delta, disagree = _differences(current, candidate, i_cur, i_cand)
        self.rows_compared += len(both)
        self.disagreements += int(np.count_nonzero(disagree))
        bins = np.searchsorted(np.asarray(DELTA_EDGES), delta, side="left")
        for b, count in zip(*np.unique(bins, return_counts=True), strict=True):
            self.delta[int(b)] += int(count)
        if inputs is not None:
            top = np.argsort(-delta, kind="stable")[:LARGEST]
            self._keep(
                {
                    "delta": float(delta[j]),
                    "inputs": dict(inputs[int(both[j])]),
                    "current": current.row(int(i_cur[j])),
                    "candidate": candidate.row(int(i_cand[j])),
                }
                for j in top
                if delta[j] > 0
            )

    def _keep(self, samples: Any) -> None:
        merged = [*self.largest, *samples]
        merged.sort(key=lambda s: (-s["delta"], json.dumps(s["inputs"], sort_keys=True)))
        self.largest = merged[:LARGEST]

    def merge(self, other: Comparison) -> Comparison:
        """The counts of both (a new object). Raises :class:`DataError` for another pair."""
        pair = (self.versions["current"].version, self.versions["candidate"].version)
        theirs = (other.versions["current"].version, other.versions["candidate"].version)
        if pair != theirs:
            raise DataError(f"cannot merge comparisons of versions {pair} and {theirs}")
        out = Comparison(*pair)
        out.rows_compared = self.rows_compared + other.rows_compared
        out.disagreements = self.disagreements + other.disagreements
        out.delta = [a + b for a, b in zip(self.delta, other.delta, strict=True)]
        for role in ROLES:
            a, b, c = self.versions[role], other.versions[role], out.versions[role]
            c.rows, c.errors = a.rows + b.rows, a.errors + b.errors
            c.latency = [x + y for x, y in zip(a.latency, b.latency, strict=True)]
        out.largest = list(self.largest)
        out._keep(other.largest)
        return out

    def __add__(self, other: Comparison) -> Comparison:
        return self.merge(other)

    def figures(self) -> dict[str, Any]:
        """What people and guard rails read: rates, bins, the largest differences."""
        n = self.rows_compared
        return {
            "rows_compared": n,
            "disagreements": self.disagreements,
            "disagreement_rate": self.disagreements / n if n else 0.0,
            "delta": {"edges": [_edge(e) for e in DELTA_EDGES], "counts": list(self.delta)},
            "largest": list(self.largest),
            "versions": {role: self.versions[role].figures() for role in ROLES},
        }

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready data (:meth:`from_dict` reads them back)."""
        return {
            "versions": {
                role: {
                    "version": v.version,
                    "rows": v.rows,
                    "errors": v.errors,
                    "latency": list(v.latency),
                }
                for role, v in self.versions.items()
            },
            "rows_compared": self.rows_compared,
            "disagreements": self.disagreements,
            "delta": list(self.delta),
            "largest": list(self.largest),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """Counts written by :meth:`to_dict`. Raises :class:`DataError` when malformed."""
        try:
            versions = data["versions"]
            out = cls(int(versions["current"]["version"]), int(versions["candidate"]["version"]))
            for role in ROLES:
                v = out.versions[role]
                v.rows, v.errors = int(versions[role]["rows"]), int(versions[role]["errors"])
                v.latency = [int(c) for c in versions[role]["latency"]]
                if len(v.latency) != len(LATENCY_EDGES_MS):
                    raise ValueError(f"{role} latency has {len(v.latency)} bins")
            out.rows_compared = int(data["rows_compared"])
            out.disagreements = int(data["disagreements"])
            out.delta = [int(c) for c in data["delta"]]
            if len(out.delta) != len(DELTA_EDGES):
                raise ValueError(f"delta has {len(out.delta)} bins, expected {len(DELTA_EDGES)}")
            out.largest = [dict(s) for s in data.get("largest", [])][:LARGEST]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not rollout comparison counts: {exc}") from exc
        return out

    @classmethod
    def from_json(cls, raw: str | bytes) -> Comparison:
        """Raises :class:`DataError` when ``raw`` is not JSON comparison counts."""
        try:
            return cls.from_dict(json.loads(raw))
        except ValueError as exc:
            raise DataError(f"not rollout comparison counts: {exc}") from exc


def _differences(
    current: Predictions, candidate: Predictions, i_cur: Array, i_cand: Array
) -> tuple[Array, Array]:
    """|Δ| per compared row, and whether the two disagree on it."""
    if current.probabilities is not None and candidate.probabilities is not None:
        delta = np.abs(
            current.probabilities[i_cur].astype(np.float64)
            - candidate.probabilities[i_cand].astype(np.float64)
        ).max(axis=1)
    elif current.value is not None and candidate.value is not None:
        delta = np.abs(
            current.value[i_cur].astype(np.float64) - candidate.value[i_cand].astype(np.float64)
        )
    elif current.label is not None and candidate.label is not None:
        delta = (current.label[i_cur] != candidate.label[i_cand]).astype(np.float64)
    else:
        raise DataError("the two versions do not carry the same kind of output")
    if current.label is not None and candidate.label is not None:
        disagree = current.label[i_cur] != candidate.label[i_cand]
    else:
        disagree = delta > VALUE_TOLERANCE
    return delta, np.asarray(disagree)


def _edge(edge: float) -> float | str:
    return "inf" if math.isinf(edge) else edge


def _quantile(counts: Sequence[int], edges: Sequence[float], q: float) -> float | str | None:
    """The upper edge of the bin holding quantile ``q`` (None without calls)."""
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for count, edge in zip(counts, edges, strict=True):
        seen += count
        if seen >= q * total:
            return _edge(edge)
    return _edge(edges[-1])  # pragma: no cover - the loop always reaches q * total
