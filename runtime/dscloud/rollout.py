"""Rollouts: a candidate version behind an alias, in shadow or canary, then promoted or aborted.

A rollout lives in the alias record, as an optional ``rollout`` beside the version the alias
serves (records without one read as before)::

    {"version": 3, "sha256": "...", "set_by": "ana", "set_at": "...",
     "rollout": {"id": "...", "candidate": 4, "candidate_sha256": "...",
                 "mode": "shadow" | "canary", "share": 0.2,
                 "thresholds": {"max_error_rate": 0.01, "max_disagreement": 0.05,
                                "min_rows": 100},
                 "started_by": "ana", "started_at": "...", "reason": "..."}}

In ``shadow`` the candidate scores the same rows and answers no one (``share`` is 0); in
``canary`` it answers the keys :func:`routes_to_candidate` picks, ``share`` of them. Every
change (:func:`start`, :func:`change`, :func:`promote`, :func:`abort`) is a compare-and-swap
of the alias record, like every alias move, followed by an audit record (who, when, from,
to, why) written only by the writer whose swap succeeded: of several runtimes that see the
same breach (:func:`dscloud.rollout_guard.guard`), exactly one aborts and audits, the others find the rollout gone.

A candidate is admitted (at start and again at promotion) only when it passes
:func:`dscloud.verify.verify`, as every runtime does before it scores (the archive's checks,
sha256 of the bytes, golden examples replayed by ONNX Runtime) and its interface is compatible with the serving version's (:func:`incompatibility`).
Moving the alias outright (``dsc promote``) writes a record without a rollout: it ends one.
The record's parts, routing and compatibility are :mod:`dscloud.rollout_record` (re-exported
here: this module is the one to import).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from dscloud.archive import Archive, Ref, check_alias, check_name, current_user
from dscloud.envelope import Envelope
from dscloud.errors import (
    ArtifactIntegrityError,
    ConfigError,
    DscError,
    EnvelopeError,
    GoldenMismatchError,
    ModelLoadError,
    NotFoundError,
    RolloutError,
)
from dscloud.rollout_record import MODES, Rollout, Thresholds, incompatibility, routes_to_candidate
from dscloud.scorer import Scorer
from dscloud.stores import Conflict
from dscloud.verify import verify

__all__ = [
    "CANDIDATE_REFUSALS",
    "MODES",
    "Rollout",
    "Thresholds",
    "abort",
    "change",
    "incompatibility",
    "load_candidate",
    "promote",
    "routes_to_candidate",
    "start",
    "status",
]

_MAX_TRIES = 100

#: What :func:`load_candidate` raises when the candidate itself must not score (its bytes,
#: its envelope, its interface, or its absence), as opposed to an archive that could not be
#: read at the moment.
CANDIDATE_REFUSALS = (
    ArtifactIntegrityError,
    EnvelopeError,
    GoldenMismatchError,
    ModelLoadError,
    NotFoundError,
    RolloutError,
)


def status(archive: Archive, name: str, alias: str) -> tuple[dict[str, Any], Rollout | None]:
    """The alias record of ``name@alias`` and its rollout (None when there is none).

    Raises :class:`~dscloud.errors.NotFoundError` when the alias is not set.
    """
    record, _ = _alias(archive, name, alias)
    raw = record.get("rollout")
    return record, Rollout.from_dict(raw) if raw else None


def start(
    archive: Archive,
    name: str,
    alias: str,
    candidate: int,
    *,
    mode: str,
    share: float = 0.0,
    thresholds: Thresholds | None = None,
    reason: str = "",
    by: str | None = None,
) -> Rollout:
    """Start a rollout of ``name@candidate`` behind ``alias``; returns it.

    Raises :class:`RolloutError` when the alias already has a rollout, the candidate is the
    serving version, fails verification (its reason given) or is incompatible;
    :class:`NotFoundError` for an unknown alias or version.
    """
    by = by or current_user()
    record, _ = _alias(archive, name, alias)
    if record.get("rollout"):
        raise RolloutError(
            f"{name}@{alias} already has a rollout (candidate "
            f"{record['rollout']['candidate']}); change, promote or abort it first"
        )
    if candidate == int(record["version"]):
        raise RolloutError(f"{name}@{alias} already serves version {candidate}")
    envelope = _admit(archive, name, int(record["version"]), candidate)
    rollout = Rollout(
        candidate=candidate,
        candidate_sha256=envelope.sha256,
        mode=mode,
        share=share,
        thresholds=thresholds or Thresholds(),
        started_by=by,
        started_at=_now(),
        reason=reason,
        id=uuid.uuid4().hex,
    )

    def begin(current: dict[str, Any]) -> dict[str, Any]:
        if current.get("rollout"):
            raise RolloutError(f"{name}@{alias}: another rollout started meanwhile")
        return {**current, "rollout": rollout.to_dict()}

    _move(archive, name, alias, begin, event="rollout-start", by=by, why=reason)
    return rollout


def change(
    archive: Archive,
    name: str,
    alias: str,
    *,
    mode: str | None = None,
    share: float | None = None,
    thresholds: Thresholds | None = None,
    reason: str = "",
    by: str | None = None,
) -> Rollout:
    """Change the running rollout's mode, share or thresholds; returns the new rollout.

    Raises :class:`RolloutError` when the alias has no rollout.
    """
    changed: list[Rollout] = []

    def update(current: dict[str, Any]) -> dict[str, Any]:
        rollout = _running(name, alias, current)
        new_mode = mode or rollout.mode
        new_share = share if share is not None else (rollout.share if new_mode == "canary" else 0.0)
        new = replace(
            rollout,
            mode=new_mode,
            share=0.0 if new_mode == "shadow" else new_share,
            thresholds=thresholds or rollout.thresholds,
        )
        changed[:] = [new]
        return {**current, "rollout": new.to_dict()}

    _move(archive, name, alias, update, event="rollout-change", by=by, why=reason)
    return changed[0]


def promote(
    archive: Archive, name: str, alias: str, *, reason: str = "", by: str | None = None
) -> dict[str, Any]:
    """Point ``alias`` at its candidate (verified again first) and end the rollout.

    Returns the new alias record. Raises :class:`RolloutError` when there is no rollout or
    the candidate no longer verifies.
    """
    by = by or current_user()
    record, rollout = status(archive, name, alias)
    if rollout is None:
        raise RolloutError(f"{name}@{alias} has no rollout to promote")
    envelope = _admit(archive, name, int(record["version"]), rollout.candidate)

    def finish(current: dict[str, Any]) -> dict[str, Any]:
        running = _running(name, alias, current)
        if running.id != rollout.id:
            raise RolloutError(f"{name}@{alias}: the rollout changed meanwhile; check it again")
        return {
            "version": running.candidate,
            "sha256": envelope.sha256,
            "set_by": by,
            "set_at": _now(),
        }

    moved = _move(archive, name, alias, finish, event="rollout-promote", by=by, why=reason)
    assert moved is not None  # finish never declines: it returns a record or raises
    return moved[1]


def abort(
    archive: Archive,
    name: str,
    alias: str,
    *,
    reason: str,
    by: str | None = None,
    rollout_id: str | None = None,
    figures: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """End the rollout; the alias keeps serving its version. Returns the audit record.

    With ``rollout_id``, only that rollout is aborted, and None is returned when it has
    already ended (another runtime aborted it first): what :func:`guard` relies on. Without
    it, raises :class:`RolloutError` when there is no rollout. ``figures`` (the comparison
    that tripped a threshold) go into the audit record.
    """
    if not reason.strip():
        raise ConfigError("abort needs a reason")

    def end(current: dict[str, Any]) -> dict[str, Any] | None:
        raw = current.get("rollout")
        if rollout_id is not None and (not raw or raw.get("id") != rollout_id):
            return None  # already ended (or replaced): someone else won
        _running(name, alias, current)
        return {k: v for k, v in current.items() if k != "rollout"}

    extra = {"figures": dict(figures)} if figures is not None else {}
    moved = _move(archive, name, alias, end, event="rollout-abort", by=by, why=reason, **extra)
    return moved[0] if moved else None


def load_candidate(
    archive: Archive,
    name: str,
    alias: str,
    rollout: Rollout,
    serving: Scorer,
    *,
    threads: int = 1,
) -> Scorer:
    """The rollout's candidate, ready to score the rows decoded for ``serving``: loaded and
    verified like any version (sha256, goldens), with the sha256 the rollout record names,
    and an interface compatible with ``serving``'s (checked at start too; checked again by
    every runtime, which hands the candidate the rows it decoded for the serving version).

    Raises one of :data:`CANDIDATE_REFUSALS` when the candidate must not score, and what
    reading the archive raises otherwise.
    """
    candidate = Scorer(archive.load(Ref(name=name, version=rollout.candidate)), threads=threads)
    if candidate.sha256 != rollout.candidate_sha256:
        raise ArtifactIntegrityError(
            path=f"{archive.uri}/models/{name}/aliases/{alias}.json",
            what="the candidate's sha256",
            actual=rollout.candidate_sha256,
            source=f"{candidate.name}@{candidate.version} records",
            expected=candidate.sha256,
        )
    why = incompatibility(serving.schema, candidate.schema)
    if why is not None:
        raise RolloutError(
            f"candidate {name}@{rollout.candidate} is incompatible with "
            f"{name}@{serving.version}: {why}"
        )
    return candidate


# -- the pieces ---------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _alias(archive: Archive, name: str, alias: str) -> tuple[dict[str, Any], str]:
    got = archive.alias_tagged(check_name(name), check_alias(alias))
    if got is None:
        archive.resolve(Ref(name=name, alias=alias))  # raises NotFoundError with the choices
        raise RolloutError(f"{name}@{alias} is not set")  # pragma: no cover - resolve raised
    return got


def _running(name: str, alias: str, record: Mapping[str, Any]) -> Rollout:
    raw = record.get("rollout")
    if not raw:
        raise RolloutError(f"{name}@{alias} has no rollout")
    return Rollout.from_dict(raw)


def _admit(archive: Archive, name: str, serving: int, candidate: int) -> Envelope:
    """The candidate's envelope once it verifies and fits; raises :class:`RolloutError`."""
    ref = Ref(name=name, version=candidate)
    try:
        artifact = verify(archive, ref).artifact
    except DscError as exc:
        raise RolloutError(f"candidate {ref} refused: it does not verify: {exc}") from exc
    current = archive.envelope(Ref(name=name, version=serving))
    why = incompatibility(current.schema, artifact.envelope.schema)
    if why is not None:
        raise RolloutError(
            f"candidate {ref} refused: interface incompatible with {current.ref}: {why}"
        )
    return artifact.envelope


def _move(
    archive: Archive,
    name: str,
    alias: str,
    edit: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    event: str,
    by: str | None,
    why: str,
    **fields: Any,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Compare-and-swap the alias record through ``edit`` (None: nothing to do), then audit.

    Returns (audit record, new alias record), or None when ``edit`` declined. A conflict
    re-reads and re-applies ``edit``, so it decides against what the winner wrote.
    """
    by = by or current_user()
    for _ in range(_MAX_TRIES):
        current, tag = _alias(archive, name, alias)
        new = edit(current)
        if new is None:
            return None
        try:
            archive.swap_alias(name, alias, new, tag)
        except Conflict:
            continue
        audit = archive.record_event(
            name,
            event,
            by=by,
            alias=alias,
            version=new["version"],
            **{"from": _summary(current), "to": _summary(new), "why": why},
            **fields,
        )
        return audit, new
    raise RolloutError(f"could not update {name}@{alias}: too much contention")


def _summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """The alias record as an audit record quotes it: the version and its rollout."""
    return {"version": record["version"], "rollout": record.get("rollout")}
