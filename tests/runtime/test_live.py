"""Alias following: new versions swap in after verification; bad ones never do."""

from __future__ import annotations

import dscloud
from dscloud.archive import Archive
from dscloud.live import LiveModel, ModelSet


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
    model = tmp_path / "archive/models/churn/versions/2/model.onnx"
    model.write_bytes(model.read_bytes() + b"x")
    archive.promote("churn", 2, "production")
    assert not live.refresh()
    assert live.scorer.version == 1
    assert live.last_error is not None and "sha256" in live.last_error


def test_pinned_versions_never_move(archive: Archive, churn_artifact) -> None:
    models = ModelSet(archive, ["churn@1"])
    dscloud.publish(churn_artifact, archive)
    assert models.refresh() == [] and models.get("churn").scorer.version == 1
