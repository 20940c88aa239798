"""Rollouts on an alias: start, change, promote, abort as audited compare-and-swap writes;
refused candidates; deterministic canary routing. Against both stores (``rollout_archive``:
a directory and S3 on moto)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading

import mmh3
import pytest

from dscloud.archive import Archive
from dscloud.envelope import Artifact, Golden
from dscloud.errors import ConfigError, NotFoundError, RolloutError
from dscloud.rollout import (
    Rollout,
    Thresholds,
    abort,
    change,
    incompatibility,
    promote,
    routes_to_candidate,
    start,
    status,
)

KEYS = [f"user-{i}" for i in range(20000)]


def events(archive: Archive, event: str) -> list[dict]:
    return [r for r in archive.audit("churn") if r["event"] == event]


# -- the alias record ---------------------------------------------------------------------


def test_a_started_rollout_lives_in_the_alias_record(rollout_archive: Archive) -> None:
    # when
    started = start(
        rollout_archive,
        "churn",
        "production",
        2,
        mode="canary",
        share=0.2,
        thresholds=Thresholds(max_error_rate=0.01, max_disagreement=0.05),
        reason="retrained on October",
        by="ana",
    )

    # then the alias still serves version 1, and carries the candidate
    record, rollout = status(rollout_archive, "churn", "production")
    assert record["version"] == 1 and rollout_archive.resolve("churn@production") == 1
    assert rollout == started
    assert (rollout.candidate, rollout.mode, rollout.share) == (2, "canary", 0.2)
    assert rollout.candidate_sha256 == rollout_archive.envelope("churn@2").sha256
    assert rollout.thresholds.max_disagreement == 0.05 and rollout.started_by == "ana"
    (audit,) = events(rollout_archive, "rollout-start")
    assert audit["by"] == "ana" and audit["why"] == "retrained on October"
    assert audit["from"] == {"version": 1, "rollout": None}
    assert audit["to"]["rollout"]["candidate"] == 2


def test_alias_records_without_a_rollout_still_read(rollout_archive: Archive) -> None:
    record, rollout = status(rollout_archive, "churn", "production")
    assert rollout is None and set(record) == {"version", "sha256", "set_by", "set_at"}


def test_a_second_rollout_on_the_same_alias_is_refused(rollout_archive: Archive) -> None:
    start(rollout_archive, "churn", "production", 2, mode="shadow")
    with pytest.raises(RolloutError, match="already has a rollout"):
        start(rollout_archive, "churn", "production", 2, mode="canary", share=0.1)


def test_the_serving_version_is_no_candidate(rollout_archive: Archive) -> None:
    with pytest.raises(RolloutError, match="already serves version 1"):
        start(rollout_archive, "churn", "production", 1, mode="shadow")


def test_an_unknown_alias_or_version_is_not_found(rollout_archive: Archive) -> None:
    with pytest.raises(NotFoundError, match="staging"):
        start(rollout_archive, "churn", "staging", 2, mode="shadow")
    with pytest.raises(RolloutError, match="churn@9 refused"):
        start(rollout_archive, "churn", "production", 9, mode="shadow")


def test_changing_moves_from_shadow_to_canary_and_audits(rollout_archive: Archive) -> None:
    start(rollout_archive, "churn", "production", 2, mode="shadow")
    changed = change(
        rollout_archive, "churn", "production", mode="canary", share=0.2, reason="looks fine"
    )
    assert (changed.mode, changed.share) == ("canary", 0.2)
    assert status(rollout_archive, "churn", "production")[1] == changed
    (audit,) = events(rollout_archive, "rollout-change")
    assert audit["from"]["rollout"]["mode"] == "shadow"
    assert audit["to"]["rollout"]["share"] == 0.2 and audit["why"] == "looks fine"


def test_promoting_moves_the_alias_and_ends_the_rollout(rollout_archive: Archive) -> None:
    start(rollout_archive, "churn", "production", 2, mode="canary", share=0.2)
    record = promote(rollout_archive, "churn", "production", reason="won", by="ben")
    assert record["version"] == 2 and record["set_by"] == "ben"
    assert status(rollout_archive, "churn", "production") == (record, None)
    assert rollout_archive.resolve("churn@production") == 2
    (audit,) = events(rollout_archive, "rollout-promote")
    assert (audit["from"]["version"], audit["to"]["version"], audit["by"]) == (1, 2, "ben")


def test_aborting_keeps_the_version_and_needs_a_reason(rollout_archive: Archive) -> None:
    start(rollout_archive, "churn", "production", 2, mode="shadow")
    with pytest.raises(ConfigError, match="reason"):
        abort(rollout_archive, "churn", "production", reason=" ")
    audit = abort(rollout_archive, "churn", "production", reason="worse on EU", by="ana")
    assert audit is not None and audit["why"] == "worse on EU" and audit["version"] == 1
    record, rollout = status(rollout_archive, "churn", "production")
    assert rollout is None and record["version"] == 1
    with pytest.raises(RolloutError, match="no rollout"):
        abort(rollout_archive, "churn", "production", reason="again")
    with pytest.raises(RolloutError, match="no rollout to promote"):
        promote(rollout_archive, "churn", "production")


# -- refused candidates -------------------------------------------------------------------


def tamper(archive: Archive, key: str, data: bytes) -> None:
    """Overwrite ``key`` behind the archive's back (the same for both stores)."""
    tagged = archive.store.get_tagged(key)
    assert tagged is not None
    archive.store.swap(key, data, tagged[1])


