"""What changed between two versions, and how a model's metrics moved over time.

``diff`` answers "what changed between deployments?": parameters, code, data fingerprint and
feature summaries, schema, library versions, metrics with deltas, model size and graph.
``history`` answers "how has performance moved?": metrics across versions, aliases marked,
and the live metrics recorded from outcomes (``dsc evaluate``) beside the offline ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dscloud.archive import Archive
from dscloud.envelope import Envelope

__all__ = ["Change", "EnvelopeDiff", "HistoryRow", "diff", "history"]


@dataclass(frozen=True)
class Change:
    """One field that differs: dotted ``path``, ``old`` and ``new`` (None when absent)."""

    section: str
    path: str
    old: Any
    new: Any
    delta: float | None = None


@dataclass
class EnvelopeDiff:
    a: Envelope
    b: Envelope
    changes: list[Change] = field(default_factory=list)

    def section(self, name: str) -> list[Change]:
        return [c for c in self.changes if c.section == name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.ref,
            "b": self.b.ref,
            "changes": [
                {"section": c.section, "path": c.path, "old": c.old, "new": c.new, "delta": c.delta}
                for c in self.changes
            ],
        }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _changes(section: str, old: Any, new: Any) -> list[Change]:
    a, b = _flatten(old), _flatten(new)
    out = []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path), b.get(path)
        if va != vb:
            delta = None
            if (
                isinstance(va, int | float)
                and isinstance(vb, int | float)
                and not isinstance(va, bool)
            ):
                delta = float(vb) - float(va)
            out.append(Change(section, path, va, vb, delta))
    return out


# Fields that differ on every publish and say nothing about the model.
_IDENTITY_NOISE = {"version", "created_at"}


def diff(a: Envelope, b: Envelope) -> EnvelopeDiff:
    """Every difference between two envelopes, grouped by section; golden rows are skipped."""
    result = EnvelopeDiff(a, b)
    ident_a = {k: v for k, v in a.to_dict()["identity"].items() if k not in _IDENTITY_NOISE}
    ident_b = {k: v for k, v in b.to_dict()["identity"].items() if k not in _IDENTITY_NOISE}
    prov_a, prov_b = dict(a.provenance), dict(b.provenance)
    sections: list[tuple[str, Any, Any]] = [
        ("identity", ident_a, ident_b),
        (
            "integrity",
            {"sha256": a.sha256, "size_bytes": a.size_bytes},
            {"sha256": b.sha256, "size_bytes": b.size_bytes},
        ),
        ("metrics", a.quality.get("metrics", {}), b.quality.get("metrics", {})),
        ("parameters", prov_a.pop("hyperparameters", {}), prov_b.pop("hyperparameters", {})),
        ("estimator", prov_a.pop("estimator_params", {}), prov_b.pop("estimator_params", {})),
        ("code", prov_a.pop("code", {}), prov_b.pop("code", {})),
        ("libraries", prov_a.pop("libraries", {}), prov_b.pop("libraries", {})),
        ("provenance", prov_a, prov_b),
        ("data", a.data, b.data),
        ("schema", _schema_view(a), _schema_view(b)),
        ("graph", a.onnx, b.onnx),
        ("parity", _parity_view(a), _parity_view(b)),
    ]
    for name, old, new in sections:
        result.changes.extend(_changes(name, old, new))
    return result


def _parity_view(env: Envelope) -> dict[str, Any]:
    parity = env.quality.get("parity", {})
    return {k: parity.get(k) for k in ("max_abs_diff", "label_agreement", "rows")}


def _schema_view(env: Envelope) -> dict[str, Any]:
    view: dict[str, Any] = {c.name: c.to_dict() for c in env.schema.columns}
    view["outputs"] = {o.name: o.to_dict() for o in env.schema.outputs}
    return view


@dataclass(frozen=True)
class HistoryRow:
    """One version: its offline ``metrics`` (from the envelope) and its ``live``
    evaluations (``evaluate`` audit records, oldest first: at, metrics, rows, window)."""

    version: int
    created_at: str
    created_by: str
    metrics: dict[str, float]
    aliases: tuple[str, ...]
    commit: str | None
    live: tuple[dict[str, Any], ...] = ()

    @property
    def live_metrics(self) -> dict[str, float]:
        """The metrics of the latest live evaluation ({} when there is none)."""
        return dict(self.live[-1].get("metrics", {})) if self.live else {}


def history(archive: Archive, name: str) -> list[HistoryRow]:
    """One row per version of ``name``, oldest first, with the aliases pointing at it."""
    by_version: dict[int, list[str]] = {}
    for alias, record in archive.aliases(name).items():
        by_version.setdefault(int(record["version"]), []).append(alias)
    live: dict[int, list[dict[str, Any]]] = {}
    for record in archive.evaluations(name):
        live.setdefault(int(record["version"]), []).append(
            {k: record.get(k) for k in ("at", "metrics", "rows", "window")}
        )
    rows = []
    for version in archive.versions(name):
        env = archive.envelope(f"{name}@{version}")
        code = env.provenance.get("code") or {}
        rows.append(
            HistoryRow(
                version=version,
                created_at=env.created_at,
                created_by=env.created_by,
                metrics=env.metrics,
                aliases=tuple(sorted(by_version.get(version, []))),
                commit=code.get("commit") if isinstance(code, dict) else None,
                live=tuple(live.get(version, [])),
            )
        )
    return rows
