"""The record of a run: one manifest per shard, and ``_SUCCESS`` once every shard is done.

Array-job children cannot talk to each other, so each shard, after publishing its part,
writes ``_manifests/shard-00003-of-00010.json`` (its commit record: units, part, rows
in/out/rejected, model, timings). It then lists ``_manifests/``: whoever finds all ``n``
present writes the run's ``_SUCCESS``. S3 lists are strongly consistent, so of the last
shards to finish at least one sees the others; if two do, both write the same summary.
``dsc score --finalize`` does the same on demand (for example as a dependent job) and
fails, naming the missing shards, if some have not finished.

A run that rejected more than its allowed share of rows (``DSC_MAX_REJECTED_SHARE``,
default one half) is not a success: ``_SUCCESS`` is not written, ``_FAILED`` holds the same
summary with ``"status": "failed"`` and the reason, and the shard (or ``--finalize``) that
found it exits non-zero. Tools that wait for ``_SUCCESS`` to exist then never start on an
output that is mostly rejects; the threshold is the finalizer's, so a re-run with a higher
one completes without re-scoring.

Each manifest carries the shard's drift counts (``"drift"``, :mod:`dscloud.drift`) when the
model has a training baseline; ``_SUCCESS`` adds them up and carries the run's drift
report (``"drift"``: PSI per feature and for the predictions, ranked), the same figures
one pass over every row would give. A job configured to publish them as CloudWatch metrics
(:mod:`dscloud.batch.metrics`) does so just before ``_SUCCESS`` is written and notes the
outcome in it (``"metrics"``).

``_SUCCESS`` refuses to appear when shards disagree on the plan (the input changed between
children), on the model (an alias moved mid-run) or on the rollout they followed (it
started, changed or ended mid-run): the message says which shards to re-run.

A run that followed a rollout (:mod:`dscloud.batch.following`) has ``"rollout"`` in every
manifest (the pinned rollout, ``refused`` when its candidate was not allowed to score, and
the shard's :meth:`Comparison.to_dict`); ``_SUCCESS`` carries the pinned rollout with the
run's merged figures (``comparison``: :meth:`Comparison.figures`; ``counts``: the merged
counts), and what the guard rail found (``breaches``, ``aborted``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from dscloud.baseline import Baseline
from dscloud.batch.locations import Location
from dscloud.drift import DriftCounts
from dscloud.errors import ConfigError, DataError
from dscloud.rollout_compare import Comparison

__all__ = [
    "FAILED",
    "SUCCESS",
    "Judge",
    "ShardManifest",
    "finalize",
    "manifest_name",
    "read_failure",
    "read_success",
    "rollout_pin",
]

SUCCESS = "_SUCCESS"
FAILED = "_FAILED"
MANIFESTS = "_manifests"
_NAME = re.compile(r"shard-(\d{5})-of-(\d{5})\.json$")


def manifest_name(index: int, count: int) -> str:
    return posixpath.join(MANIFESTS, f"shard-{index:05d}-of-{count:05d}.json")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ShardManifest:
    """What one shard did. Paths are relative to the output location."""

    shard_index: int
    shard_count: int
    plan: str
    input: str
    model: dict[str, Any]
    units: list[str] = field(default_factory=list)
    part: str | None = None
    rejects: str | None = None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    keys: list[str] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    #: :meth:`DriftCounts.to_dict` of the rows this shard scored; None without a baseline.
    drift: dict[str, Any] | None = None
    #: The rollout the run followed and this shard's comparison; None without one.
    rollout: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ShardManifest:
        return cls(**json.loads(raw))


def list_manifests(location: Location, count: int) -> dict[int, str]:
    """Paths of the shard manifests of a ``count``-shard run at ``location``, by index."""
    found: dict[int, str] = {}
    for info in location.files(location.join(MANIFESTS)):
        match = _NAME.search(info.path)
        if match is not None and int(match.group(2)) == count:
            found[int(match.group(1))] = info.path
    return found


def read_manifest(location: Location, path: str) -> ShardManifest:
    try:
        return ShardManifest.from_json(location.read_bytes(path))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{location.uri_of(path)}: not a shard manifest ({exc})") from exc


#: The training baseline of the model a run's manifests name (``{"name", "version", ...}``).
BaselineOf = Callable[[Mapping[str, Any]], Baseline | None]
#: The guard rail of a run that followed a rollout: called with the pinned rollout and the
#: run's merged comparison; returns what ``_SUCCESS`` adds under ``rollout``.
Judge = Callable[[Mapping[str, Any], Comparison], Mapping[str, Any]]

#: What every shard of a run must agree on about its rollout (thresholds may change).
_PINNED = ("name", "alias", "id", "candidate", "candidate_sha256", "mode", "share")


def rollout_pin(rollout: Mapping[str, Any] | None) -> str | None:
    """What identifies the rollout a shard followed (and whether its candidate scored), as
    comparable text; None for a shard that followed none."""
    if not rollout:
        return None
    pinned = {k: rollout.get(k) for k in _PINNED}
    pinned["refused"] = bool(rollout.get("refused"))
    return json.dumps(pinned, sort_keys=True)


#: Publishes a complete run's metrics from its summary; returns the note ``_SUCCESS`` keeps.
PublishMetrics = Callable[[Mapping[str, Any]], dict[str, Any]]


def finalize(
    location: Location,
    count: int,
    *,
    require: bool = True,
    max_rejected_share: float = 1.0,
    baseline_of: BaselineOf | None = None,
    judge: Judge | None = None,
    publish_metrics: PublishMetrics | None = None,
) -> dict[str, Any] | None:
    """Write ``_SUCCESS`` when all ``count`` shards have manifests; returns its content.

    With ``require`` False, returns None when shards are still missing (the last shard to
    finish writes it). ``baseline_of`` gives the model's baseline, to merge the shards'
    drift counts into the run's report (``"drift"``; None when it cannot). ``judge`` is the
    guard rail of a run that followed a rollout, called before ``_SUCCESS`` is written.
    ``publish_metrics`` is called with the summary of a complete run (not of a failed one)
    before ``_SUCCESS`` is written, and what it returns is kept as ``"metrics"``. Raises
    :class:`ConfigError` when shards are missing (``require``) or disagree on the plan or
    the model, and :class:`DataError` (after writing ``_FAILED``) when more than
    ``max_rejected_share`` of the run's rows were rejected.
    """
    # List first, read only once all are there: with 10,000 children, each of them
    # finishing would otherwise read every manifest written so far.
    paths = list_manifests(location, count)
    missing = [i for i in range(count) if i not in paths]
    if missing:
        if not require:
            return None
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise ConfigError(
            f"{location.uri}: {len(missing)} of {count} shards have not finished "
            f"(no manifest for shard {shown}); run them, then finalize again"
        )
    shards = [read_manifest(location, paths[i]) for i in range(count)]
    _agree(location, shards, "plan", lambda m: m.plan, "the input changed between shards")
    _agree(
        location,
        shards,
        "model",
        lambda m: m.model.get("sha256"),
        "the model alias moved during the run; pin a version (NAME@VERSION)",
    )
    _agree(
        location,
        shards,
        "rollout",
        lambda m: rollout_pin(m.rollout),
        "the alias's rollout started, changed or ended during the run; pin a version "
        "(NAME@VERSION) or pass --no-rollout",
    )
    first = shards[0]
    started = min(m.started_at for m in shards)
    finished = max(m.finished_at for m in shards)
    summary: dict[str, Any] = {
        "status": "complete",
        "input": first.input,
        "output": location.uri,
        "model": first.model,
        "plan": first.plan,
        "shard_count": count,
        "keys": first.keys,
        "rows": {
            "in": sum(m.rows_in for m in shards),
            "out": sum(m.rows_out for m in shards),
            "rejected": sum(m.rows_rejected for m in shards),
        },
        "parts": [{"path": m.part, "rows": m.rows_out} for m in shards if m.part],
        "rejects": [{"path": m.rejects, "rows": m.rows_rejected} for m in shards if m.rejects],
        "timings": {
            "started_at": started,
            "finished_at": finished,
            "wall_seconds": round(_seconds_between(started, finished), 3),
            "shard_seconds": round(sum(m.seconds.get("total", 0.0) for m in shards), 3),
        },
        "finalized_at": now(),
        "shards": [
            {
                "index": m.shard_index,
                "rows_in": m.rows_in,
                "rows_out": m.rows_out,
                "rows_rejected": m.rows_rejected,
                "seconds": m.seconds.get("total", 0.0),
            }
            for m in shards
        ],
        "drift": _drift(shards, baseline_of),
        "rollout": _rollout(shards, judge),
    }
    rows_in, rejected = summary["rows"]["in"], summary["rows"]["rejected"]
    share = rejected / rows_in if rows_in else 0.0
    summary["max_rejected_share"] = max_rejected_share
    if share > max_rejected_share:
        reason = (
            f"{rejected:,} of {rows_in:,} rows rejected ({share:.1%}), more than the allowed "
            f"{max_rejected_share:.1%} (DSC_MAX_REJECTED_SHARE / --max-rejected-share); "
            f"the reasons are in the rejects files under {location.uri}"
        )
        summary.update(status="failed", reason=reason)
        _write_summary(location, FAILED, summary)
        location.delete(location.join(SUCCESS))
        raise DataError(f"{location.uri}: run failed: {reason}")
    if publish_metrics is not None:
        summary["metrics"] = publish_metrics(summary)
    _write_summary(location, SUCCESS, summary)
    location.delete(location.join(FAILED))
    location.tidy()  # every shard is done: nothing is in flight
    return summary


def _write_summary(location: Location, name: str, summary: dict[str, Any]) -> None:
    location.write_bytes(location.join(name), (json.dumps(summary, indent=2) + "\n").encode())


def _drift(shards: list[ShardManifest], baseline_of: BaselineOf | None) -> dict[str, Any] | None:
    """The merged drift report of the shards, or None when one has no counts (a model
    without a baseline, or manifests written before drift counting)."""
    if baseline_of is None or any(m.drift is None for m in shards):
        return None
    baseline = baseline_of(shards[0].model)
    if baseline is None:
        return None
    merged = DriftCounts(baseline)
    for m in shards:
        assert m.drift is not None
        merged.merge(DriftCounts.from_dict(m.drift, baseline))
    return merged.report().to_dict()


def _rollout(shards: list[ShardManifest], judge: Judge | None) -> dict[str, Any] | None:
    """The run's rollout: the pinned rollout, merged figures and the guard rail's verdict."""
    first = shards[0].rollout
    if first is None:
        return None
    out = {k: v for k, v in first.items() if k != "comparison"}
    merged: Comparison | None = None
    for m in shards:
        raw = (m.rollout or {}).get("comparison")
        if raw:
            counts = Comparison.from_dict(raw)
            merged = counts if merged is None else merged + counts
    out["comparison"] = merged.figures() if merged is not None else None
    out["counts"] = merged.to_dict() if merged is not None else None
    if judge is not None and merged is not None:
        out.update(judge(first, merged))
    return out


def read_success(location: Location) -> dict[str, Any] | None:
    """The run summary in ``_SUCCESS``, or None when the run has not completed."""
    return _read_summary(location, SUCCESS)


def read_failure(location: Location) -> dict[str, Any] | None:
    """The summary of a run that failed its rejected-share check (``_FAILED``), or None."""
    return _read_summary(location, FAILED)


def _read_summary(location: Location, name: str) -> dict[str, Any] | None:
    """The run summary in ``name``, or None when there is none. Raises :class:`DataError`
    when the file is not JSON."""
    try:
        raw = location.read_bytes(location.join(name))
    except FileNotFoundError:
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{location.uri}/{name}: not a run summary ({exc})") from exc
    return data


def _agree(location: Location, shards: list[ShardManifest], what: str, key: Any, why: str) -> None:
    values: dict[Any, list[int]] = {}
    for m in shards:
        values.setdefault(key(m), []).append(m.shard_index)
    if len(values) > 1:
        groups = "; ".join(f"{v}: shards {ix[:10]}" for v, ix in values.items())
        raise ConfigError(
            f"{location.uri}: shards disagree on the {what} ({why}): {groups}. "
            "Re-run the shards in the minority, then finalize."
        )


def _seconds_between(start: str, end: str) -> float:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    try:
        return (parse(end) - parse(start)).total_seconds()
    except ValueError:
        return 0.0