def test_a_tampered_candidate_is_refused(rollout_archive: Archive) -> None:
    key = "models/churn/versions/2/model.onnx"
    tamper(rollout_archive, key, rollout_archive.store.get(key)[:-1] + b"\x00")
    with pytest.raises(RolloutError, match=r"churn@2 refused: it does not verify: .*sha256"):
        start(rollout_archive, "churn", "production", 2, mode="shadow")
    assert status(rollout_archive, "churn", "production")[1] is None
    assert not events(rollout_archive, "rollout-start")


def test_a_candidate_tampered_during_the_rollout_is_never_promoted(
    rollout_archive: Archive,
) -> None:
    start(rollout_archive, "churn", "production", 2, mode="canary", share=0.5)
    key = "models/churn/versions/2/model.onnx"
    tamper(rollout_archive, key, rollout_archive.store.get(key)[:-1] + b"\x00")
    with pytest.raises(RolloutError, match="does not verify"):
        promote(rollout_archive, "churn", "production")
    assert rollout_archive.resolve("churn@production") == 1


def test_a_candidate_failing_its_goldens_is_refused(
    rollout_archive: Archive, churn_retrained: Artifact
) -> None:
    # given a version whose recorded golden outputs are not what ONNX Runtime computes
    env = churn_retrained.envelope
    wrong = tuple(
        Golden(inputs=g.inputs, outputs={**g.outputs, "probabilities": [[0.5, 0.5]]})
        for g in env.goldens
    )
    rollout_archive.publish(dataclasses.replace(env, goldens=wrong), churn_retrained.model)
    with pytest.raises(RolloutError, match=r"churn@3 refused: it does not verify: .*golden"):
        start(rollout_archive, "churn", "production", 3, mode="shadow")


def test_an_incompatible_candidate_is_refused(
    rollout_archive: Archive, forest_artifact: Artifact
) -> None:
    # given a model on the numeric columns only, published as churn@3
    env = dataclasses.replace(forest_artifact.envelope, name="churn")
    rollout_archive.publish(env, forest_artifact.model)
    with pytest.raises(RolloutError, match="interface incompatible with churn@1: input columns"):
        start(rollout_archive, "churn", "production", 3, mode="shadow")


def test_incompatibility_names_dtypes_and_outputs(
    churn_artifact: Artifact, churn_retrained: Artifact
) -> None:
    current = churn_artifact.envelope.schema
    assert incompatibility(current, churn_retrained.envelope.schema) is None
    retyped = dataclasses.replace(
        current,
        columns=(dataclasses.replace(current.columns[0], dtype="string"), *current.columns[1:]),
    )
    assert "input columns differ" in (incompatibility(current, retyped) or "")
    fewer = dataclasses.replace(current, outputs=current.outputs[:1])
    assert "output kinds differ" in (incompatibility(current, fewer) or "")
    relabelled = dataclasses.replace(
        current,
        outputs=tuple(
            dataclasses.replace(o, classes=("a", "b")) if o.classes else o for o in current.outputs
        ),
    )
    assert "classes differ" in (incompatibility(current, relabelled) or "")


# -- compare-and-swap under contention ----------------------------------------------------


