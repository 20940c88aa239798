"""Alias following: new versions swap in after verification; bad ones never do; a rollout's
candidate is followed the same way."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import dscloud
from dscloud import rollout
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.live import LiveModel, ModelSet


def tamper_candidate(archive: Archive, candidate: Artifact, tmp_path: Path, **start: Any) -> None:
    """Start a rollout of ``candidate`` as version 2, then flip its model's last byte."""
    dscloud.publish(candidate, archive)
    rollout.start(archive, "churn", "production", 2, **start)
    model = tmp_path / "archive/models/churn/versions/2/model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")


def test_refresh_swaps_when_the_alias_moves(archive: Archive, churn_artifact) -> None:
    live = LiveModel(archive, "churn@production")
    assert not live.refresh()
    dscloud.publish(churn_artifact, archive)
    archive.promote("churn", 2, "production")
    assert live.refresh() and live.scorer.version == 2


def test_a_tampered_new_version_is_not_swapped_in(
    archive: Archive, churn_artifact, tmp_path
) -> None:
    live = LiveModel(archive, "churn@production")
    dscloud.publish(churn_artifact, archive)
    archive.promote("churn", 2, "production")  # verified then, tampered after
    model = tmp_path / "archive/models/churn/versions/2/model.onnx"
    model.write_bytes(model.read_bytes() + b"x")
    assert not live.refresh()
    assert live.scorer.version == 1
    assert live.last_error is not None and "sha256" in live.last_error


def test_pinned_versions_never_move(archive: Archive, churn_artifact) -> None:
    models = ModelSet(archive, ["churn@1"])
    dscloud.publish(churn_artifact, archive)
    assert models.refresh() == [] and models.get("churn").scorer.version == 1


def test_a_version_onnx_runtime_cannot_load_is_refused_once_and_the_poller_survives(
    archive: Archive, churn_artifact, caplog
) -> None:
    import dataclasses

    from dscloud.envelope import sha256_hex

    # given v2 whose bytes verify (the envelope records their sha256) but are no ONNX graph
    garbage = b"not an onnx graph"
    env = dataclasses.replace(
        churn_artifact.envelope, sha256=sha256_hex(garbage), size_bytes=len(garbage)
    )
    archive.publish(env, garbage)
    archive.promote("churn", 2, "production")
    models = ModelSet(archive, ["churn@1"])  # a pinned one never moves
    live = LiveModel(archive, "churn@1")
    live.ref = live.ref.__class__(name="churn", alias="production")

    # when polled twice, then it keeps v1, says why, and does not reload v2 every poll
    assert not live.refresh()
    assert live.scorer.version == 1 and "ONNX Runtime cannot load" in (live.last_error or "")
    loads = []
    live._load = lambda ref: loads.append(ref)  # type: ignore[method-assign]
    assert not live.refresh() and loads == []

    # and a good v3 still swaps in
    del live._load
    dscloud.publish(churn_artifact, archive)
    archive.promote("churn", 3, "production")
    assert live.refresh() and live.scorer.version == 3 and live.last_error is None
    assert models.get("churn").scorer.version == 1


def test_the_poller_survives_an_unexpected_archive_failure(archive: Archive, monkeypatch) -> None:
    live = LiveModel(archive, "churn@production")

    def broken(ref):
        raise OSError("disk on fire")

    monkeypatch.setattr(archive, "resolve", broken)
    assert not live.refresh()
    assert live.last_error == "OSError: disk on fire" and live.scorer.version == 1


def test_two_references_to_one_model_name_are_refused(archive: Archive) -> None:
    import pytest

    from dscloud.errors import ConfigError

    with pytest.raises(ConfigError, match="both model 'churn'"):
        ModelSet(archive, ["churn@production", "churn@1"])


# -- following a rollout ------------------------------------------------------------------


