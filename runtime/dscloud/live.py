"""Models that follow their alias: load the new version beside the old, check, then swap.

The server polls on a background thread; the Lambda handler calls :meth:`LiveModel.refresh`
when its interval has passed. A swap is one attribute assignment, so a request either
gets the old scorer or the new one, never a half-loaded model. A new version that fails
verification (sha256 or golden replay) is not swapped in: the old one keeps serving and
the failure is logged and kept in ``last_error``; ``public_error`` says the same without
the archive's paths and keys, for answers to clients.

A model that follows an alias also follows the alias's rollout (:mod:`dscloud.rollout`):
each poll loads the candidate, verified like any version, into :attr:`LiveModel.following`,
or drops it when the rollout ended. A candidate that fails verification is never used: the
serving version answers everything, the failure is in ``last_error``, and
``rollout_error`` (also in ``public_error``) says it without paths.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from dscloud.archive import Archive, Ref
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
from dscloud.rollout import CANDIDATE_REFUSALS, Rollout, load_candidate, status
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
        #: Why the running rollout's candidate is not followed, without internal paths;
        #: None while it is followed or when there is no rollout.
        self.rollout_error: str | None = None
        self._refused: int | None = None  # the version that last failed to load
        self.scorer: Scorer = self._load(self.ref)
        #: The running rollout and its verified candidate; None without one. One attribute,
        #: so a request reads both from the same poll.
        self.following: tuple[Rollout, Scorer] | None = None
        # The rollout whose candidate failed verification, and why: not loaded again.
        self._refused_rollout: tuple[str | None, str | None] = (None, None)
        self._follow_rollout()

    @property
    def name(self) -> str:
        return self.scorer.name

    @property
    def follows(self) -> bool:
        """True when the reference can move (an alias, or a bare name meaning latest)."""
        return self.ref.path is None and self.ref.version is None

    def _load(self, ref: Ref) -> Scorer:
        return Scorer(self.archive.load(ref), threads=self.threads)

    def answering(self, key: str | None) -> Scorer:
        """The scorer that answers routing ``key``: the candidate when a canary picks the
        key (:meth:`Rollout.answers`), else the serving version (also in shadow)."""
        following = self.following
        if following is not None and key is not None and self.ref.alias is not None:
            rollout, candidate = following
            if rollout.answers(self.ref.name, self.ref.alias, key):
                return candidate
        return self.scorer

    def _follow_rollout(self) -> None:
        """Load the rollout's candidate, or drop it when the rollout ended. Never raises.

        The candidate is checked by :func:`dscloud.rollout.load_candidate`, the rule batch
        uses too (sha256 against the rollout record, goldens, an interface the serving
        version's decoded rows fit); a refusal (:data:`CANDIDATE_REFUSALS`) is remembered
        per rollout and not retried every poll."""
        if self.ref.alias is None or self.ref.path is not None:
            return
        rollout: Rollout | None = None
        try:
            _, rollout = status(self.archive, self.ref.name, self.ref.alias)
            if rollout is None or rollout.candidate == self.scorer.version:
                self.following = None
                self.rollout_error = None
                return
            if self.following is not None and self.following[0].candidate == rollout.candidate:
                self.following = (rollout, self.following[1])  # mode, share or thresholds
                return
            if rollout.id == self._refused_rollout[0]:
                # Still refused: keep saying so (the version refresh cleared the errors).
                self.last_error = self._refused_rollout[1]
                self.public_error = self.rollout_error
                return
            candidate = load_candidate(
                self.archive,
                self.ref.name,
                self.ref.alias,
                rollout,
                self.scorer,
                threads=self.threads,
            )
        except Exception as exc:  # a poller must survive anything the archive hands it
            self.following = None
            self.last_error = (
                str(exc) if isinstance(exc, DscError) else f"{type(exc).__name__}: {exc}"
            )
            if rollout is not None:
                self.rollout_error = self.public_error = _public(
                    exc, self.ref.name, rollout.candidate, candidate=True
                )
            if isinstance(exc, CANDIDATE_REFUSALS) and rollout is not None:
                self._refused_rollout = (rollout.id, self.last_error)
            log.warning(
                "not following the rollout of %s: %s",
                self.ref,
                self.last_error,
                exc_info=not isinstance(exc, DscError),
                extra={"model": self.scorer.name, "version": self.scorer.version},
            )
            return
        self.following = (rollout, candidate)
        self.rollout_error = None
        log.info(
            "following the rollout of %s: candidate %s in %s",
            self.ref,
            rollout.candidate,
            rollout.mode,
            extra={"model": candidate.name, "version": candidate.version},
        )

    def refresh(self) -> bool:
        """Swap in the version the reference points at now, if it changed and verifies.

        Returns True when a new version was swapped in. Never raises: a version that fails
        (integrity, ONNX Runtime, goldens) is logged, kept in ``last_error`` and not tried
        again until the reference moves; an archive that could not be read is tried again at
        the next poll.
        """
        if not self.follows:
            return False
        swapped = self._refresh_version()
        self._follow_rollout()
        return swapped

    def _refresh_version(self) -> bool:
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
    RolloutError: "has an interface the serving version's rows do not fit",
}


def _public(exc: BaseException, name: str, version: int | None, *, candidate: bool = False) -> str:
    """One line about a refresh failure (or, with ``candidate``, a rollout candidate's),
    without internal paths (the log has the rest)."""
    which = f"version {version} of {name}" if version is not None else f"the alias of {name}"
    if candidate:
        which = f"rollout candidate {which}"
    after = (
        "it answers no request and the serving version answers all"
        if candidate
        else "still serving the previous version"
    )
    for kind, text in _PUBLIC.items():
        if isinstance(exc, kind):
            return f"{which} {text}; {after} (details in the log)"
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

    def start(self, interval: float, *, after_poll: Callable[[], None] | None = None) -> None:
        """Poll the archive every ``interval`` seconds on a daemon thread (0 disables);
        ``after_poll`` runs on that thread after each poll (the server records and judges
        its rollout comparisons there, off the request path). An exception from it is
        logged and polling goes on."""
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                self.refresh()
                if after_poll is not None:
                    try:
                        after_poll()
                    except Exception:  # the poller outlives any bug of a hook
                        log.exception("after-poll hook failed")

        self._thread = threading.Thread(target=loop, name="dsc-alias-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
