"""diff and history: what changed between versions, and metrics over time."""

from __future__ import annotations

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.compare import diff, history


def _publish(archive: Archive, seed: int, C: float) -> None:
    ex = example.train(seed=seed, rows=1500, C=C)
    art = dscloud.package(
        ex.estimator,
        ex.X_test,
        name="churn",
        metrics=ex.metrics,
        params=ex.params,
        training_data=ex.X_train,
        y=ex.y_train,
        seed=seed,
    )
    dscloud.publish(art, archive)


def test_diff_names_parameters_data_and_metric_deltas(tmp_path) -> None:
    archive = Archive.open(tmp_path)
    _publish(archive, seed=1, C=1.0)
    _publish(archive, seed=2, C=0.1)
    a, b = archive.envelope("churn@1"), archive.envelope("churn@2")

    result = diff(a, b)

    params = {c.path: (c.old, c.new) for c in result.section("parameters")}
    assert params["C"] == (1.0, 0.1) and params["seed"] == (1, 2)
    assert any(c.path == "fingerprint" for c in result.section("data"))
    auc = next(c for c in result.section("metrics") if c.path == "auc")
    assert auc.delta == b.metrics["auc"] - a.metrics["auc"]
    assert any(c.path == "sha256" for c in result.section("integrity"))
    assert result.section("schema") == []  # same columns
    assert diff(a, a).changes == []


def test_history_lists_versions_with_metrics_and_aliases(tmp_path) -> None:
    archive = Archive.open(tmp_path)
    for seed in (1, 2, 3):
        _publish(archive, seed=seed, C=1.0)
    archive.promote("churn", 2, "production")
    archive.promote("churn", 3, "staging")
    rows = history(archive, "churn")
    assert [r.version for r in rows] == [1, 2, 3]
    assert [r.aliases for r in rows] == [(), ("production",), ("staging",)]
    assert all(set(r.metrics) == {"auc", "accuracy", "log_loss"} for r in rows)
    assert len({r.metrics["auc"] for r in rows}) == 3


def test_history_shows_live_metrics_beside_the_offline_ones(archive: Archive) -> None:
    # given two live evaluations of churn@1 recorded from outcomes
    archive.record_evaluation(
        "churn", 1, {"metrics": {"auc": 0.81}, "rows": {"matched": 900}, "window": None}
    )
    archive.record_evaluation(
        "churn", 1, {"metrics": {"auc": 0.74}, "rows": {"matched": 950}, "window": None}
    )
    (row,) = history(archive, "churn")
    assert [e["metrics"]["auc"] for e in row.live] == [0.81, 0.74]
    assert row.live_metrics == {"auc": 0.74}
    assert "auc" in row.metrics  # the offline figure stays beside it
