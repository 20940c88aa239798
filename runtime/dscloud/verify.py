"""Verification of an archived version, and the promotion that requires it.

:func:`verify` is what ``dsc verify`` runs and what :func:`promote` runs before an alias
moves: the archive's checks (the reference decides the files, the envelope agrees with it,
an alias vouches for its sha256, the model bytes have that sha256, goldens present or
opted out) and then the golden examples replayed through the :class:`~dscloud.scorer.Scorer`,
exactly as a server, the stream handler and the batch job do before they score. An alias
that moved only after this passed points at a version every reader will accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dscloud.archive import Archive, Ref
from dscloud.envelope import Artifact, Envelope
from dscloud.scorer import Scorer

__all__ = ["Verified", "promote", "verify"]


@dataclass(frozen=True)
class Verified:
    """A version that passed every check, with the scorer that replayed its goldens."""

    artifact: Artifact
    scorer: Scorer

    @property
    def envelope(self) -> Envelope:
        return self.artifact.envelope

    @property
    def goldens(self) -> int:
        """How many golden examples were reproduced (0 only with a recorded opt-out)."""
        return len(self.envelope.goldens)

    def summary(self) -> str:
        """One line for people: what was verified, and an opt-out if there is one."""
        env = self.envelope
        goldens = (
            f"{self.goldens} golden examples reproduced"
            if env.goldens
            else f"no golden examples (opted out at publish: {env.golden_opt_out})"
        )
        return f"ok {env.ref}: sha256 {env.sha256} verified, {goldens}"


def verify(archive: Archive, ref: Ref | str) -> Verified:
    """Load ``ref`` with every archive check and replay its golden examples.

    Returns the :class:`Verified` version. Raises :class:`~dscloud.errors.NotFoundError`,
    :class:`~dscloud.errors.ArtifactIntegrityError` or :class:`~dscloud.errors.EnvelopeError`
    from the archive, :class:`~dscloud.errors.ModelLoadError` when ONNX Runtime refuses the
    bytes and :class:`~dscloud.errors.GoldenMismatchError` when the goldens differ.
    """
    artifact = archive.load(ref)
    return Verified(artifact=artifact, scorer=Scorer(artifact))


def promote(
    archive: Archive, name: str, version: int, alias: str, *, by: str | None = None
) -> dict[str, Any]:
    """Verify ``name@version`` (see :func:`verify`), then point ``alias`` at it.

    Returns the alias record. Raises what :func:`verify` raises, before anything moves.
    """
    verify(archive, Ref(name=name, version=version))
    return archive.promote(name, version, alias, by=by)
