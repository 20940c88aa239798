"""Score one shard of a run, or every shard of it in a local process pool.

A shard plans (deterministically, see :mod:`dscloud.batch.plan`), loads and verifies the
model once, streams its units chunk by chunk through the one scoring core, writes
predictions and rejects to temporary files, publishes them, writes its manifest, and
writes the run's ``_SUCCESS`` if it was the last shard to finish. A run of an alias with a
rollout scores every chunk with both versions (:mod:`dscloud.batch.following`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import posixpath
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    FIRST_EXCEPTION,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, replace
from typing import Any, TextIO

from dscloud.archive import Archive, Ref
from dscloud.baseline import Baseline
from dscloud.batch import formats
from dscloud.batch.allocator import keep_freed_memory
from dscloud.batch.counting import count_chunk
from dscloud.batch.following import (
    CANDIDATE_COLUMNS,
    Candidate,
    Follower,
    Following,
    Scored,
    guard_run,
    open_candidate,
    pin,
)
from dscloud.batch.formats import Chunk, list_inputs
from dscloud.batch.lifeline import die_with
from dscloud.batch.locations import Location
from dscloud.batch.manifest import (
    SUCCESS,
    ShardManifest,
    finalize,
    manifest_name,
    now,
    read_success,
    rollout_pin,
)
from dscloud.batch.metrics import MetricsTarget, publish_drift
from dscloud.batch.pipeline import Stage, prefetch
from dscloud.batch.plan import ShardPlan, WorkUnit
from dscloud.batch.progress import Progress
from dscloud.batch.reader import columns_for_scoring
from dscloud.batch.writer import (
    MODEL_COLUMNS,
    PartWriter,
    part_name,
    prediction_table,
    rejects_name,
    rejects_table,
)
from dscloud.drift import DriftCounts
from dscloud.errors import ConfigError
from dscloud.scorer import Predictions, Scorer

__all__ = ["DEFAULT_KEY", "ScoreJob", "load_candidate", "plan_job", "run_local", "run_shard"]

log = logging.getLogger(__name__)

DEFAULT_KEY = "user_id"
DEFAULT_CHUNK_ROWS = 100_000

#: ``report(rows_done, rows_rejected, rows_total_or_None)`` after every chunk.
Reporter = Callable[[int, int, int | None], None]


@dataclass(frozen=True)
class ScoreJob:
    """One batch-scoring run: which model, which input, where to, how many shards.

    ``keys`` None means ``user_id`` when the input has it, else no key columns (each output
    row then carries ``source_file`` and ``source_row``). A run that rejects more than
    ``max_rejected_share`` of its rows fails when it is finalized (see
    :mod:`dscloud.batch.manifest`). ``rollout`` False scores with the alias's serving
    version only, ignoring a rollout on it (``--no-rollout``); ``following`` is the rollout
    the run follows, pinned by :func:`pin_model` with the version.
    """

    model: str
    archive: str
    input: str
    output: str
    shard_count: int = 1
    keys: tuple[str, ...] | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    format: str | None = None
    s3_endpoint: str | None = None
    threads: int = 1
    log_seconds: float = 10.0
    max_rejected_share: float = 1.0
    #: Count drift against the model's baseline into the manifests (``--no-drift``: off).
    drift: bool = True
    #: Follow a rollout on the model's alias (``--no-rollout``: off).
    rollout: bool = True
    following: Following | None = None
    #: Where a completed run publishes its drift figures (None: nowhere, as in local runs).
    metrics: MetricsTarget | None = None

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError(f"--chunk-rows {self.chunk_rows}: expected at least 1")
        if self.format is not None:
            formats.named(self.format)  # raises ConfigError naming the known formats

    def location(self, uri: str) -> Location:
        return Location(uri, s3_endpoint=self.s3_endpoint)


def plan_job(job: ScoreJob) -> ShardPlan:
    """The plan of ``job``'s input over ``job.shard_count`` shards (lists, reads footers).

    Raises :class:`ConfigError` when the input holds no data files.
    """
    source = job.location(job.input)
    files = list_inputs(source, format=job.format)
    return ShardPlan.build(
        files,
        job.shard_count,
        footers=lambda f: formats.named(f.format).row_groups(source, f.path),
    )


def load_scorer(job: ScoreJob) -> Scorer:
    """The job's model, sha256-verified and golden-checked, ready to score."""
    return Scorer(Archive.open(job.archive).load(job.model), threads=job.threads)