def test_a_live_model_follows_its_alias_rollout(archive: Archive, churn_retrained) -> None:
    # given churn@production -> 1 served, and a retrained churn@2
    dscloud.publish(churn_retrained, archive)
    live = LiveModel(archive, "churn@production")
    assert live.following is None and live.answering("user-1") is live.scorer

    # when a shadow rollout starts: the candidate is loaded, and still answers no one
    rollout.start(archive, "churn", "production", 2, mode="shadow")
    assert live.refresh() is False  # the serving version did not move
    assert live.following is not None and live.following[1].version == 2
    assert all(live.answering(f"user-{i}") is live.scorer for i in range(200))

    # when it becomes a canary of every key: the candidate answers them
    rollout.change(archive, "churn", "production", mode="canary", share=1.0)
    live.refresh()
    assert live.answering("user-1").version == 2
    assert live.answering(None) is live.scorer  # no key, no canary

    # when it is aborted: dropped
    rollout.abort(archive, "churn", "production", reason="test")
    live.refresh()
    assert live.following is None and live.answering("user-1").version == 1


def test_a_candidate_tampered_after_the_start_never_serves(
    archive: Archive, churn_retrained, tmp_path
) -> None:
    tamper_candidate(archive, churn_retrained, tmp_path, mode="canary", share=1.0)

    live = LiveModel(archive, "churn@production")
    live.refresh()
    assert live.following is None and live.answering("user-1").version == 1
    assert live.last_error is not None and "sha256" in live.last_error


def test_a_refused_candidate_is_told_without_paths(
    archive: Archive, churn_retrained, tmp_path
) -> None:
    tamper_candidate(archive, churn_retrained, tmp_path, mode="shadow")

    live = LiveModel(archive, "churn@production")
    for _ in range(2):  # and still so after a poll that found the serving version unchanged
        live.refresh()
        assert live.following is None
        assert live.last_error is not None and str(tmp_path) in live.last_error
        assert live.public_error == live.rollout_error
        assert live.rollout_error == (
            "rollout candidate version 2 of churn failed its sha256 integrity check; it "
            "answers no request and the serving version answers all (details in the log)"
        )

    # when the rollout is aborted, the error goes with it
    rollout.abort(archive, "churn", "production", reason="tampered")
    live.refresh()
    assert live.rollout_error is None and live.public_error is None


def test_a_refused_candidate_is_never_unsaid_in_the_middle_of_a_poll(
    archive: Archive, churn_retrained, tmp_path
) -> None:
    # given a live model that refused its rollout's candidate
    tamper_candidate(archive, churn_retrained, tmp_path, mode="canary", share=1.0)
    live = LiveModel(archive, "churn@production")
    said = live.public_error
    assert said is not None

    # when a client reads the error between the version check and the rollout check
    seen = []
    follow = live._follow_rollout

    def reading_in_between() -> None:
        seen.append((live.public_error, live.rollout_error))
        follow()

    live._follow_rollout = reading_in_between  # type: ignore[method-assign]
    live.refresh()

    # then it reads what it read before the poll (the server's metadata once read None here)
    assert seen == [(said, said)]
    assert live.public_error == said


def test_a_candidate_with_another_interface_is_refused(
    archive: Archive, churn_retrained, forest_artifact
) -> None:
    # given a rollout whose candidate was replaced by a model with other inputs, after start
    dscloud.publish(churn_retrained, archive)
    rollout.start(archive, "churn", "production", 2, mode="canary", share=1.0)
    other = dataclasses.replace(forest_artifact.envelope, name="churn")
    dscloud.publish(Artifact(envelope=other, model=forest_artifact.model), archive)
    record, tag = archive.alias_tagged("churn", "production")  # type: ignore[misc]
    record["rollout"].update(candidate=3, candidate_sha256=other.sha256)
    archive.swap_alias("churn", "production", record, tag)

    # then the live model never routes to it, and says why
    live = LiveModel(archive, "churn@production")
    assert live.following is None and live.answering("user-1").version == 1
    assert live.last_error is not None and "input columns differ" in live.last_error
    assert live.rollout_error is not None and "rows do not fit" in live.rollout_error


def test_the_poller_runs_its_hook_after_each_poll_and_survives_it(archive: Archive) -> None:
    models = ModelSet(archive, ["churn@production"])
    polls = threading.Semaphore(0)

    def hook() -> None:
        polls.release()
        raise RuntimeError("a bug in the hook")

    models.start(0.01, after_poll=hook)
    try:
        assert all(polls.acquire(timeout=10) for _ in range(3))  # it went on after raising
    finally:
        models.stop()
