"""Models that follow their alias: load the new version beside the old, check, then swap.

The server polls on a background thread; the Lambda handler calls :meth:`LiveModel.refresh`
when its interval has passed. A swap is one attribute assignment, so a request either
gets the old scorer or the new one, never a half-loaded model. A new version that fails
verification (sha256 or golden replay) is not swapped in: the old one keeps serving and
the failure is logged and kept in ``last_error``; ``public_error`` says the same without
the archive's paths and keys, for answers to clients.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from dscloud.archive import Archive, Ref
from dscloud.errors import (
    ArtifactIntegrityError,
    ConfigError,
    DscError,
    EnvelopeError,
    GoldenMismatchError,
    ModelLoadError,
    NotFoundError,
)
from dscloud.scorer import Scorer

__all__ = ["LiveModel", "ModelSet"]

log = logging.getLogger("dscloud.live")

#: Failures that are a property of the version's bytes, not of the moment.
_VERDICTS = (ArtifactIntegrityError, EnvelopeError, GoldenMismatchError, ModelLoadError)


class LiveModel:
    """One model reference and the scorer currently serving it."""

    def __init__(self, archive: Archive, ref: Ref | str, *, threads: int = 1) -> None:
        self.archive = archive
        self.ref = Ref.parse(ref) if isinstance(ref, str) else ref
        self.threads = threads
        self.last_error: str | None = None
        self.public_error: str | None = None
        self._refused: int | None = None  # the version that last failed to load
        self.scorer: Scorer = self._load(self.ref)

    @property
    def name(self) -> str:
        return self.scorer.name

    @property
    def follows(self) -> bool:
        """True when the reference can move (an alias, or a bare name meaning latest)."""
        return self.ref.path is None and self.ref.version is None

    def _load(self, ref: Ref) -> Scorer:
        return Scorer(self.archive.load(ref), threads=self.threads)

    def refresh(self) -> bool:
        """Swap in the version the reference points at now, if it changed and verifies.

        Returns True when a new version was swapped in. Never raises: a version that fails
        (integrity, ONNX Runtime, goldens) is logged, kept in ``last_error`` and not tried
        again until the reference moves; an archive that could not be read is tried again at
        the next poll.
        """
        if not self.follows:
            return False
        version: int | None = None
        try:
            version = self.archive.resolve(self.ref)
            if version == self.scorer.version:
                self.last_error = self.public_error = None  # the alias came back
                return False
            if version == self._refused:
                return False  # already failed; keep reporting it, do not reload it every poll
            candidate = self._load(Ref(name=self.ref.name, version=version))
        except Exception as exc:  # a poller must survive anything the archive hands it
            self.last_error = (
                str(exc) if isinstance(exc, DscError) else f"{type(exc).__name__}: {exc}"
            )
            self.public_error = _public(exc, self.ref.name, version)
            # A version that fails verification stays refused; a read that failed may succeed
            # on the next poll.
            if isinstance(exc, _VERDICTS):
                self._refused = version
            log.warning(
                "keeping %s@%s: %s",
                self.scorer.name,
                self.scorer.version,
                self.last_error,
                exc_info=not isinstance(exc, DscError),
                extra={"model": self.scorer.name, "version": self.scorer.version},
            )
            return False
        old = self.scorer
        self.scorer = candidate
        self.last_error = self.public_error = None
        self._refused = None
        log.info(
            "swapped %s: version %s -> %s",
            self.ref,
            old.version,
            candidate.version,
            extra={"model": candidate.name, "version": candidate.version},
        )
        return True


#: What a client may be told about a failed refresh: the kind of failure, never the
#: message, which names archive paths, bucket keys and hashes of the operator's storage.
_PUBLIC = {
    ArtifactIntegrityError: "failed its sha256 integrity check",
    GoldenMismatchError: "does not reproduce its golden examples",
    ModelLoadError: "cannot be loaded by ONNX Runtime",
    EnvelopeError: "has an invalid envelope",
    NotFoundError: "was not found in the archive",
}


def _public(exc: BaseException, name: str, version: int | None) -> str:
    """One line about a refresh failure, without internal paths (the log has the rest)."""
    which = f"version {version} of {name}" if version is not None else f"the alias of {name}"
    for kind, text in _PUBLIC.items():
        if isinstance(exc, kind):
            return f"{which} {text}; still serving the previous version (details in the log)"
    return f"the archive could not be read ({type(exc).__name__}); details in the server log"


class ModelSet:
    """Several live models keyed by name, refreshed together on a polling thread."""

    def __init__(self, archive: Archive, refs: Iterable[Ref | str], *, threads: int = 1) -> None:
        self.archive = archive
        self.models: dict[str, LiveModel] = {}
        for ref in refs:
            live = LiveModel(archive, ref, threads=threads)
            if live.name in self.models:
                raise ConfigError(
                    f"{ref} and {self.models[live.name].ref} are both model {live.name!r}; "
                    "serve one reference per model name"
                )
            self.models[live.name] = live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> LiveModel:
        try:
            return self.models[name]
        except KeyError:
            raise NotFoundError(
                f"model {name!r} is not served here; models: {sorted(self.models)}"
            ) from None

    def refresh(self) -> list[str]:
        """Refresh every model; returns the names that swapped."""
        return [name for name, live in self.models.items() if live.refresh()]

    def start(self, interval: float) -> None:
        """Poll the archive every ``interval`` seconds on a daemon thread (0 disables)."""
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="dsc-alias-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