def test_racing_starts_leave_exactly_one_rollout(rollout_archive: Archive) -> None:
    barrier = threading.Barrier(4)
    won: list[Rollout] = []
    refused: list[str] = []

    def begin(share: float) -> None:
        barrier.wait()
        try:
            won.append(start(rollout_archive, "churn", "production", 2, mode="canary", share=share))
        except RolloutError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=begin, args=(s,)) for s in (0.1, 0.2, 0.3, 0.4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3
    assert status(rollout_archive, "churn", "production")[1] == won[0]
    assert len(events(rollout_archive, "rollout-start")) == 1


def test_a_plain_alias_move_ends_the_rollout(rollout_archive: Archive) -> None:
    start(rollout_archive, "churn", "production", 2, mode="shadow")
    rollout_archive.promote("churn", 2, "production", by="ops")
    assert status(rollout_archive, "churn", "production")[1] is None


# -- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.01, 0.2, 0.5, 0.9])
def test_canary_shares_are_within_statistical_tolerance(share: float) -> None:
    picked = sum(routes_to_candidate(k, share, "churn@production>2") for k in KEYS)
    # six standard deviations of a binomial: a false alarm about once in 10**9 runs
    tolerance = 6 * (share * (1 - share) / len(KEYS)) ** 0.5
    assert abs(picked / len(KEYS) - share) < tolerance


def test_a_larger_share_only_adds_keys_and_zero_picks_none() -> None:
    small = {k for k in KEYS if routes_to_candidate(k, 0.1, "s")}
    large = {k for k in KEYS if routes_to_candidate(k, 0.3, "s")}
    assert small < large
    assert not any(routes_to_candidate(k, 0.0, "s") for k in KEYS)
    assert all(routes_to_candidate(k, 1.0, "s") for k in KEYS)


def test_another_candidate_redraws_the_canary() -> None:
    two = {k for k in KEYS if routes_to_candidate(k, 0.2, "churn@production>2")}
    three = {k for k in KEYS if routes_to_candidate(k, 0.2, "churn@production>3")}
    assert 0.1 < len(two & three) / len(two) < 0.3  # independent draws overlap by ~the share


def test_routing_is_murmur3_so_any_language_can_tell_a_users_version() -> None:
    # given the published MurmurHash3_x86_32 reference values (SMHasher)
    assert mmh3.hash("", 1, False) == 0x514E28B7
    assert mmh3.hash("The quick brown fox jumps over the lazy dog", 0, False) == 0x2E4FF723
    # the rule, spelled out: seed = murmur3(salt), route iff murmur3(key, seed) < share * 2**32
    seed = mmh3.hash("churn@production>2", 0, False)
    assert seed == 379750665
    assert mmh3.hash("user-42", seed, False) == 687892519  # 0.160 of 2**32
    assert routes_to_candidate("user-42", 0.17, "churn@production>2")
    assert not routes_to_candidate("user-42", 0.16, "churn@production>2")


def test_routing_is_the_same_in_another_process() -> None:
    # given a process with another string-hash seed (Python's hash() would differ)
    code = (
        "import json, sys\n"
        "from dscloud.rollout import routes_to_candidate\n"
        "keys = json.load(sys.stdin)\n"
        "print(json.dumps([routes_to_candidate(k, 0.2, 'churn@production>2') for k in keys]))\n"
    )
    keys = KEYS[:2000]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    assert json.loads(out.stdout) == [
        routes_to_candidate(k, 0.2, "churn@production>2") for k in keys
    ]


def test_a_rollout_routes_only_in_canary() -> None:
    shadow = Rollout(candidate=2, candidate_sha256="x", mode="shadow", share=0.0)
    canary = dataclasses.replace(shadow, mode="canary", share=1.0)
    assert not shadow.answers("churn", "production", "user-1")
    assert canary.answers("churn", "production", "user-1")
    with pytest.raises(ConfigError, match="share is 0"):
        dataclasses.replace(shadow, share=0.5)
    with pytest.raises(ConfigError, match="mode"):
        dataclasses.replace(shadow, mode="blue-green")


def test_a_router_answers_as_answers_does_key_by_key() -> None:
    canary = Rollout(candidate=2, candidate_sha256="x", mode="canary", share=0.2)
    router = canary.router("churn", "production")
    assert [router(k) for k in KEYS] == [canary.answers("churn", "production", k) for k in KEYS]
    shadow = dataclasses.replace(canary, mode="shadow", share=0.0)
    assert not any(shadow.router("churn", "production")(k) for k in KEYS)
