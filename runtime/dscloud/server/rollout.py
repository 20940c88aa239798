"""The server's side of a rollout: canary routing, shadow scoring, comparison, guard rails.

The alias poller (:class:`~dscloud.live.LiveModel`) loads and verifies the candidate; this
module decides, per request, which version answers and what is compared, and, per window,
records the comparison and judges it.

- **Routing key**: the ``X-Dsc-Route-Key`` header (a user or entity id, so a user keeps one
  version), else the request id. The request id is the client's ``X-Request-Id`` when it is
  1 to 128 printable ASCII characters, else one the server makes (a random prefix per
  process and a counter); every scoring answer returns it in ``X-Request-Id``, and the
  access line carries it.
- **Canary**: :meth:`Rollout.answers` on the key picks the candidate for ``share`` of the
  keys; the answer names the version that answered (``X-Model-Version``, the OIP body's
  ``model_version``, the ``version`` label of the request metrics, the access line). A
  request that names a version (``/v2/models/M/versions/V/infer``) is never routed.
- **Shadow**: the serving version answers; the candidate scores the same rows inside a
  ``try``, so the answer, its status and its bytes are those of a server without a
  rollout, whatever the candidate does.
- **What is compared**: in shadow every request; in canary the requests the candidate
  answered, which the serving version scores too (so a canary's guard rails judge the
  candidate's error rate and disagreement on the very rows it answered). Requests the
  serving version answers in canary are not compared.
- **What it costs**: when the two schemas build the same feeds
  (:meth:`Schema.feeds_like`, the common case of a retrained model), a one-row request
  (the thread's reused one-row feeds) is held as its values, and both versions score the
  held rows together when they are counted, one session call each per
  :data:`~dscloud.server.rollout_counts.PENDING`
  requests (:meth:`RolloutCounts.hold`): a shadow or a canary costs a request an append
  and a fraction of a call, not a call. The other version's latency is measured on one
  held request in ``TIMED_EVERY`` (one call of its own, right after the answering call,
  while the feeds are valid). Other requests keep the answering call's feeds, and the
  other version runs them in one call without validating again. Versions whose schemas
  differ score the decoded rows each. A canary compares within a :class:`Budget` of
  ``DSC_ROLLOUT_COMPARE_SHARE`` of the process's time (0.5%): every request the candidate
  answered below saturation; beyond, the canary answers the same way and counts the
  comparisons beyond its budget as skipped (``dsc_rollout_skipped_total``).
- **Where**: held requests are counted on the request thread that fills the block (or
  when figures are asked); other bodies up to :data:`~dscloud.server.app.INLINE_BYTES`
  are compared on the event loop once the answer is sent; larger ones on a worker
  thread, at most :data:`BACKGROUND` at once (more are skipped and counted): a
  comparison holds the decoded rows after the request's admission ticket is released,
  so their number is bounded here instead.
- **Windows**: every ``DSC_ROLLOUT_WINDOW_SECONDS`` the poller thread records each
  rollout's window (:func:`~dscloud.rollout_guard.record_comparison`: the counts since the
  last record, so records of every process merge by addition in ``dsc rollout status``)
  and then judges this process's counts since the rollout started
  (:func:`~dscloud.rollout_guard.guard`): each process judges what it compared itself,
  without reading the other processes' records, so the cost of a window does not grow
  with the fleet or the rollout's age; the thresholds are rates, which every process
  estimates alike, and ``min_rows`` applies per process. The first process to see a
  breach aborts; every process drops the candidate on its next poll.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool

from dscloud.archive import Archive
from dscloud.live import LiveModel
from dscloud.rollout import Rollout
from dscloud.rollout_guard import guard, record_comparison
from dscloud.schema import Encoded
from dscloud.scorer import Predictions, Scorer
from dscloud.server.metrics import RolloutSeries
from dscloud.server.protocols import Batch
from dscloud.server.rollout_counts import RolloutCounts
from dscloud.settings import Settings

__all__ = [
    "BACKGROUND",
    "REQUEST_ID_HEADER",
    "ROUTE_KEY_HEADER",
    "TRIAL_BOOKKEEPING",
    "Budget",
    "RequestIds",
    "ServerRollouts",
    "Trial",
]

log = logging.getLogger("dscloud.server.rollout")

#: The header carrying the canary routing key.
ROUTE_KEY_HEADER = "x-dsc-route-key"
#: The header carrying the request id, in and out.
REQUEST_ID_HEADER = "x-request-id"
#: Comparisons of large bodies running on worker threads at once, per process.
BACKGROUND = 2
#: What a compared request costs a server besides the calls it times: the trial, the
#: timing of the answering call, holding the request, and what all of it does to the
#: caches of the request path around it. Measured in a server over sockets
#: (``bench/serve.py --rollout-cost``: a 20% canary's CPU per request less the same
#: canary's never compared): charged 5 µs, comparing took 1.1% of the server's time
#: against a 0.5% share, some 19 µs a comparison of which the trials time 4; charged
#: 15 µs, it takes 0.25 to 0.55%. Charged to the :class:`Budget` with every comparison, so
#: that the budget bounds the whole cost. A slower machine spends somewhat more than the
#: budget, a faster one less.
TRIAL_BOOKKEEPING = 15e-6
_MAX_ID = 128


class RequestIds:
    """The request id of each scoring request (see the module docstring)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._count = itertools.count(1)

    def of(self, given: str | None) -> str:
        """``given`` when it is a usable id, else a new one unique to this process."""
        if given and len(given) <= _MAX_ID and given.isascii() and given.isprintable():
            return given
        return f"{self._prefix}-{next(self._count):x}"


