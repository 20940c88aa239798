"""The batch job following its alias's rollout: both versions score every chunk.

When ``dsc score NAME@ALIAS`` finds a rollout on the alias (:mod:`dscloud.rollout`), the run
pins it together with the alias's version (:func:`pin`), once, when it is planned: every
shard of a run scores with the same pair. The manifests record the pair, so ``_SUCCESS``
refuses to appear over shards that followed different rollouts (or none), as it refuses
over shards that scored different versions. ``--no-rollout`` scores with the serving
version alone.

Each chunk is scored by the serving version and by the candidate (verified like any
version, its sha256 checked against the rollout record, its interface against the serving
version's: :func:`dscloud.rollout.load_candidate`),
and both predictions are counted in a :class:`~dscloud.rollout_compare.Comparison`. What a
part holds:

- **shadow**: the serving version's columns exactly as a run without a rollout writes them,
  then the candidate's after them, prefixed ``candidate_`` (``candidate_label``,
  ``candidate_probability_<class>``, ``candidate_value``, ``candidate_model_version``, and
  ``candidate_reason``: why the candidate alone refused the row, else null). The serving
  columns keep their names, types, order and values, so readers that ignore the rollout
  read the same table.
- **canary**: the same columns as a run without a rollout; each row is answered by the
  version that routing picks (:meth:`~dscloud.rollout.Rollout.answers` on the row's key:
  the key column's value as text, e.g. ``u00000042`` or ``42``; several key columns are
  joined by ``|``), and ``model_version`` / ``model_sha256`` name that version row by row.
  A row whose key is null is answered by the serving version. A canary needs key columns
  (``--key``, or ``user_id`` present): without them the run is refused, because routing
  by row position would send a user to another version whenever the input is re-cut.
  A row the answering version refuses goes to the rejects with its reason (prefixed
  ``candidate NAME@V:`` when the candidate refused it).

A candidate that fails verification never scores a row: the run scores with the serving
version alone, and the manifests and ``_SUCCESS`` say why (``rollout.refused``). A
candidate call that fails on a chunk counts each of its rows as the candidate's error; the
serving version answers them (and in shadow ``candidate_reason`` says what failed).

Each shard records its comparison in the archive once, after its manifest
(:func:`dscloud.rollout_guard.record_comparison`); the run's guard rail is judged once, on
the figures of the whole run, by whoever writes ``_SUCCESS`` (:func:`guard_run`): one
shard's handful of rows cannot abort a rollout, and an abort never changes what the other
shards of the same run score. An aborted rollout is logged and named in ``_SUCCESS``
(``rollout.aborted``); the run itself completes with the pair it pinned.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from dscloud.archive import Archive, Ref
from dscloud.batch.arrays import arrow_array, arrow_strings
from dscloud.batch.formats import Chunk
from dscloud.batch.manifest import Judge
from dscloud.batch.writer import MODEL_COLUMNS, prediction_table
from dscloud.errors import ConfigError, DataError
from dscloud.rollout import CANDIDATE_REFUSALS, Rollout, load_candidate, status
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import guard, record_comparison
from dscloud.scorer import Predictions, Scorer

__all__ = [
    "CANDIDATE_COLUMNS",
    "KEY_SEPARATOR",
    "PREFIX",
    "Candidate",
    "Follower",
    "Following",
    "Scored",
    "guard_run",
    "open_candidate",
    "pin",
]

log = logging.getLogger(__name__)

#: The prefix of the candidate's columns in a shadow run's parts.
PREFIX = "candidate_"
#: Columns of a shadow part that repeat (dictionary-encoded by the writer).
CANDIDATE_COLUMNS = (f"{PREFIX}label", f"{PREFIX}model_version", f"{PREFIX}reason")
#: Joins the text of several key columns into one routing key.
KEY_SEPARATOR = "|"
_ALIAS_TRIES = 5

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Following:
    """The rollout a run follows, pinned with the model version when the run is planned."""

    name: str
    alias: str
    rollout: Rollout

    def record(self, *, refused: str | None) -> dict[str, Any]:
        """The ``rollout`` of a shard manifest, before its comparison is added."""
        return {
            "name": self.name,
            "alias": self.alias,
            **self.rollout.to_dict(),
            "refused": refused,
        }


def pin(archive: Archive, ref: Ref) -> tuple[int, Following | None]:
    """The version ``ref`` points at and, for an alias with a rollout, that rollout: read
    from the same alias record. Raises :class:`~dscloud.errors.NotFoundError` /
    :class:`~dscloud.errors.ArtifactIntegrityError` as :meth:`Archive.resolve` does, and
    :class:`DataError` when the alias kept moving while it was read."""
    if ref.alias is None or ref.path is not None:
        return archive.resolve(ref), None
    for _ in range(_ALIAS_TRIES):
        record, rollout = status(archive, ref.name, ref.alias)
        version = archive.resolve(ref)  # checks the sha256 the alias vouches for
        if version != int(record["version"]):
            continue  # the alias moved between the two reads
        if rollout is None or rollout.candidate == version:
            return version, None
        return version, Following(ref.name, ref.alias, rollout)
    raise DataError(f"{ref}: the alias kept moving while the run was planned; run it again")


@dataclass
class Candidate:
    """The candidate a shard scores with, or why it may not (then ``scorer`` is None)."""

    scorer: Scorer | None
    refused: str | None = None


def open_candidate(
    archive: str, following: Following, serving: Scorer, *, threads: int = 1
) -> Candidate:
    """The pinned rollout's candidate, verified; a candidate that fails (sha256, goldens,
    ONNX Runtime, missing, an interface ``serving``'s rows do not fit) is refused with the
    reason, logged, and never scores. Raises what reading the archive raises otherwise (the
    shard fails and can be re-run)."""
    rollout = following.rollout
    try:
        scorer = load_candidate(
            Archive.open(archive),
            following.name,
            following.alias,
            rollout,
            serving,
            threads=threads,
        )
    except CANDIDATE_REFUSALS as exc:
        why = f"candidate {following.name}@{rollout.candidate} refused: {exc}"
        log.warning("scoring with the serving version only: %s", why)
        return Candidate(None, why)
    return Candidate(scorer)


@dataclass
class Scored:
    """One chunk scored by both versions: ``answer`` is what the part and rejects hold."""

    current: Predictions
    candidate: Predictions | None
    answer: Predictions
    #: Per output row of ``answer``, the version that scored it (canary only).
    versions: Array | None = None
    #: Why the candidate's call failed on this chunk, if it did.
    failure: str | None = None


class Follower:
    """Scores one shard's chunks with both versions, counts them, and shapes its part."""

    def __init__(
        self,
        following: Following,
        current: Scorer,
        candidate: Scorer,
        *,
        keys: Sequence[str],
        features: Sequence[str],
    ) -> None:
        """Raises :class:`ConfigError` for a canary without key columns."""
        self.following = following
        self.rollout = following.rollout
        if self.rollout.mode == "canary" and not keys:
            raise ConfigError(
                f"{following.name}@{following.alias} has a canary rollout (candidate "
                f"{self.rollout.candidate}, {self.rollout.share:.0%} of keys), which routes rows "
                "by key: name the key columns with --key COL (routing by row position is not "
                "stable across runs), or score with the serving version only: --no-rollout"
            )
        self.current = current
        self.candidate = candidate
        self.keys = list(keys)
        self.features = list(features)
        self.comparison = Comparison(current.version or 0, candidate.version or 0)
        self._answers = self.rollout.router(following.name, following.alias)

    def score(self, chunk: Chunk, columns: Mapping[str, Any]) -> Scored:
        """Both versions' predictions of ``chunk``, counted, and the answer to write."""
        n = chunk.num_rows
        t0 = time.perf_counter()
        current = self.current.score_columns(columns, n)
        t1 = time.perf_counter()
        candidate: Predictions | None = None
        failure = None
        try:
            candidate = self.candidate.score_columns(columns, n)
        except Exception as exc:  # the candidate never fails the run
            failure = f"candidate call failed: {type(exc).__name__}: {exc}"
            log.warning("%s@%s: %s", self.following.name, self.rollout.candidate, failure)
        t2 = time.perf_counter()
        self.comparison.add(
            current,
            candidate,
            inputs=_Inputs(chunk.batch, self.features),
            seconds=(t1 - t0, t2 - t1),
            n_rows=n,
        )
        if self.rollout.mode == "shadow" or candidate is None:
            return Scored(current, candidate, current, failure=failure)
        answer, versions = self._canary(current, candidate, self._routed(chunk))
        return Scored(current, candidate, answer, versions)

    def table(self, chunk: Chunk, scored: Scored) -> pa.Table:
        """The part's rows for ``chunk`` (see the module docstring for the layout)."""
        table = prediction_table(chunk, self.keys, scored.answer)
        if self.rollout.mode == "shadow":
            return self._shadow_columns(table, scored)
        if scored.versions is None:
            return table
        return _versions_per_row(table, scored.versions, self.current, self.candidate)

    def record(self, archive: str) -> None:
        """Record this shard's comparison in the archive (``rollout-compare``), once."""
        if self.comparison.versions["current"].rows == 0:
            return
        record_comparison(
            Archive.open(archive),
            self.following.name,
            self.following.alias,
            self.rollout,
            self.comparison,
            by="dsc score",
        )

    # -- canary ---------------------------------------------------------------------------

    def _routed(self, chunk: Chunk) -> Array:
        """Per input row, whether its key routes it to the candidate."""
        texts = [pc.cast(chunk.batch.column(k), pa.string()).to_pylist() for k in self.keys]
        keys = (
            texts[0]
            if len(texts) == 1
            else [
                None if None in parts else KEY_SEPARATOR.join(parts)
                for parts in zip(*texts, strict=True)
            ]
        )
        answers = self._answers
        return np.fromiter(
            (key is not None and answers(key) for key in keys), dtype=bool, count=chunk.num_rows
        )

    def _canary(
        self, current: Predictions, candidate: Predictions, routed: Array
    ) -> tuple[Predictions, Array]:
        """Each row's prediction from the version its key routes to, and that version."""
        i_cur = np.flatnonzero(~routed[current.rows])
        i_cand = np.flatnonzero(routed[candidate.rows])
        rows = np.concatenate([current.rows[i_cur], candidate.rows[i_cand]])
        order = np.argsort(rows, kind="stable")

        def pick(a: Array | None, b: Array | None) -> Array | None:
            if a is None or b is None:
                return None
            return np.concatenate([a[i_cur], b[i_cand]])[order]

        versions = np.concatenate(
            [
                np.full(len(i_cur), current.envelope.identity.version or 0, dtype=np.int64),
                np.full(len(i_cand), candidate.envelope.identity.version or 0, dtype=np.int64),
            ]
        )[order]
        who = f"candidate {self.following.name}@{self.rollout.candidate}: "
        rejects = {r: why for r, why in current.rejects.items() if not routed[r]}
        rejects.update({r: who + why for r, why in candidate.rejects.items() if routed[r]})
        answer = Predictions(
            envelope=current.envelope,
            rows=rows[order],
            label=pick(current.label, candidate.label),
            probabilities=pick(current.probabilities, candidate.probabilities),
            value=pick(current.value, candidate.value),
            rejects=dict(sorted(rejects.items())),
        )
        return answer, versions

    # -- shadow ---------------------------------------------------------------------------

    def _shadow_columns(self, table: pa.Table, scored: Scored) -> pa.Table:
        """``table`` with the candidate's predictions of the same rows after its columns."""
        current, candidate = scored.current, scored.candidate
        n = len(current.rows)
        if candidate is not None:
            pos = np.searchsorted(candidate.rows, current.rows)
            pos = np.minimum(pos, max(len(candidate.rows) - 1, 0))
            found = (
                candidate.rows[pos] == current.rows
                if len(candidate.rows)
                else np.zeros(n, dtype=bool)
            )
        else:
            pos, found = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        missing = ~found

        def beside(column: str, values: Array | None) -> None:
            nonlocal table
            kind = table.schema.field(column).type
            if values is None or not found.any():
                array = pa.nulls(n, type=kind)
            else:
                array = pa.array(values[pos], mask=missing).cast(kind)
            table = table.append_column(PREFIX + column, array)

        cand = candidate if candidate is not None else current  # only its kinds are read
        if current.label is not None:
            beside("label", cand.label)
        if current.probabilities is not None:
            for j, cls in enumerate(current.classes or range(current.probabilities.shape[1])):
                probs = cand.probabilities
                beside(f"probability_{cls}", None if probs is None else probs[:, j])
        if current.value is not None:
            beside("value", cand.value)
        version = np.full(n, self.candidate.version or 0, dtype=np.int64)
        table = table.append_column(
            PREFIX + MODEL_COLUMNS[1], pa.array(version, mask=missing, type=pa.int64())
        )
        if candidate is None:
            reasons: list[str | None] = [scored.failure] * n
        else:
            reasons = [
                candidate.rejects.get(int(r)) if miss else None
                for r, miss in zip(current.rows, missing, strict=True)
            ]
        return table.append_column(PREFIX + "reason", pa.array(reasons, type=pa.string()))


