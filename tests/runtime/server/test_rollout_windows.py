"""The server's rollout bookkeeping in process, with an injected clock, against both stores:
routing, the comparison of a trial, windows recorded once per interval, counts kept when
the archive cannot be written, one abort per rollout, request ids."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from dscloud import example, rollout
from dscloud.archive import Archive
from dscloud.live import LiveModel
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import comparison
from dscloud.scorer import Scorer
from dscloud.server.protocols import Batch
from dscloud.server.rollout import (
    BACKGROUND,
    TRIAL_BOOKKEEPING,
    Budget,
    RequestIds,
    ServerRollouts,
)
from dscloud.server.rollout_counts import PENDING, TIMED_EVERY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch_of(rows: list[dict[str, Any]]) -> Batch:
    return Batch(columns={c: [r[c] for r in rows] for c in example.FEATURES}, n_rows=len(rows))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    frame = example.churn_data(200, seed=7)[example.FEATURES].dropna()
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def served(archive: Archive, clock: Clock) -> tuple[LiveModel, ServerRollouts]:
    live = LiveModel(archive, "churn@production")
    return live, ServerRollouts(archive, window_seconds=60, clock=clock)


def shadowed(archive: Archive) -> tuple[LiveModel, ServerRollouts, Scorer]:
    """A shadow rollout of version 2 followed by one process, and its candidate."""
    rollout.start(archive, "churn", "production", 2, mode="shadow")
    live, rollouts = served(archive, Clock())
    assert live.following is not None
    return live, rollouts, live.following[1]


def compare(live: LiveModel, rollouts: ServerRollouts, batch: Batch, key: str | None) -> Scorer:
    """One request as the server handles it; returns the scorer that answered."""
    scorer, trial = rollouts.pick(live, live.scorer, key)
    if trial is not None:
        trial.score(batch)
        trial.compare()
    return scorer


def records(archive: Archive, event: str) -> list[dict[str, Any]]:
    return [r for r in archive.audit("churn") if r["event"] == event]


def test_a_shadow_window_is_recorded_once_per_interval(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    # given a shadow rollout followed by one process
    started = rollout.start(rollout_archive, "churn", "production", 2, mode="shadow")
    clock = Clock()
    live, rollouts = served(rollout_archive, clock)
    # when requests are compared and the window has not passed
    for i in range(0, 40, 10):
        assert compare(live, rollouts, batch_of(rows[i : i + 10]), f"k{i}").version == 1
    rollouts.tick([live])
    assert records(rollout_archive, "rollout-compare") == []
    # then once it has, the window is recorded, and nothing more without traffic
    clock.now += 61
    rollouts.tick([live])
    clock.now += 61
    rollouts.tick([live])
    (record,) = records(rollout_archive, "rollout-compare")
    assert record["rollout_id"] == started.id and record["counts"]["rows_compared"] == 40
    merged = comparison(rollout_archive, "churn", "production", started)
    assert merged is not None and merged.figures() == rollouts.series()[0][1]
    assert record["by"].startswith("dsc serve on ")


def test_counts_an_archive_did_not_take_go_into_the_next_record(
    rollout_archive: Archive, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = rollout.start(rollout_archive, "churn", "production", 2, mode="shadow")
    clock = Clock()
    live, rollouts = served(rollout_archive, clock)
    compare(live, rollouts, batch_of(rows[:10]), None)
    # given an archive that refuses one write
    real = rollout_archive.record_event
    failures = iter([OSError("the bucket is away")])

    def flaky(*args: Any, **kwargs: Any) -> dict[str, Any]:
        for exc in failures:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(rollout_archive, "record_event", flaky)
    clock.now += 61
    rollouts.tick([live])  # fails, logged, not raised
    assert records(rollout_archive, "rollout-compare") == []
    # when the next window closes, its record holds both windows' rows
    compare(live, rollouts, batch_of(rows[10:15]), None)
    clock.now += 61
    rollouts.tick([live])
    merged = comparison(rollout_archive, "churn", "production", started)
    assert merged is not None and merged.rows_compared == 15


def test_a_breach_aborts_once_and_the_rollout_is_then_dropped(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    # given rows the candidate disagrees on, and a rollout allowing no disagreement
    current, candidate = (
        Scorer(rollout_archive.load("churn@1")),
        Scorer(rollout_archive.load("churn@2")),
    )
    ours, theirs = current.score_records(rows).label, candidate.score_records(rows).label
    assert ours is not None and theirs is not None
    differ = [r for r, a, b in zip(rows, ours, theirs, strict=True) if a != b]
    assert differ
    thresholds = rollout.Thresholds(max_disagreement=0.0, min_rows=5)
    rollout.start(rollout_archive, "churn", "production", 2, mode="shadow", thresholds=thresholds)
    clock = Clock()
    live, rollouts = served(rollout_archive, clock)
    # when a window with them closes, twice (the poller has not dropped it yet)
    compare(live, rollouts, batch_of((differ * 5)[:5]), None)
    for _ in range(2):
        clock.now += 61
        rollouts.tick([live])
    # then one abort, with the figures, and the rollout is gone from the alias
    (abort,) = records(rollout_archive, "rollout-abort")
    assert abort["by"].startswith("guard rail (dsc serve on ")
    assert abort["figures"]["disagreements"] == 5
    assert rollout.status(rollout_archive, "churn", "production")[1] is None
    # and once the poller drops the candidate, the process stops tracking the rollout
    live.refresh()
    assert live.following is None
    clock.now += 61
    rollouts.tick([live])
    assert rollouts.series() == []
    assert rollouts.pick(live, live.scorer, "k")[1] is None


def test_a_canary_compares_only_the_requests_its_candidate_answered(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    started = rollout.start(rollout_archive, "churn", "production", 2, mode="canary", share=0.5)
    clock = Clock()
    live, rollouts = served(rollout_archive, clock)
    keys = [f"user-{i}" for i in range(40)]
    answered = [compare(live, rollouts, batch_of(rows[:1]), key).version for key in keys]
    picked = [started.answers("churn", "production", k) for k in keys]
    assert answered == [2 if p else 1 for p in picked]
    # a pinned request (no key) is never routed
    assert compare(live, rollouts, batch_of(rows[:1]), None).version == 1
    figures = rollouts.series()[0][1]
    assert figures["rows_compared"] == sum(picked)
    assert figures["versions"]["current"]["rows"] == sum(picked)
    # every answering call is timed; the serving version's on one held request in 32
    assert figures["versions"]["candidate"]["calls"] == sum(picked)
    assert figures["versions"]["current"]["calls"] == -(-sum(picked) // TIMED_EVERY)


class _FallenOver:
    """An ONNX Runtime session whose every call fails."""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("onnxruntime fell over")


@pytest.mark.parametrize("n", [1, 4], ids=["one row, run before the answer", "four rows"])
def test_a_failing_candidate_counts_as_its_errors_and_never_raises(
    rollout_archive: Archive, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    rollout.start(rollout_archive, "churn", "production", 2, mode="shadow")
    live, rollouts = served(rollout_archive, Clock())
    assert live.following is not None
    monkeypatch.setattr(live.following[1], "session", _FallenOver())
    scorer, trial = rollouts.pick(live, live.scorer, None)
    assert trial is not None
    preds = trial.score(batch_of(rows[:n]))
    trial.compare()
    assert scorer.version == 1 and len(preds) == n
    figures = rollouts.series()[0][1]
    assert figures["versions"]["candidate"]["errors"] == n
    assert figures["versions"]["candidate"]["error_rate"] == 1.0


def test_large_comparisons_beyond_the_background_limit_are_skipped(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    rollout.start(rollout_archive, "churn", "production", 2, mode="shadow")
    live, rollouts = served(rollout_archive, Clock())

    async def run() -> None:
        _, trial = rollouts.pick(live, live.scorer, None)
        assert trial is not None
        trial.score(batch_of(rows[:3]))
        await rollouts.in_background(trial)  # a free worker: compared
        rollouts._background = BACKGROUND  # every worker busy
        await rollouts.in_background(trial)

    asyncio.run(run())
    ((_, figures, skipped),) = rollouts.series()
    assert figures["rows_compared"] == 3 and skipped == 1


def test_request_ids_are_the_clients_when_usable_else_made_unique() -> None:
    ids = RequestIds()
    assert ids.of("abc-123") == "abc-123"
    made = {ids.of(bad) for bad in (None, "", "x" * 129, "caf\u00e9", "a\nb") for _ in range(3)}
    assert len(made) == 15 and all("-" in m and m.isascii() for m in made)
    assert ids.of("x" * 128) == "x" * 128


def test_requests_counted_together_give_the_figures_of_one_by_one(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    # given requests of several sizes, some with rows both versions refuse
    live, rollouts, candidate = shadowed(rollout_archive)
    one_by_one = Comparison(1, 2)
    start = 0
    for i in range(PENDING + 7):  # one full stack of held requests and some more
        size = 1 + i % 4
        chunk = [dict(r) for r in rows[start : start + size]]
        start = (start + size) % (len(rows) - 4)
        if i % 9 == 0:
            chunk[-1]["age"] = "ten"
        batch = batch_of(chunk)
        compare(live, rollouts, batch, None)
        one_by_one.add(
            live.scorer.score_columns(batch.columns, batch.n_rows),
            candidate.score_columns(batch.columns, batch.n_rows),
            inputs=chunk,
        )
    # then everything but the latencies is the same
    got, want = rollouts.series()[0][1], one_by_one.figures()
    for figures in (got, want):
        for role in figures["versions"].values():
            role.pop("latency_ms")
            role.pop("calls")
    assert got == want
    assert want["versions"]["current"]["errors"] > 0 and want["disagreements"] > 0


class _Counting:
    """A session wrapper that counts calls."""

    def __init__(self, session: Any) -> None:
        self.session, self.calls = session, 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.session.run(*args, **kwargs)


def rolled_out(
    archive: Archive, mode: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[LiveModel, ServerRollouts, dict[int | None, _Counting], Scorer, Scorer]:
    """A shadow, or a canary answering everyone, of the retrained churn, followed by one
    process whose sessions count their calls; and the answering and the other version."""
    share = {"share": 1.0} if mode == "canary" else {}
    rollout.start(archive, "churn", "production", 2, mode=mode, **share)
    live, rollouts = served(archive, Clock())
    assert live.following is not None
    serving, candidate = live.scorer, live.following[1]
    sessions = {v.version: _Counting(v.session) for v in (serving, candidate)}
    for scorer in (serving, candidate):
        monkeypatch.setattr(scorer, "session", sessions[scorer.version])
    answering, other = (serving, candidate) if mode == "shadow" else (candidate, serving)
    return live, rollouts, sessions, answering, other


def no_validation(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the other version validated a request's rows again")


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_a_many_row_request_costs_the_other_version_one_call_and_no_validation(
    rollout_archive: Archive,
    rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    # given a rollout whose two versions build the same feeds (a retrained churn)
    live, rollouts, sessions, _, other = rolled_out(rollout_archive, mode, monkeypatch)
    monkeypatch.setattr(other, "encode", no_validation)
    monkeypatch.setattr(other, "score_columns", no_validation)

    # when one 30-row request is answered and compared
    answered = compare(live, rollouts, batch_of(rows[:30]), "user-1")

    # then each version ran one session call, and the pair was counted
    assert answered.version == (1 if mode == "shadow" else 2)
    assert {v: s.calls for v, s in sessions.items()} == {1: 1, 2: 1}
    assert rollouts.series()[0][1]["rows_compared"] == 30


@pytest.mark.parametrize("mode", ["shadow", "canary"])
def test_one_row_requests_are_scored_by_the_other_version_together(
    rollout_archive: Archive,
    rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    # given a rollout whose two versions build the same feeds
    live, rollouts, sessions, answering, other = rolled_out(rollout_archive, mode, monkeypatch)
    serving, candidate = (answering, other) if mode == "shadow" else (other, answering)
    n = TIMED_EVERY + 8

    # when one-row requests are answered, the other version validates none of them
    monkeypatch.setattr(other, "encode", no_validation)
    for i in range(n):
        assert compare(live, rollouts, batch_of(rows[i : i + 1]), f"user-{i}") is answering
    # and calls its session only to time one request in TIMED_EVERY
    assert sessions[answering.version].calls == n
    assert sessions[other.version].calls == 2

    # then, counted, both versions scored the held rows in one call each...
    monkeypatch.delattr(other, "encode")  # validating the held rows together is allowed
    figures = rollouts.series()[0][1]
    assert sessions[answering.version].calls == n + 1
    assert sessions[other.version].calls == 3
    role = {"shadow": "candidate", "canary": "current"}[mode]
    assert figures["versions"][role]["calls"] == 2  # the two timed requests
    # ...with the figures of one comparison of the two versions on those rows
    together = batch_of(rows[:n])
    want = Comparison(1, 2)
    want.add(
        serving.score_columns(together.columns, n),
        candidate.score_columns(together.columns, n),
        inputs=rows[:n],
    )
    for key in ("rows_compared", "disagreements", "delta", "largest"):
        assert figures[key] == want.figures()[key], key


def test_versions_with_other_feeds_each_validate_the_rows(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    # given a candidate whose schema validates otherwise (a column's nullability differs)
    live, rollouts, candidate = shadowed(rollout_archive)
    columns = list(candidate.schema.columns)
    columns[0] = dataclasses.replace(columns[0], nullable=not columns[0].nullable)
    other = dataclasses.replace(candidate.schema, columns=tuple(columns))
    assert not live.scorer.schema.feeds_like(other)
    candidate.schema = other

    # when a request is compared, then the candidate scores from the rows, and agrees
    compare(live, rollouts, batch_of(rows[:5]), "user-1")
    figures = rollouts.series()[0][1]
    assert figures["rows_compared"] == 5 and figures["versions"]["candidate"]["errors"] == 0


def test_a_saturated_canary_compares_what_its_budget_allows_and_counts_the_rest(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    # given a canary answering everyone, and a process whose clock stands still (saturated:
    # no time passes for the budget to refill)
    rollout.start(rollout_archive, "churn", "production", 2, mode="canary", share=1.0)
    live, rollouts = served(rollout_archive, Clock())
    frozen = Clock()
    rollouts.budget = Budget(share=0.01, burst=0.0005, clock=frozen)

    # when more requests arrive than half a millisecond of comparisons covers
    answered = [compare(live, rollouts, batch_of(rows[:1]), f"user-{i}") for i in range(300)]

    # then the candidate still answers every one; some are compared, the rest are counted
    assert {s.version for s in answered} == {2}
    _, figures, skipped = rollouts.series()[0]
    assert 0 < figures["rows_compared"] < 300 and figures["rows_compared"] + skipped == 300

    # and once time has passed, comparisons resume
    frozen.now += 1.0  # 10 ms of comparisons at 1%
    compare(live, rollouts, batch_of(rows[:1]), "user-x")
    assert rollouts.series()[0][1]["rows_compared"] == figures["rows_compared"] + 1


def test_a_canarys_budget_is_charged_the_whole_comparison(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    # given a canary answering everyone, whose budget records what it is charged
    rollout.start(rollout_archive, "churn", "production", 2, mode="canary", share=1.0)
    live, rollouts = served(rollout_archive, Clock())
    charged: list[float] = []

    class Recording(Budget):
        def spend(self, seconds: float) -> None:
            charged.append(seconds)

    rollouts.budget = Recording(0.01)

    # when one-row requests are compared: the first one has the serving version timed
    trials = []
    for i in range(3):
        _, trial = rollouts.pick(live, live.scorer, f"user-{i}")
        assert trial is not None
        trial.score(batch_of(rows[:1]))
        trial.compare()
        trials.append(trial)

    # then each comparison is charged its bookkeeping, which it does not time, and the
    # first also the serving version's call it timed while answering
    assert trials[0].other_seconds is not None and trials[1].other_seconds is None
    assert charged[0] >= TRIAL_BOOKKEEPING + trials[0].other_seconds
    assert all(c >= TRIAL_BOOKKEEPING for c in charged) and len(charged) == 3


def test_a_shadow_is_compared_in_full_whatever_the_budget(
    rollout_archive: Archive, rows: list[dict[str, Any]]
) -> None:
    rollout.start(rollout_archive, "churn", "production", 2, mode="shadow")
    live, rollouts = served(rollout_archive, Clock())
    rollouts.budget = Budget(share=0.01, burst=0.0, clock=Clock())
    for i in range(50):
        compare(live, rollouts, batch_of(rows[:1]), f"user-{i}")
    _, figures, skipped = rollouts.series()[0]
    assert figures["rows_compared"] == 50 and skipped == 0