def load_candidate(job: ScoreJob, serving: Scorer) -> Candidate | None:
    """The candidate of the rollout ``job`` follows, beside ``serving`` (or why it is
    refused); None without a rollout."""
    if job.following is None:
        return None
    return open_candidate(job.archive, job.following, serving, threads=job.threads)


def run_shard(
    job: ScoreJob,
    index: int,
    *,
    plan: ShardPlan | None = None,
    scorer: Scorer | None = None,
    candidate: Candidate | None = None,
    report: Reporter | None = None,
) -> ShardManifest:
    """Score shard ``index`` of ``job`` and publish its part, rejects and manifest.

    A shard whose manifest already records the same plan, model and rollout is not redone.
    Returns the shard's manifest. Raises :class:`ConfigError` for a bad input (missing
    columns, unknown keys) and :class:`~dscloud.errors.DataError` when data cannot be read
    or written; nothing is published for a shard that fails.
    """
    started, t0 = now(), time.perf_counter()
    keep_freed_memory()
    plan = plan if plan is not None else plan_job(job)
    units = plan.units_for(index)
    scorer = scorer if scorer is not None else load_scorer(job)
    model = {"ref": job.model, **scorer.identity.to_dict()}
    source, out = job.location(job.input), job.location(job.output)
    baseline = Baseline.of(scorer.envelope.data) if job.drift else None
    if job.following is not None and candidate is None:
        candidate = load_candidate(job, scorer)
    rollout = (
        job.following.record(refused=candidate.refused)
        if job.following is not None and candidate is not None
        else None
    )
    done = _completed(out, index, plan, model, rollout)
    if done is not None:
        log.info("shard %d of %d already complete; not redone", index, plan.count)
        _complete(job, out, plan, baseline)
        return done
    _forget_other_run(out, plan, model, rollout)
    _clean_temporaries(out, index, plan.count)

    keys = _keys(job, source, plan)
    features = scorer.schema.names
    follower = (
        Follower(job.following, scorer, candidate.scorer, keys=keys, features=features)
        if job.following is not None and candidate is not None and candidate.scorer is not None
        else None
    )
    columns = list(dict.fromkeys([*keys, *features]))
    known = [_unit_rows(source, u) for u in units]
    total = None if any(r is None for r in known) else sum(r or 0 for r in known)
    manifest = ShardManifest(
        shard_index=index,
        shard_count=plan.count,
        plan=plan.fingerprint,
        input=source.uri,
        model=model,
        units=[u.describe() for u in units],
        keys=keys,
        started_at=started,
    )
    repeating = ["label", *MODEL_COLUMNS, *(CANDIDATE_COLUMNS if follower is not None else ())]
    part = PartWriter(out, out.join(part_name(index, plan.count)), dictionary=repeating)
    rejects = PartWriter(out, out.join(rejects_name(index, plan.count)))
    # Drift counts of the accepted rows, touched only by the counting thread.
    counts = DriftCounts(baseline) if baseline is not None else None
    # Busy seconds per stage; the stages overlap, so they add up to more than the total.
    seconds = {"read": 0.0, "score": 0.0, "write": 0.0, "count": 0.0}

    def decoded() -> Iterator[tuple[Chunk, dict[str, Any]]]:
        for unit in units:
            fmt = formats.named(unit.format)
            chunks = fmt.chunks(source, unit, columns, scorer.schema, job.chunk_rows)
            while True:
                t = time.perf_counter()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                decoded = (
                    chunk.values
                    if chunk.values is not None
                    else columns_for_scoring(chunk.batch, scorer.schema)
                )
                seconds["read"] += time.perf_counter() - t
                yield chunk, decoded

    def write(chunk: Chunk, preds: Predictions, scored: Scored | None) -> None:
        t = time.perf_counter()
        if len(preds):
            if follower is not None and scored is not None:
                part.write(follower.table(chunk, scored))
            else:
                part.write(prediction_table(chunk, keys, preds))
        if preds.rejects:
            rejects.write(rejects_table(chunk, keys, features, preds.rejects))
        seconds["write"] += time.perf_counter() - t

    def count(chunk: Chunk, decoded_columns: dict[str, Any], preds: Predictions) -> None:
        t = time.perf_counter()
        assert counts is not None
        count_chunk(counts, chunk.batch, decoded_columns, preds)
        seconds["count"] += time.perf_counter() - t

    reader = ThreadPoolExecutor(1, thread_name_prefix="dsc-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="dsc-write")
    # Counting on its own thread, beside ONNX Runtime and the writer (numpy's comparisons
    # and bincount release the GIL), so that it adds little to the shard's time.
    counter = ThreadPoolExecutor(1, thread_name_prefix="dsc-count")
    pools = (reader, writer, counter)
    try:
        output = Stage(writer)
        counting = Stage(counter)
        for chunk, decoded_columns in prefetch(decoded(), reader):
            t = time.perf_counter()
            scored = follower.score(chunk, decoded_columns) if follower is not None else None
            preds = (
                scored.current
                if scored is not None
                else scorer.score_columns(decoded_columns, chunk.num_rows)
            )
            answer = scored.answer if scored is not None else preds
            seconds["score"] += time.perf_counter() - t
            output.submit(write, chunk, answer, scored)
            if counts is not None:
                # The drift of what the serving version saw, as in a run without a rollout.
                counting.submit(count, chunk, decoded_columns, preds)
            manifest.rows_in += chunk.num_rows
            manifest.rows_out += len(answer)
            manifest.rows_rejected += len(answer.rejects)
            if report is not None:
                report(manifest.rows_in, manifest.rows_rejected, total)
        output.drain()
        counting.drain()
        t = time.perf_counter()
        manifest.part = _relative(out, part.commit())
        manifest.rejects = _relative(out, rejects.commit())
        seconds["write"] += time.perf_counter() - t
    except BaseException:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
        part.abort()
        rejects.abort()
        raise
    finally:
        for pool in pools:
            pool.shutdown(wait=False)
    manifest.drift = counts.to_dict() if counts is not None else None
    if rollout is not None:
        comparison = follower.comparison.to_dict() if follower is not None else None
        manifest.rollout = {**rollout, "comparison": comparison}
    manifest.finished_at = now()
    seconds["total"] = time.perf_counter() - t0
    manifest.seconds = {k: round(v, 3) for k, v in seconds.items()}
    out.write_bytes(out.join(manifest_name(index, plan.count)), manifest.to_json())
    # After the manifest: a re-run finds the shard complete and never records it twice.
    if follower is not None:
        follower.record(job.archive)
    _complete(job, out, plan, baseline)
    return manifest


def _complete(job: ScoreJob, out: Location, plan: ShardPlan, baseline: Baseline | None) -> None:
    """Write the run's ``_SUCCESS`` if every shard is done: judging the rollout's guard rail
    once, and publishing its drift metrics first when ``job.metrics`` says where (the one
    place a run publishes them)."""
    target = job.metrics
    finalize(
        out,
        plan.count,
        require=False,
        max_rejected_share=job.max_rejected_share,
        baseline_of=lambda _: baseline,
        judge=guard_run(job.archive) if job.following is not None else None,
        publish_metrics=None if target is None else lambda run: publish_drift(run, target),
    )


def _relative(location: Location, path: str | None) -> str | None:
    return None if path is None else posixpath.relpath(path, location.path)


def _completed(
    out: Location,
    index: int,
    plan: ShardPlan,
    model: dict[str, Any],
    rollout: dict[str, Any] | None,
) -> ShardManifest | None:
    try:
        raw = out.read_bytes(out.join(manifest_name(index, plan.count)))
    except FileNotFoundError:
        return None
    try:
        previous = ShardManifest.from_json(raw)
    except (ValueError, TypeError):
        return None
    if previous.plan != plan.fingerprint or previous.model.get("sha256") != model["sha256"]:
        return None
    if rollout_pin(previous.rollout) != rollout_pin(rollout):
        return None
    published = [p for p in (previous.part, previous.rejects) if p]
    if not all(out.exists(out.join(p)) for p in published):
        return None
    return previous


def _forget_other_run(
    out: Location, plan: ShardPlan, model: dict[str, Any], rollout: dict[str, Any] | None
) -> None:
    """A ``_SUCCESS`` of a different run into this output is no longer true: remove it."""
    success = read_success(out)
    if success is None:
        return
    same = (
        success.get("plan") == plan.fingerprint
        and success.get("model", {}).get("sha256") == model["sha256"]
        and rollout_pin(success.get("rollout")) == rollout_pin(rollout)
    )
    if not same:
        out.delete(out.join(SUCCESS))


def _clean_temporaries(out: Location, index: int, count: int) -> None:
    """Delete temporary files an earlier, killed attempt at this shard left behind."""
    for final in (part_name(index, count), rejects_name(index, count)):
        for path in out.temporaries(out.join(final)):
            out.delete(path)


def _keys(job: ScoreJob, source: Location, plan: ShardPlan) -> list[str]:
    """The key columns: ``--key`` as given, else ``user_id`` if the first file has it."""
    if job.keys is not None:
        return list(job.keys)
    if not plan.units:
        return []
    first = plan.units[0]
    columns = formats.named(first.format).columns(source, first.path)
    return [DEFAULT_KEY] if DEFAULT_KEY in columns else []


def _unit_rows(source: Location, unit: WorkUnit) -> int | None:
    """Rows in ``unit`` when known without reading them (planned, or in a footer), else None."""
    if unit.rows is not None:
        return unit.rows
    return formats.named(unit.format).rows(source, unit.path)


# -- a local process pool --------------------------------------------------------------------

_shared: dict[str, Any] = {}


def _init_worker(
    done: Any, rejected: Any, totals: Any, environ: dict[str, str], parent: int
) -> None:
    die_with(parent)
    # A forkserver's children inherit its environment from when it started; take ours.
    os.environ.clear()
    os.environ.update(environ)
    _shared.update(done=done, rejected=rejected, totals=totals)


def _worker(job: ScoreJob, index: int, plan: ShardPlan) -> ShardManifest:
    scorer = _shared.get("scorer")
    if scorer is None:
        scorer = _shared["scorer"] = load_scorer(job)
    if "candidate" not in _shared:
        _shared["candidate"] = load_candidate(job, scorer)

    def report(done: int, rejected: int, total: int | None) -> None:
        _shared["done"][index] = done
        _shared["rejected"][index] = rejected
        _shared["totals"][index] = -1 if total is None else total

    return run_shard(
        job, index, plan=plan, scorer=scorer, candidate=_shared["candidate"], report=report
    )


def pin_model(job: ScoreJob) -> ScoreJob:
    """``job`` with its model alias resolved to a version, and the alias's rollout (unless
    ``job.rollout`` is off) pinned with it, so every shard scores with the same pair."""
    ref = Ref.parse(job.model)
    version, following = pin(Archive.open(job.archive), ref)
    if following is not None and not job.rollout:
        log.info("%s: not following its rollout (--no-rollout)", ref)
        following = None
    return replace(job, model=f"{ref.name}@{version}", following=following)


def _pool_context() -> Any:
    """Workers forked from a server process that imported numpy, pyarrow and ONNX Runtime
    once (about 0.3 s a worker saved), where available; else fresh interpreters. Never a
    plain fork of this process, whose reader and writer threads may hold locks."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def run_local(
    job: ScoreJob,
    *,
    workers: int,
    shards: Sequence[int] | None = None,
    stream: TextIO | None = None,
    tty: bool | None = None,
) -> list[ShardManifest]:
    """Run ``shards`` (default: all) of ``job`` on ``workers`` local processes.

    The model alias is resolved once, the plan is built once, and every shard's progress
    is shown as one bar. Returns the shards' manifests in index order; raises the first
    shard's error.
    """
    job = pin_model(job)
    plan = plan_job(job)
    indices = list(range(job.shard_count)) if shards is None else list(shards)
    progress = Progress(None, stream=stream, tty=tty, interval=job.log_seconds)
    if workers <= 1:
        scorer = load_scorer(job)
        candidate = load_candidate(job, scorer)
        finished: list[ShardManifest] = []
        base = {"done": 0, "rejected": 0}

        def report(done: int, rejected: int, total: int | None) -> None:
            progress.update(base["done"] + done, base["rejected"] + rejected)

        for i in indices:
            m = run_shard(job, i, plan=plan, scorer=scorer, candidate=candidate, report=report)
            base["done"] += m.rows_in
            base["rejected"] += m.rows_rejected
            finished.append(m)
        progress.close()
        return finished

    ctx = _pool_context()
    done = ctx.Array("q", job.shard_count, lock=False)
    rejected = ctx.Array("q", job.shard_count, lock=False)
    totals = ctx.Array("q", [-1] * job.shard_count, lock=False)
    with ProcessPoolExecutor(
        max_workers=min(workers, len(indices)) or 1,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(done, rejected, totals, dict(os.environ), os.getpid()),
    ) as pool:
        futures: list[Future[ShardManifest]] = [pool.submit(_worker, job, i, plan) for i in indices]
        pending: set[Future[ShardManifest]] = set(futures)
        while pending:
            finished_now, pending = wait(
                pending, timeout=progress.interval, return_when=FIRST_EXCEPTION
            )
            for f in finished_now:
                if f.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise f.exception()  # type: ignore[misc]
            total = None if any(totals[i] < 0 for i in indices) else sum(totals[i] for i in indices)
            progress.update(
                sum(done[i] for i in indices), sum(rejected[i] for i in indices), total=total
            )
        progress.close()
        return [f.result() for f in futures]
