"""The envelope: an ONNX model plus everything about how it came to be.

An artifact is two files, ``model.onnx`` and ``envelope.json``. The envelope records
identity, integrity (sha256 of the model bytes, checked on every load), the interface
(:class:`~dscloud.schema.Schema`), provenance, a fingerprint and summary of the training
data, quality (metrics and the parity report) and golden examples that every runtime
replays before it reports ready. Sections that only people read (provenance, data,
quality) stay plain JSON dicts so that adding a field never breaks an older reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dscloud.errors import ArchiveError, ArtifactIntegrityError, ConfigError, EnvelopeError
from dscloud.refs import check_name, check_version
from dscloud.schema import Schema

__all__ = ["FORMAT_VERSION", "Envelope", "Golden", "ModelIdentity", "sha256_hex"]

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
ENVELOPE_FILE = "envelope.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """Which model answered: name, version and the sha256 of its ``model.onnx``.

    Every answer, stored prediction, reject and batch manifest names the model with this
    one record, so two runtimes never disagree on how a version is named. ``version`` is
    an integer (None for an artifact not yet published); a protocol that wants text (OIP
    v2's ``model_version``) prints it at its edge.
    """

    name: str
    version: int | None
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "version", "sha256"}``, the JSON form every adapter writes."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Golden:
    """One input row and the outputs ONNX Runtime produced for it when it was packaged."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outputs": self.outputs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Golden:
        if not isinstance(data.get("inputs"), dict) or not isinstance(data.get("outputs"), dict):
            raise EnvelopeError('a golden example needs "inputs" and "outputs" objects')
        return cls(inputs=dict(data["inputs"]), outputs=dict(data["outputs"]))


@dataclass(frozen=True)
class Envelope:
    """Metadata of one model version. ``version`` is None until the archive assigns one."""

    name: str
    sha256: str
    size_bytes: int
    schema: Schema
    goldens: tuple[Golden, ...]
    version: int | None = None
    created_at: str = ""
    created_by: str = ""
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: Why this version has no golden examples: set only by an explicit opt-out at publish
    #: time (``publish(..., without_goldens="reason")``); empty means goldens are required.
    golden_opt_out: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}" if self.version is not None else self.name

    @property
    def identity(self) -> ModelIdentity:
        """The one record every runtime names this model version by."""
        return ModelIdentity(name=self.name, version=self.version, sha256=self.sha256)

    @property
    def metrics(self) -> dict[str, float]:
        metrics = self.quality.get("metrics", {})
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}

    def with_version(self, version: int) -> Envelope:
        return replace(self, version=version)

    def require_goldens(self, *, path: str = ENVELOPE_FILE) -> None:
        """Raise :class:`EnvelopeError` unless there are golden examples or a recorded opt-out.

        Without goldens no runtime can tell whether it reproduces the packaged model, so an
        envelope that lost them (or never had them) is refused; a model that genuinely has
        none must say so at publish time, and ``dsc show``/``dsc verify`` report it.
        """
        if not self.goldens and not self.golden_opt_out:
            raise EnvelopeError(
                f"{path}: {self.ref} has no golden examples and records no opt-out; a runtime "
                "could not check that it reproduces the model. Re-package it with golden "
                'examples, or publish with an explicit opt-out (without_goldens="why").'
            )

    def verify(self, model_bytes: bytes, *, path: str = MODEL_FILE) -> None:
        """Raise :class:`ArtifactIntegrityError` unless ``model_bytes`` has our sha256."""
        actual = sha256_hex(model_bytes)
        if actual != self.sha256:
            raise ArtifactIntegrityError(path=path, expected=self.sha256, actual=actual)

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "identity": {
                "name": self.name,
                "version": self.version,
                "created_at": self.created_at,
                "created_by": self.created_by,
                "description": self.description,
                "tags": self.tags,
            },
            "integrity": {"sha256": self.sha256, "size_bytes": self.size_bytes},
            "interface": self.schema.to_dict(),
            "onnx": self.onnx,
            "provenance": self.provenance,
            "data": self.data,
            "quality": self.quality,
            "golden_examples": [g.to_dict() for g in self.goldens],
            # Written only when set, so envelopes without an opt-out keep their old shape.
            **({"golden_opt_out": self.golden_opt_out} if self.golden_opt_out else {}),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """The envelope in ``data``; raises :class:`EnvelopeError` naming what is malformed,
        including an identity whose name or version breaks the reference rule."""
        try:
            identity = data["identity"]
            integrity = data["integrity"]
            version = identity.get("version")
            name = identity["name"]
            try:
                check_name(name)
                if version is not None:
                    check_version(version)
            except ConfigError as exc:
                raise EnvelopeError(f"not a valid envelope: identity {exc}") from None
            return cls(
                name=name,
                version=version,
                created_at=str(identity.get("created_at", "")),
                created_by=str(identity.get("created_by", "")),
                description=str(identity.get("description", "")),
                tags=dict(identity.get("tags", {})),
                sha256=str(integrity["sha256"]),
                size_bytes=int(integrity["size_bytes"]),
                schema=Schema.from_dict(data["interface"]),
                onnx=dict(data.get("onnx", {})),
                provenance=dict(data.get("provenance", {})),
                data=dict(data.get("data", {})),
                quality=dict(data.get("quality", {})),
                goldens=tuple(Golden.from_dict(g) for g in data.get("golden_examples", [])),
                format_version=int(data.get("format_version", FORMAT_VERSION)),
                golden_opt_out=str(data.get("golden_opt_out") or ""),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(f"not a valid envelope: missing or malformed {exc}") from exc

    @classmethod
    def from_json(cls, raw: bytes, *, path: str = ENVELOPE_FILE) -> Envelope:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EnvelopeError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise EnvelopeError(f"{path}: expected a JSON object")
        try:
            return cls.from_dict(data)
        except EnvelopeError as exc:
            raise EnvelopeError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class Artifact:
    """A verified envelope with its model bytes, ready to hand to a scorer."""

    envelope: Envelope
    model: bytes
    location: str = ""

    def write(self, directory: Path) -> Path:
        """Write ``model.onnx`` and ``envelope.json`` into ``directory``; returns it."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self.model)
        (directory / ENVELOPE_FILE).write_bytes(self.envelope.to_json())
        return directory

    @classmethod
    def read(cls, directory: Path) -> Artifact:
        """Read and verify an artifact directory (``model.onnx`` + ``envelope.json``).

        Raises :class:`EnvelopeError` when a file is missing or invalid,
        :class:`ArchiveError` when one cannot be read (permissions), and
        :class:`ArtifactIntegrityError` when the model is not the one the envelope records.
        """
        env_path, model_path = directory / ENVELOPE_FILE, directory / MODEL_FILE
        try:
            for p in (env_path, model_path):
                if not p.is_file():
                    raise EnvelopeError(
                        f"{p} does not exist: an artifact directory holds "
                        f"{MODEL_FILE} and {ENVELOPE_FILE}"
                    )
            envelope_bytes, model = env_path.read_bytes(), model_path.read_bytes()
        except OSError as exc:
            raise ArchiveError(
                f"artifact {directory}: cannot read {exc.filename}: {exc.strerror} (uid "
                f"{os.getuid()}; the files must be readable by it: chmod -R a+rX {directory})"
            ) from None
        envelope = Envelope.from_json(envelope_bytes, path=str(env_path))
        envelope.verify(model, path=str(model_path))
        return cls(envelope=envelope, model=model, location=str(directory))
