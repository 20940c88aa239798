"""The archive: immutable, numbered model versions, movable aliases, and an audit trail.

Layout (the same under a directory and an S3 prefix)::

    models/{name}/versions/{version}/model.onnx
    models/{name}/versions/{version}/envelope.json
    models/{name}/aliases/{alias}.json            {"version", "sha256", "set_by", "set_at"}
    models/{name}/audit/{timestamp}-{event}.json  publish / promote / evaluate events

Publishing claims the next version number by an exclusive create of its ``model.onnx``;
a publisher that loses the race moves on to the next number, so two racing publishers get
two versions and neither is lost. A version is complete once its ``envelope.json`` exists;
a publisher that died between the two writes leaves a number that is skipped, never
reused. Aliases move by compare-and-swap, so every move is recorded against the version it
replaced.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dscloud.envelope import ENVELOPE_FILE, MODEL_FILE, Artifact, Envelope
from dscloud.errors import (
    ArchiveError,
    ArtifactIntegrityError,
    ConfigError,
    EnvelopeError,
    NotFoundError,
    VersionExistsError,
)
from dscloud.refs import check_alias, check_name, check_version, split_ref
from dscloud.stores import Conflict, Store, open_store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["DEFAULT_ARCHIVE", "Archive", "Ref", "check_alias", "check_name", "current_user"]

DEFAULT_ARCHIVE = ".dsc/archive"
_MAX_CLAIMS = 1000
#: Audit fields the archive sets itself; an evaluation cannot override them.
_AUDIT_FIELDS = frozenset({"event", "model", "at", "by", "version", "sha256"})


def current_user() -> str:
    """Who is acting: ``DSC_USER``, else the login name, else the uid."""
    try:
        return os.environ.get("DSC_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Ref:
    """``NAME``, ``NAME@VERSION``, ``NAME@ALIAS``, or a path to an artifact directory.

    However it is made (parsed or constructed), an archive reference obeys the rule of
    :mod:`dscloud.refs`: no ``Ref`` can name ``../..`` as a model. A path reference is a
    directory the caller chose, read as an artifact and never joined to archive keys.
    """

    name: str = ""
    version: int | None = None
    alias: str | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            return
        check_name(self.name)
        if self.version is not None and self.alias is not None:
            raise ConfigError(f"reference {self.name}: a version or an alias, not both")
        if self.version is not None:
            check_version(self.version)
        if self.alias is not None:
            check_alias(self.alias)

    @classmethod
    def parse(cls, text: str) -> Ref:
        """Parse a reference; raises :class:`ConfigError` naming the accepted forms."""
        if "/" in text or text.startswith(".") or Path(text, ENVELOPE_FILE).is_file():
            return cls(path=Path(text))
        name, version, alias = split_ref(text)
        return cls(name=name, version=version, alias=alias)

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


class Archive:
    """Publish, resolve, load and promote model versions in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def open(
        cls, uri: str | os.PathLike[str] | None = None, *, s3_client: S3Client | None = None
    ) -> Archive:
        """Open ``uri`` (default: ``DEFAULT_ARCHIVE``). Nothing is created until a write."""
        return cls(open_store(uri if uri is not None else DEFAULT_ARCHIVE, s3_client=s3_client))

    @property
    def uri(self) -> str:
        return self.store.uri

    # -- reading ------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of every model with at least one complete version."""
        names = {
            parts[1]
            for key in self.store.list("models/")
            if len(parts := key.split("/")) == 5 and parts[4] == ENVELOPE_FILE
        }
        return sorted(names)

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, ascending."""
        return sorted(
            int(parts[3])
            for key in self.store.list(f"models/{check_name(name)}/versions/")
            if len(parts := key.split("/")) == 5
            and parts[4] == ENVELOPE_FILE
            and parts[3].isdigit()
        )

    def aliases(self, name: str) -> dict[str, dict[str, Any]]:
        """``{alias: {"version", "sha256", "set_by", "set_at"}}`` for ``name``."""
        out = {}
        for key in self.store.list(f"models/{check_name(name)}/aliases/"):
            if key.endswith(".json"):
                out[key.rsplit("/", 1)[1][: -len(".json")]] = json.loads(self.store.get(key))
        return out

    def audit(self, name: str) -> list[dict[str, Any]]:
        """Every audit record of ``name``, oldest first."""
        return [
            json.loads(self.store.get(key))
            for key in self.store.list(f"models/{check_name(name)}/audit/")
            if key.endswith(".json")
        ]

    def resolve(self, ref: Ref | str) -> int:
        """The version a reference points at (``NAME`` alone means the latest).

        Through an alias, the alias record's sha256 must match the version's envelope, so a
        reader that pins an alias to a version (the batch job, the alias poller) has already
        checked it. Raises :class:`NotFoundError` for an unknown name, version or alias and
        :class:`ArtifactIntegrityError` for an alias or envelope that disagrees with it.
        """
        return self._checked_envelope(_as_ref(ref))[0]

    def _pin(self, ref: Ref) -> tuple[int, str | None]:
        """``(version, sha256 the alias vouches for)``; the sha256 is None without an alias."""
        if ref.path is not None:
            raise ConfigError(f"{ref.path} is a path, not an archive reference")
        if ref.version is not None:
            if ref.version not in self.versions(ref.name):
                raise NotFoundError(self._missing(ref.name, f"version {ref.version}"))
            return ref.version, None
        if ref.alias is not None:
            key = f"models/{ref.name}/aliases/{ref.alias}.json"
            got = self.store.get_tagged(key)
            if got is None:
                known = sorted(self.aliases(ref.name)) if self.versions(ref.name) else []
                raise NotFoundError(
                    self._missing(ref.name, f"alias {ref.alias!r}") + f"; aliases: {known}"
                )
            return _alias_target(got[0], path=f"{self.uri}/{key}")
        versions = self.versions(ref.name)
        if not versions:
            raise NotFoundError(self._missing(ref.name, "any version"))
        return versions[-1], None

    def _checked_envelope(self, ref: Ref) -> tuple[int, Envelope]:
        """The version ``ref`` pins and its envelope, after every check that needs no model
        bytes: the envelope is the version asked for, and the alias (if any) vouches for it."""
        version, vouched = self._pin(ref)
        key = f"models/{ref.name}/versions/{version}/{ENVELOPE_FILE}"
        path = f"{self.uri}/{key}"
        try:
            raw = self.store.get(key)
        except KeyError:
            raise NotFoundError(
                self._missing(ref.name, f"complete version {version} ({path})")
            ) from None
        envelope = Envelope.from_json(raw, path=path)
        # The reference decides the key; the envelope only has to agree with it.
        if (envelope.name, envelope.version) != (ref.name, version):
            raise ArtifactIntegrityError(
                path=path,
                what="identity",
                actual=envelope.ref,
                source="its place in the archive is",
                expected=f"{ref.name}@{version}",
            )
        if vouched is not None and vouched != envelope.sha256:
            raise ArtifactIntegrityError(
                path=f"{self.uri}/models/{ref.name}/aliases/{ref.alias}.json",
                what=f"the sha256 recorded when {ref} was promoted",
                actual=vouched,
                source=f"{ref.name}@{version} records",
                expected=envelope.sha256,
                remedy="Promote a verified version again (dsc promote).",
            )
        envelope.require_goldens(path=path)
        return version, envelope

    def _missing(self, name: str, what: str) -> str:
        if not self.versions(name):
            return f"no model {name!r} in archive {self.uri}; models: {self.models()}"
        return (
            f"model {name!r} has no {what} in archive {self.uri}; versions: {self.versions(name)}"
        )

    def envelope(self, ref: Ref | str) -> Envelope:
        """The envelope of a version, checked against the reference but without reading the
        model bytes (use :meth:`load` for that). Raises what :meth:`resolve` raises, and
        :class:`EnvelopeError` for an envelope without golden examples or a recorded opt-out.
        """
        ref = _as_ref(ref)
        if ref.path is not None:
            return self.load(ref).envelope
        return self._checked_envelope(ref)[1]

    def load(self, ref: Ref | str) -> Artifact:
        """Read and verify a version: the reference decides which files are read, the
        envelope must agree with it, an alias must vouch for its sha256, the model bytes
        must have that sha256 and the envelope must carry golden examples (or a recorded
        opt-out). Raises :class:`ArtifactIntegrityError`, :class:`EnvelopeError` or
        :class:`NotFoundError` saying which.
        """
        ref = _as_ref(ref)
        if ref.path is not None:
            artifact = Artifact.read(ref.path)
            artifact.envelope.require_goldens(path=str(ref.path / ENVELOPE_FILE))
            return artifact
        version, envelope = self._checked_envelope(ref)
        key = f"models/{ref.name}/versions/{version}/{MODEL_FILE}"
        try:
            model = self.store.get(key)
        except KeyError:
            raise ArchiveError(f"{self.uri}/{key} is missing; the version is incomplete") from None
        envelope.verify(model, path=f"{self.uri}/{key}")
        return Artifact(envelope=envelope, model=model, location=f"{self.uri}/{key}")

    # -- writing ------------------------------------------------------------------------

    def publish(
        self,
        envelope: Envelope,
        model: bytes,
        *,
        version: int | None = None,
        without_goldens: str | None = None,
    ) -> Envelope:
        """Store a new immutable version; returns the envelope with its version number.

        With ``version`` given, publishes exactly that number or raises
        :class:`VersionExistsError`; otherwise claims the next free number. An envelope
        without golden examples is refused (:class:`EnvelopeError`) unless
        ``without_goldens`` says why; the reason is written into the envelope
        (``golden_opt_out``) and the publish audit record, and ``dsc show``/``dsc verify``
        report it.
        """
        name = check_name(envelope.name)
        if version is not None:
            check_version(version)
        if without_goldens is not None:
            if not without_goldens.strip():
                raise ConfigError("without_goldens: expected a reason, got an empty string")
            envelope = replace(envelope, golden_opt_out=without_goldens.strip())
        envelope.require_goldens(path=f"envelope of {name}")
        envelope.verify(model, path=f"model for {name}")
        if version is not None:
            self._claim(name, version, model, exact=True)
            if not self._seal(envelope.with_version(version), model):
                raise VersionExistsError(
                    f"{self.uri}/models/{name}/versions/{version} already has an envelope"
                )
            claimed = version
        else:
            claimed = 0
            for _ in range(_MAX_CLAIMS):
                # past the number just lost, which a stale listing may still show as free
                claimed = self._claim_next(name, model, after=claimed)
                if self._seal(envelope.with_version(claimed), model):
                    break
            else:
                raise ArchiveError(f"could not claim a version of {name} in {self.uri}")
        opt_out = {"golden_opt_out": envelope.golden_opt_out} if envelope.golden_opt_out else {}
        self._audit(name, "publish", version=claimed, sha256=envelope.sha256, **opt_out)
        return envelope.with_version(claimed)

    def _seal(self, published: Envelope, model: bytes) -> bool:
        """Write the envelope that completes a claimed version; returns False when another
        publisher sealed that number first.

        On AWS S3 and a directory the model's exclusive create already made the claim ours,
        so this never loses. A store whose exclusive create is not atomic (moto checks
        ``IfNoneMatch`` and then writes, without a lock: two threads racing on one key can
        both "create" it) can let two publishers claim one number; the envelope's own
        exclusive create is then the tie-break, the loser goes on to the next number, and
        the winner puts its model back in case the loser's bytes landed last. It cannot
        make such a store atomic: a mix that still slipped through is refused on load by
        the sha256 check, never served.
        """
        base = f"models/{published.name}/versions/{published.version}"
        try:
            self.store.create(f"{base}/{ENVELOPE_FILE}", published.to_json())
        except Conflict:
            return False
        current = self.store.get_tagged(f"{base}/{MODEL_FILE}")
        if current is not None and current[0] != model:
            with contextlib.suppress(Conflict):  # a later write is still refused on load
                self.store.swap(f"{base}/{MODEL_FILE}", model, current[1])
        return True

    def _claim(self, name: str, version: int, model: bytes, *, exact: bool) -> bool:
        try:
            self.store.create(f"models/{name}/versions/{version}/{MODEL_FILE}", model)
        except Conflict:
            if exact:
                raise VersionExistsError(
                    f"{name}@{version} already exists in {self.uri}; versions are immutable, "
                    "publish without a version to get the next number"
                ) from None
            return False
        return True

    def _claim_next(self, name: str, model: bytes, *, after: int = 0) -> int:
        claimed = [
            after,
            *[
                int(parts[3])
                for key in self.store.list(f"models/{name}/versions/")
                if len(parts := key.split("/")) == 5 and parts[3].isdigit()
            ],
        ]
        version = max(claimed) + 1
        for _ in range(_MAX_CLAIMS):
            if self._claim(name, version, model, exact=False):
                return version
            version += 1
        raise ArchiveError(f"could not claim a version of {name} in {self.uri}")

    def promote(
        self, name: str, version: int, alias: str, *, by: str | None = None
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version``; returns the alias record. Recorded in the audit.

        The version is loaded first (sha256, identity, goldens present), so an alias never
        moves to bytes that no reader would accept. Replaying the golden examples needs ONNX
        Runtime: :func:`dscloud.verify.promote` does that before calling this. Raises what
        :meth:`load` raises.
        """
        check_alias(alias)
        envelope = self.load(Ref(name=check_name(name), version=version)).envelope
        key = f"models/{name}/aliases/{alias}.json"
        record = {
            "version": version,
            "sha256": envelope.sha256,
            "set_by": by or current_user(),
            "set_at": _now(),
        }
        for _ in range(_MAX_CLAIMS):
            current = self.store.get_tagged(key)
            previous = json.loads(current[0])["version"] if current else None
            try:
                self.store.swap(key, json.dumps(record).encode(), current[1] if current else None)
            except Conflict:
                continue  # someone else moved it meanwhile: re-read and record against theirs
            self._audit(
                name,
                "promote",
                version=version,
                alias=alias,
                previous=previous,
                sha256=envelope.sha256,
                by=str(record["set_by"]),
            )
            return record
        raise ArchiveError(f"could not move alias {alias!r} of {name}: too much contention")

    # -- live evaluations -----------------------------------------------------------------

    def record_evaluation(
        self, name: str, version: int, evaluation: Mapping[str, Any], *, by: str | None = None
    ) -> dict[str, Any]:
        """Record live metrics of ``name@version`` as an ``evaluate`` audit record.

        ``evaluation`` is :meth:`dscloud.evaluate.Evaluation.to_dict` (kind, metrics, rows,
        window, notes), plus anything the caller adds (e.g. the input locations). Returns
        the record written; raises :class:`NotFoundError` for an unknown version. Records
        are immutable, like every audit record: a re-evaluation is a new record.
        """
        envelope = self.envelope(Ref(name=check_name(name), version=version))
        fields = {k: v for k, v in evaluation.items() if k not in _AUDIT_FIELDS}
        return self._audit(
            name, "evaluate", version=version, sha256=envelope.sha256, by=by, **fields
        )

    def evaluations(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        """The ``evaluate`` records of ``name`` (of one ``version`` if given), oldest first."""
        records = [
            json.loads(self.store.get(key))
            for key in sorted(self.store.list(f"models/{check_name(name)}/audit/"))
            if key.endswith("-evaluate.json")
        ]
        return [r for r in records if version is None or r.get("version") == version]

    # -- alias records as read-modify-write (rollouts: dscloud.rollout) ------------------

    def alias_tagged(self, name: str, alias: str) -> tuple[dict[str, Any], str] | None:
        """The alias record of ``name@alias`` and its store tag, or None when it is unset."""
        got = self.store.get_tagged(f"models/{check_name(name)}/aliases/{check_alias(alias)}.json")
        return (json.loads(got[0]), got[1]) if got is not None else None

    def swap_alias(self, name: str, alias: str, record: Mapping[str, Any], tag: str) -> None:
        """Replace the alias record if it still has ``tag`` (compare-and-swap).

        Raises :class:`~dscloud.stores.Conflict` when another writer moved it meanwhile.
        """
        key = f"models/{check_name(name)}/aliases/{check_alias(alias)}.json"
        self.store.swap(key, json.dumps(dict(record)).encode(), tag)

    def record_event(
        self, name: str, event: str, *, by: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Write an immutable audit record ``event`` for ``name``; returns it."""
        return self._audit(check_name(name), event, by=by, **fields)

    def _audit(
        self, name: str, event: str, *, by: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        at = _now()
        stamp = at.replace("-", "").replace(":", "").replace(".", "")
        record = {"event": event, "model": name, "at": at, "by": by or current_user(), **fields}
        key = f"models/{name}/audit/{stamp}-{uuid.uuid4().hex[:8]}-{event}.json"
        self.store.create(key, json.dumps(record).encode())
        return record


def _as_ref(ref: Ref | str) -> Ref:
    return Ref.parse(ref) if isinstance(ref, str) else ref


def _alias_target(raw: bytes, *, path: str) -> tuple[int, str]:
    """``(version, sha256)`` of an alias record; raises :class:`EnvelopeError` when the
    record is not one this archive writes."""
    try:
        record = json.loads(raw)
        version, sha256 = check_version(record["version"]), record["sha256"]
    except (ValueError, TypeError, KeyError, ConfigError) as exc:
        raise EnvelopeError(
            f"{path}: not an alias record ({exc}); expected "
            '{"version": N, "sha256": "...", "set_by", "set_at"}. Promote the alias again.'
        ) from None
    if not isinstance(sha256, str):
        raise EnvelopeError(f"{path}: alias sha256 {sha256!r} is not a string; promote it again")
    return version, sha256