def _versions_per_row(
    table: pa.Table, versions: Array, current: Scorer, candidate: Scorer
) -> pa.Table:
    """``table`` whose ``model_version`` and ``model_sha256`` name each row's version."""
    from_candidate = versions == (candidate.version or 0)
    shas = pa.DictionaryArray.from_arrays(
        arrow_array(from_candidate.astype(np.int8)),
        arrow_strings([current.sha256, candidate.sha256]),
    )
    for column, array in ((MODEL_COLUMNS[1], arrow_array(versions)), (MODEL_COLUMNS[2], shas)):
        table = table.set_column(table.schema.get_field_index(column), column, array)
    return table


class _Inputs(Sequence[Mapping[str, Any]]):
    """The feature values of a chunk's rows as JSON-ready dicts, built only for the few rows
    a :class:`Comparison` keeps among its largest differences."""

    def __init__(self, batch: pa.RecordBatch, features: Sequence[str]) -> None:
        self.batch = batch
        self.features = [f for f in features if f in batch.schema.names]

    def __len__(self) -> int:
        return int(self.batch.num_rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {name: _json_ready(self.batch.column(name)[i].as_py()) for name in self.features}


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# -- the run's guard rail ---------------------------------------------------------------------


def guard_run(archive: str) -> Judge:
    """The judge :func:`dscloud.batch.manifest.finalize` calls with a run's pinned rollout
    and merged comparison: abort the rollout if the run's figures breach its thresholds.

    The judge returns what ``_SUCCESS`` adds under ``rollout``: ``breaches`` (what was
    beyond a limit, [] when nothing) and ``aborted`` (the abort's audit record, this run's
    or, when another runtime aborted first, that one; None when nothing was breached).
    """

    def judge(pinned: Mapping[str, Any], merged: Comparison) -> dict[str, Any]:
        rollout = Rollout.from_dict(pinned)
        figures = merged.figures()
        breaches = rollout.thresholds.breaches(figures)
        if not breaches:
            return {"breaches": [], "aborted": None}
        name, alias = str(pinned["name"]), str(pinned["alias"])
        store = Archive.open(archive)
        audit = guard(store, name, alias, rollout, figures, by="dsc score")
        if audit is None:  # already ended: find the record of whoever ended it
            audit = next(
                (
                    r
                    for r in reversed(store.audit(name))
                    if r.get("event") == "rollout-abort"
                    and ((r.get("from") or {}).get("rollout") or {}).get("id") == rollout.id
                ),
                None,
            )
        log.warning(
            "%s@%s: rollout of candidate %s breached its thresholds (%s); %s",
            name,
            alias,
            rollout.candidate,
            "; ".join(breaches),
            "aborted" if audit is not None else "it had already ended",
        )
        aborted = None
        if audit is not None:
            aborted = {k: audit.get(k) for k in ("at", "by", "why")}
        return {"breaches": breaches, "aborted": aborted}

    return judge
