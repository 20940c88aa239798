"""The stream's side of a rollout: score each batch with the candidate too, compare, guard.

While the alias the stream scores has a rollout (:mod:`dscloud.rollout`;
:attr:`dscloud.live.LiveModel.following` holds it and its verified candidate), every
Kinesis batch costs **one** extra ONNX call: the candidate scores the records whose
predictions the handler is about to write (decoded, accepted by the serving version, the
newest per entity), and :class:`StreamRollout` adds both versions' outputs on those rows
to a :class:`~dscloud.rollout_compare.Comparison`. What it does with them:

- **canary**: an entity the rollout routes to the candidate (:meth:`Rollout.answers` on
  its ``entity_id``, the key the table is written under, so an entity keeps one version
  across batches, containers and shards) gets the candidate's prediction in the table,
  whose ``model_version`` and ``model_sha256`` then name the candidate;
- **shadow**: nothing the handler writes changes.

A failed candidate call, or a row the candidate alone refuses, never costs a record: the
serving version's prediction is written (and names the serving version), and the rows
count as the candidate's errors. Decided here, not in the issue: the candidate scores only
the rows that will be written (not records superseded in the same batch, nor rows the
serving version refused), so its call is never larger than the writes it may answer.

Per container, counts add up across invocations. Once per window
(``DSC_ROLLOUT_WINDOW_SECONDS``) the window's counts are recorded in the archive
(:func:`~dscloud.rollout_guard.record_comparison`: one ``rollout-compare`` audit record,
merged by ``dsc rollout status``) and published as metrics (:func:`rollout_metrics`). The
guard rails are judged after **every** batch, on all the counts this container holds for
the rollout (judging is arithmetic; only a breach writes): on a breach, the pending counts
are recorded and :func:`~dscloud.rollout_guard.guard` aborts the rollout with a
compare-and-swap, so of several containers that see it, exactly one writes the abort and
its audit record. A container judges each rollout once; the handler then re-reads the
alias, so it stops scoring with the candidate at once, and the others on their next poll.
An archive error while recording or judging is logged and retried with the next batch: it
never fails the records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dscloud.archive import Archive
from dscloud.rollout import Rollout
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import guard, record_comparison
from dscloud.scorer import Predictions, Scorer
from dscloud.settings import Settings

__all__ = ["ROLLOUT_METRICS", "StreamRollout", "rollout_metrics", "take"]

log = logging.getLogger("dscloud.stream.rollout")

#: The metrics a window publishes, with their units.
ROLLOUT_METRICS = (
    ("RolloutRowsCompared", "Count"),
    ("RolloutDisagreementRate", "None"),
    ("RolloutCandidateErrorRate", "None"),
    ("RolloutCurrentErrorRate", "None"),
)


class StreamRollout:
    """The comparison counts of one stream container and what it does with them.

    ``publish(dimensions, metrics)`` emits one window's metrics (``(name, value, unit)``)
    with ``dimensions`` naming the model and both versions (the handler passes an EMF
    writer). ``clock`` returns seconds (monotonic) and times the windows; ``by`` names this
    runtime in the records it writes.
    """

    def __init__(
        self,
        archive: Archive,
        name: str,
        alias: str,
        publish: Callable[[Mapping[str, str], Sequence[tuple[str, float, str]]], None],
        *,
        window_seconds: float = Settings.rollout_window_seconds,
        clock: Callable[[], float] = time.monotonic,
        by: str = "stream",
    ) -> None:
        self.archive = archive
        self.name = name
        self.alias = alias
        self.publish = publish
        self.window_seconds = window_seconds
        self.clock = clock
        self.by = by
        self.rollout: Rollout | None = None
        #: Counts not yet recorded in the archive, and all this container's counts of the
        #: rollout (what the guard rails judge).
        self.window: Comparison | None = None
        self.total: Comparison | None = None
        self._judged: set[str] = set()  # rollouts this container has judged breached
        self._started = clock()

    def compare(
        self,
        rollout: Rollout,
        current: Scorer,
        candidate: Scorer,
        rows: Sequence[Mapping[str, Any]],
        predictions: Predictions,
        *,
        seconds: float | None = None,
    ) -> Predictions | None:
        """Score ``rows`` with ``candidate`` in one call and count both versions' outputs
        (``predictions``: the serving version's, one per row, taking ``seconds``).

        Returns the candidate's predictions, or None when its call failed (every row then
        counts as its error). Never raises for the candidate's failure.
        """
        self._follow(rollout, current, candidate)
        assert self.window is not None and self.total is not None
        began = time.perf_counter()
        try:
            answered: Predictions | None = candidate.score_records(rows)
        except Exception as exc:  # the candidate's failure is counted, never the records'
            answered = None
            log.warning(
                "rollout candidate %s@%s failed on a batch of %d rows: %s: %s",
                candidate.name,
                candidate.version,
                len(rows),
                type(exc).__name__,
                exc,
                extra={"model": candidate.name, "version": candidate.version},
            )
        took = time.perf_counter() - began
        batch = Comparison(current.version or 0, candidate.version or 0)
        batch.add(predictions, answered, inputs=rows, seconds=(seconds, took), n_rows=len(rows))
        self.window = self.window + batch
        self.total = self.total + batch
        return answered

    def settle(self, rollout: Rollout) -> dict[str, Any] | None:
        """After a batch: record the window when it is due, and judge the guard rails.

        Returns the abort's audit record when this container aborted ``rollout``, else
        None (:meth:`judged` says whether a breach was seen, whoever aborted). Never
        raises: an archive error is logged and tried again after the next batch.
        """
        if self.total is None or self.rollout is None or self.rollout.id != rollout.id:
            return None
        figures = self.total.figures()
        breached = [] if self.judged(rollout) else rollout.thresholds.breaches(figures)
        if breached or self.clock() - self._started >= self.window_seconds:
            self.flush()
        if not breached:
            return None
        try:
            aborted = guard(self.archive, self.name, self.alias, rollout, figures, by=self.by)
        except Exception as exc:
            log.warning("could not judge rollout %s: %s: %s", rollout.id, type(exc).__name__, exc)
            return None
        self._judged.add(rollout.id)
        log.warning(
            "rollout of %s@%s candidate %s breached its guard rails: %s",
            self.name,
            self.alias,
            rollout.candidate,
            "; ".join(breached),
            extra={"aborted_here": aborted is not None, "rollout_id": rollout.id},
        )
        return aborted

    def judged(self, rollout: Rollout) -> bool:
        """Whether this container saw ``rollout`` breach its guard rails (and so aborted it,
        or found it aborted by another runtime): its candidate must not be used again."""
        return rollout.id in self._judged

    def flush(self) -> None:
        """Record and publish the window's counts (if any), and start a new window.

        An archive error is logged and the counts are kept for the next try.
        """
        window, rollout = self.window, self.rollout
        if window is None or rollout is None or window.versions["current"].rows == 0:
            self._started = self.clock()
            return
        try:
            record_comparison(self.archive, self.name, self.alias, rollout, window, by=self.by)
        except Exception as exc:
            log.warning(
                "could not record the comparison of rollout %s: %s: %s",
                rollout.id,
                type(exc).__name__,
                exc,
            )
            return
        versions = window.versions
        self.publish(
            {
                "model": self.name,
                "current_version": str(versions["current"].version),
                "candidate_version": str(versions["candidate"].version),
            },
            rollout_metrics(window),
        )
        self.window = Comparison(versions["current"].version, versions["candidate"].version)
        self._started = self.clock()

    def _follow(self, rollout: Rollout, current: Scorer, candidate: Scorer) -> None:
        """Start new counts when the rollout or either version changed (the old window is
        recorded first: its rows were compared under the rollout they belong to)."""
        pair = (current.version or 0, candidate.version or 0)
        counts = self.total
        if (
            self.rollout is not None
            and self.rollout.id == rollout.id
            and counts is not None
            and (counts.versions["current"].version, counts.versions["candidate"].version) == pair
        ):
            self.rollout = rollout  # mode, share or thresholds may have changed
            return
        self.flush()
        self.rollout = rollout
        self.window, self.total = Comparison(*pair), Comparison(*pair)
        self._started = self.clock()


def rollout_metrics(counts: Comparison) -> list[tuple[str, float, str]]:
    """The metrics of ``counts``: ``(name, value, unit)`` in :data:`ROLLOUT_METRICS` order."""
    figures = counts.figures()
    versions = figures["versions"]
    values = (
        float(figures["rows_compared"]),
        float(figures["disagreement_rate"]),
        float(versions["candidate"]["error_rate"]),
        float(versions["current"]["error_rate"]),
    )
    return [
        (name, value, unit) for (name, unit), value in zip(ROLLOUT_METRICS, values, strict=True)
    ]


def take(picks: Sequence[tuple[Predictions, int]]) -> Predictions:
    """The outputs ``picks`` name (a :class:`Predictions` and an output index each), in
    order, as one :class:`Predictions` whose row ``i`` is pick ``i``.

    The handler's serving-version outputs come from one call (or, when a record crashed
    it, from the halves that isolated it); this gathers the written rows' outputs for the
    comparison without scoring them again. Raises ``ValueError`` for no picks.
    """
    if not picks:
        raise ValueError("no predictions to take")
    parts: dict[int, tuple[Predictions, list[int], list[int]]] = {}
    for at, (preds, i) in enumerate(picks):
        entry = parts.setdefault(id(preds), (preds, [], []))
        entry[1].append(i)
        entry[2].append(at)
    order = np.argsort(np.concatenate([np.asarray(ats) for _, _, ats in parts.values()]))

    def gathered(kind: str) -> Any:
        arrays = [(getattr(preds, kind), idx) for preds, idx, _ in parts.values()]
        if any(array is None for array, _ in arrays):
            return None
        return np.concatenate([array[np.asarray(idx)] for array, idx in arrays])[order]

    return Predictions(
        picks[0][0].envelope,
        rows=np.arange(len(picks)),
        label=gathered("label"),
        probabilities=gathered("probabilities"),
        value=gathered("value"),
    )