class Trial:
    """One request's part in a rollout: the version that answers, the other one, and what
    the answering call did, for the comparison after the answer is sent."""

    __slots__ = (
        "answer",
        "answerer",
        "batch",
        "budget",
        "by_candidate",
        "encoded",
        "followed",
        "held",
        "other",
        "other_seconds",
        "seconds",
    )

    def __init__(
        self, followed: RolloutCounts, answerer: Scorer, other: Scorer, *, by_candidate: bool
    ) -> None:
        self.followed = followed
        self.answerer, self.other, self.by_candidate = answerer, other, by_candidate
        self.batch: Batch | None = None
        self.encoded: Encoded | None = None
        self.answer: Predictions | None = None
        self.seconds = 0.0
        # The other version's time on this request's own feeds, when a held request was
        # timed (see score()); None otherwise.
        self.other_seconds: float | None = None
        #: Where the comparison's time is spent, for a canary (:class:`Budget`).
        self.budget: Budget | None = None
        #: True when the request is held for the other version's call with others.
        self.held = False

    def score(self, batch: Batch) -> Predictions:
        """The answering version's predictions for ``batch`` (what the request answers);
        raises what :meth:`Scorer.score_columns` raises, remembering that it failed.

        When the two versions build the same feeds (``RolloutCounts.feeds_like``): a
        one-row request (:attr:`Encoded.shared` feeds) is held, and both versions score it
        with the other held rows, one call each (:meth:`RolloutCounts.hold`; one in
        :data:`~dscloud.server.rollout_counts.TIMED_EVERY` is also run here by the other
        version, alone, to time it); other requests keep their feeds for the other
        version's one call in :meth:`compare`, without a second validation."""
        self.batch = batch
        encoded = self.answerer.encode(batch.columns, batch.n_rows)
        started = time.perf_counter()
        try:
            self.answer = self.answerer.score_encoded(encoded)
        finally:
            self.seconds = time.perf_counter() - started
        if self.followed.feeds_like:
            if encoded.shared:
                self.held = True
                if self.followed.times_other():
                    _, self.other_seconds = self._run_other(encoded, batch)
            else:
                self.encoded = encoded
        return self.answer

    def _run_other(self, encoded: Encoded | None, batch: Batch) -> tuple[Predictions | None, float]:
        """The other version's predictions for the same rows (None: its call failed), from
        the answering call's feeds when it has them, else from the rows, and its time."""
        started = time.perf_counter()
        try:
            other: Predictions | None = (
                self.other.score_encoded(encoded)
                if encoded is not None
                else self.other.score_columns(batch.columns, batch.n_rows)
            )
        except Exception:
            if not self.by_candidate:
                _failed(self.followed, "the candidate's shadow call failed")
            other = None
        return other, time.perf_counter() - started

    def compare(self) -> None:
        """Score the same rows with the other version and count both, or hold a one-row
        request for the other version's call with others (see :meth:`score`). Never
        raises: the request was answered already, and a comparison must not take the
        server down."""
        batch, followed = self.batch, self.followed
        if batch is None or (self.answer is None and not self.by_candidate):
            return  # nothing decoded (bad body), or the serving version failed: no pair
        started = time.perf_counter()
        try:
            if self.held:  # score() holds a request only once it was answered
                followed.hold(
                    batch, (self.seconds, self.other_seconds), by_candidate=self.by_candidate
                )
                return
            other, seconds = self._run_other(self.encoded, batch)
            if self.by_candidate:
                current, candidate, times = other, self.answer, (seconds, self.seconds)
            else:
                current, candidate, times = self.answer, other, (self.seconds, seconds)
            if current is None:
                return  # the serving version failed on the canary's rows: nothing to hold to
            followed.add(current, candidate, batch, times)
        except Exception:
            _failed(followed, "comparing the two versions failed")
        finally:
            if self.budget is not None:
                # what it timed here, the other version's call timed in score(), and the
                # bookkeeping around both, which is not timed
                spent = time.perf_counter() - started + (self.other_seconds or 0.0)
                self.budget.spend(spent + TRIAL_BOOKKEEPING)


