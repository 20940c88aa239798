"""Models that follow their alias: load the new version beside the old, check, then swap.

The server polls on a background thread; the Lambda handler calls :meth:`LiveModel.refresh`
when its interval has passed. A swap is one attribute assignment, so a request either
gets the old scorer or the new one, never a half-loaded model. A new version that fails
verification (sha256 or golden replay) is not swapped in: the old one keeps serving and
the failure is logged and kept in ``last_error``; ``public_error`` says the same without
the archive's paths and keys, for answers to clients.

The version's failure and the candidate's are kept apart and read through properties
(the version's first), each written once per poll: a client reading metadata while the
poller runs sees the error before or after the poll, never a ``None`` in between.

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
        # Why the version the reference points at is not serving, and why the rollout's
        # candidate is not followed: (for the log, for clients), or None.
        self._version_error: tuple[str, str] | None = None
        self._candidate_error: tuple[str, str] | None = None
        self._refused: int | None = None  # the version that last failed to load
        self.scorer: Scorer = self._load(self.ref)
        #: The running rollout and its verified candidate; None without one. One attribute,
        #: so a request reads both from the same poll.
        self.following: tuple[Rollout, Scorer] | None = None
        # The rollout whose candidate failed verification: not loaded again.
        self._refused_rollout: str | None = None
        self._follow_rollout()

    @property
    def last_error(self) -> str | None:
        """Why the last poll could not serve what the archive says (the version's failure
        first, else the rollout candidate's), with details for the log; None when all is
        followed."""
        failed = self._version_error or self._candidate_error
        return failed[0] if failed else None

    @property
    def public_error(self) -> str | None:
        """:attr:`last_error` without internal paths, keys or hashes, for clients."""
        failed = self._version_error or self._candidate_error
        return failed[1] if failed else None

    @property
    def rollout_error(self) -> str | None:
        """Why the running rollout's candidate is not followed, without internal paths;
        None while it is followed or when there is no rollout."""
        return self._candidate_error[1] if self._candidate_error else None

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
                self._candidate_error = None
                return
            if self.following is not None and self.following[0].candidate == rollout.candidate:
                self.following = (rollout, self.following[1])  # mode, share or thresholds
                return
            if rollout.id == self._refused_rollout:
                return  # still refused, and still saying why
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
            detail = _detail(exc)
            self._candidate_error = (
                detail,
                _public(exc, self.ref.name, rollout.candidate if rollout else None, candidate=True),
            )
            if isinstance(exc, CANDIDATE_REFUSALS) and rollout is not None:
                self._refused_rollout = rollout.id
            log.warning(
                "not following the rollout of %s: %s",
                self.ref,
                detail,
                exc_info=not isinstance(exc, DscError),
                extra={"model": self.scorer.name, "version": self.scorer.version},
            )
            return
        self.following = (rollout, candidate)
        self._candidate_error = None
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
                self._version_error = None  # the alias came back
                return False
            if version == self._refused:
                return False  # already failed; keep reporting it, do not reload it every poll
            candidate = self._load(Ref(name=self.ref.name, version=version))
        except Exception as exc:  # a poller must survive anything the archive hands it
            self._version_error = (_detail(exc), _public(exc, self.ref.name, version))
            # A version that fails verification stays refused; a read that failed may succeed
            # on the next poll.
            if isinstance(exc, _VERDICTS):
                self._refused = version
            log.warning(
                "keeping %s@%s: %s",
                self.scorer.name,
                self.scorer.version,
                self._version_error[0],
                exc_info=not isinstance(exc, DscError),
                extra={"model": self.scorer.name, "version": self.scorer.version},
            )
            return False
        old = self.scorer
        self.scorer = candidate
        self._version_error = None
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


def _detail(exc: BaseException) -> str:
    """A failure as the log tells it: our errors by their message, others by their type."""
    return str(exc) if isinstance(exc, DscError) else f"{type(exc).__name__}: {exc}"


def _public(exc: BaseException, name: str, version: int | None, *, candidate: bool = False) -> str:
    """One line about a refresh failure (or, with ``candidate``, a rollout candidate's),
    without internal paths (the log has the rest)."""
    if candidate:
        which = (
            f"rollout candidate version {version} of {name}"
            if version
            else f"the rollout of {name}"
        )
    else:
        which = f"version {version} of {name}" if version is not None else f"the alias of {name}"
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
