"""What a runtime calls while it follows a rollout: record its comparison, read them merged,
and abort on a breached threshold.

A runtime that scores rows with both versions (:mod:`dscloud.rollout_compare`) records its
counts now and then (:func:`record_comparison`: an audit record per server window, stream
batch or batch shard), and checks them against the rollout's thresholds (:func:`guard`).
The first runtime to see a breach aborts the rollout with a compare-and-swap write and
audits it with the figures that tripped it; the others find it gone and follow on their
next poll of the alias. ``dsc rollout status`` shows :func:`comparison`: every recorded
count of the rollout, merged by addition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dscloud.archive import Archive
from dscloud.rollout import Rollout, abort
from dscloud.rollout_compare import Comparison

__all__ = ["comparison", "guard", "record_comparison"]


def guard(
    archive: Archive,
    name: str,
    alias: str,
    rollout: Rollout,
    figures: Mapping[str, Any],
    *,
    by: str = "guard-rail",
) -> dict[str, Any] | None:
    """Abort ``rollout`` if ``figures`` breach its thresholds; returns the abort's audit
    record when this caller's write won, None when nothing was breached or another runtime
    aborted first (its record holds the figures)."""
    breaches = rollout.thresholds.breaches(figures)
    if not breaches:
        return None
    return abort(
        archive,
        name,
        alias,
        reason="guard rail: " + "; ".join(breaches),
        by=by,
        rollout_id=rollout.id,
        figures=figures,
    )


def record_comparison(
    archive: Archive,
    name: str,
    alias: str,
    rollout: Rollout,
    counts: Comparison,
    *,
    by: str | None = None,
) -> dict[str, Any]:
    """Record a runtime's comparison counts for ``rollout`` as a ``rollout-compare`` audit
    record (a server window, a stream batch, a batch shard); returns the record.
    :func:`comparison` merges them."""
    return archive.record_event(
        name,
        "rollout-compare",
        by=by,
        alias=alias,
        version=counts.versions["current"].version,
        rollout_id=rollout.id,
        counts=counts.to_dict(),
    )


def comparison(archive: Archive, name: str, alias: str, rollout: Rollout) -> Comparison | None:
    """Every recorded comparison of ``rollout`` merged by addition, or None if none yet."""
    merged: Comparison | None = None
    for record in archive.audit(name):
        if (
            record.get("event") == "rollout-compare"
            and record.get("alias") == alias
            and record.get("rollout_id") == rollout.id
        ):
            counts = Comparison.from_dict(record["counts"])
            merged = counts if merged is None else merged + counts
    return merged