def _failed(followed: RolloutCounts, what: str) -> None:
    followed.failures += 1
    # Once per rollout and process; a failed candidate call is also counted as its errors.
    if followed.failures == 1:
        log.warning(
            "%s (rollout %s of %s@%s)",
            what,
            followed.rollout.id,
            followed.name,
            followed.alias,
            exc_info=True,
        )


class Budget:
    """The time a canary's comparisons may take: ``share`` of the process's time, in a
    bucket that fills with ``share`` of every second that passes, up to ``burst`` seconds,
    and empties by what each comparison cost (the other version's call, the counting and
    :data:`TRIAL_BOOKKEEPING`).

    A canary answers its part of the traffic with the candidate anyway; comparing those
    requests costs the serving version's scoring too (some 19 µs a one-row request in a
    server, every cost counted). While comparing all of them takes less than ``share`` of
    the time, the bucket never empties and every such request is compared (a 20% canary
    of one-row requests at the default 0.5%: until the process is about a fifth busy); a
    busier process compares some 260 requests a second, as many as ``share`` of its time
    allows, and counts the others as skipped (``dsc_rollout_skipped_total``), so comparing
    costs a saturated process about ``share`` of its throughput and no more (measured:
    ``bench/serve.py --rollout-cost``). Approximate across threads by design: a race
    spends a comparison twice or not at all, never blocks a request."""

    def __init__(
        self,
        share: float,
        *,
        burst: float = 0.005,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.share, self.burst, self._clock = share, burst, clock
        self._tokens = burst if share else 0.0  # 0: nothing is ever compared
        self._at = clock()

    def allows(self) -> bool:
        """Whether a comparison may start now (the clock is read only when the bucket
        looks empty: it is filled up to now by every :meth:`spend`)."""
        if self._tokens > 0:
            return True
        self._fill()
        return self._tokens > 0

    def spend(self, seconds: float) -> None:
        """Take what a comparison cost, once the bucket is filled up to now."""
        self._fill()
        self._tokens -= seconds

    def _fill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.share)
        self._at = now


class _Plan:
    """What one poll's rollout decides per request for one live model (see
    :meth:`ServerRollouts.pick`)."""

    __slots__ = ("candidate", "followed", "following", "routes", "serving", "shadow")

    def __init__(
        self,
        following: tuple[Rollout, Scorer],
        serving: Scorer,
        followed: RolloutCounts | None,
        routes: Callable[[str], bool],
    ) -> None:
        self.following, self.serving, self.followed, self.routes = (
            following,
            serving,
            followed,
            routes,
        )
        self.candidate = following[1]
        self.shadow = following[0].mode == "shadow"


class ServerRollouts:
    """The rollouts one server process follows (see the module docstring)."""

    def __init__(
        self,
        archive: Archive,
        *,
        window_seconds: float,
        compare_share: float = Settings.rollout_compare_share,
        clock: Callable[[], float] = time.monotonic,
        budget_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.archive = archive
        self.window_seconds = window_seconds
        self._clock = clock
        self._last = clock()
        self._followed: dict[tuple[str, str, int], RolloutCounts] = {}
        self._plans: dict[int, _Plan] = {}  # by id() of the live model
        #: What canary comparisons may cost this process (shadow is compared in full).
        self.budget = Budget(compare_share, clock=budget_clock)
        self._lock = threading.Lock()
        self._background = 0
        self.by = f"dsc serve on {socket.gethostname()} (pid {os.getpid()})"

    # -- the request path -----------------------------------------------------------------

    def pick(
        self, live: LiveModel, serving: Scorer, key: str | None
    ) -> tuple[Scorer, Trial | None]:
        """The scorer that answers a request with routing ``key`` (None: the request is
        pinned to ``serving``, the version it named), and its :class:`Trial` when the
        request is compared; ``(serving, None)`` without a rollout.

        What a rollout decides per request is prepared once per poll (:class:`_Plan`): a
        request compares two identities, then hashes its key."""
        following = live.following
        if following is None:
            return serving, None
        plan = self._plans.get(id(live))
        if plan is None or plan.following is not following or plan.serving is not serving:
            plan = self._plan(live, serving, following)
        if plan.followed is None:
            return serving, None
        if plan.shadow:
            return serving, Trial(plan.followed, serving, plan.candidate, by_candidate=False)
        if key is not None and plan.routes(key):
            if not self.budget.allows():
                plan.followed.skipped += 1
                return plan.candidate, None
            trial = Trial(plan.followed, plan.candidate, serving, by_candidate=True)
            trial.budget = self.budget
            return plan.candidate, trial
        return serving, None

    def _plan(self, live: LiveModel, serving: Scorer, following: tuple[Rollout, Scorer]) -> _Plan:
        rollout, candidate = following
        alias, current = live.ref.alias, serving.version
        followed = None
        # Not compared: an alias-less reference, or a candidate promoted between two reads
        # of the poller's attributes.
        if alias is not None and current is not None and candidate.version != current:
            followed = self._for(serving, current, candidate, alias, rollout)
        plan = _Plan(following, serving, followed, rollout.router(serving.name, alias or ""))
        self._plans[id(live)] = plan
        return plan

    async def in_background(self, trial: Trial) -> None:
        """Compare ``trial`` (a body over :data:`~dscloud.server.app.INLINE_BYTES`) once its
        answer was sent, on a worker thread when one of :data:`BACKGROUND` is free, else
        skip it and count it. Smaller bodies are compared inline, :meth:`Trial.compare`
        right after the answer."""
        if self._background >= BACKGROUND:
            trial.followed.skipped += 1
            return
        self._background += 1  # event loop only: no lock
        try:
            await run_in_threadpool(trial.compare)
        finally:
            self._background -= 1

    def _for(
        self, serving: Scorer, current: int, candidate: Scorer, alias: str, rollout: Rollout
    ) -> RolloutCounts:
        key = (serving.name, rollout.id, current)
        followed = self._followed.get(key)
        if followed is None:
            with self._lock:
                followed = self._followed.get(key)
                if followed is None:
                    followed = self._followed[key] = RolloutCounts(
                        alias, rollout, (serving, candidate), current
                    )
        return followed

    # -- the poller thread ----------------------------------------------------------------

    def tick(self, models: Iterable[LiveModel]) -> None:
        """Once a window has passed: record each rollout's window and judge its totals
        (see the module docstring). Called after every alias poll; never raises for an
        archive that cannot be written (the window's counts go into the next record)."""
        now = self._clock()
        if now - self._last < self.window_seconds:
            return
        self._last = now
        running = {
            (m.scorer.name, m.following[0].id): m.following[0]
            for m in models
            if m.following is not None
        }
        for key, followed in list(self._followed.items()):
            latest = running.get((followed.name, followed.rollout.id))
            if latest is not None:
                followed.rollout = latest  # thresholds may have changed (same id)
            self._close_window(followed, judge=latest is not None)
            if latest is None:  # the rollout ended or the serving version moved
                with self._lock:
                    self._followed.pop(key, None)

    def flush(self) -> None:
        """Record every open window now, without judging (at shutdown, once the poller
        stopped: the last window of a process is not lost)."""
        for followed in list(self._followed.values()):
            self._close_window(followed, judge=False)

    def _close_window(self, followed: RolloutCounts, *, judge: bool) -> None:
        window = followed.take_window()
        if followed.unrecorded is not None:
            window, followed.unrecorded = followed.unrecorded + window, None
        try:
            if window.versions["current"].rows or window.versions["candidate"].rows:
                try:
                    record_comparison(
                        self.archive,
                        followed.name,
                        followed.alias,
                        followed.rollout,
                        window,
                        by=self.by,
                    )
                except Exception:
                    followed.unrecorded = window
                    raise
            if not judge or followed.aborted:
                return
            figures = followed.figures()
            aborted = guard(
                self.archive,
                followed.name,
                followed.alias,
                followed.rollout,
                figures,
                by=f"guard rail ({self.by})",
            )
        except Exception:
            log.warning(
                "could not record or judge rollout %s of %s@%s; trying again next window",
                followed.rollout.id,
                followed.name,
                followed.alias,
                exc_info=True,
            )
            return
        if followed.rollout.thresholds.breaches(figures):
            followed.aborted = True  # by us or by another process: either way, it is over
        if aborted is not None:
            log.warning(
                "aborted rollout %s of %s@%s: %s",
                followed.rollout.id,
                followed.name,
                followed.alias,
                aborted.get("why"),
                extra={"model": followed.name, "figures": figures},
            )

    # -- what the server shows ------------------------------------------------------------

    def series(self) -> list[RolloutSeries]:
        """Each compared rollout's labels, figures and skipped count, for ``/metrics``."""
        return [
            (f.labels(), f.figures(), f.skipped)
            for f in sorted(self._followed.values(), key=lambda f: f.labels())
        ]

    def describe(self, live: LiveModel) -> dict[str, Any] | None:
        """The rollout of ``live``'s alias for its metadata: the record, whether the
        candidate answers (None when there is no rollout), and this process's comparison."""
        following = live.following
        if following is None:
            if live.rollout_error is None:
                return None
            return {"candidate_ready": False, "error": live.rollout_error}
        rollout = following[0]
        found = [
            f for f in self._followed.values() if f.rollout.id == rollout.id and f.name == live.name
        ]
        return {
            "candidate_ready": True,
            **rollout.to_dict(),
            "comparison": found[0].figures() if found else None,
        }
