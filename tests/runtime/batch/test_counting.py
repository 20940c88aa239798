"""Drift counting in `dsc score`: each shard's manifest carries its counts, `_SUCCESS` the
merged report, and both equal one pass over the same rows through the core."""

from __future__ import annotations

import json
from dataclasses import replace

from dscloud.baseline import Baseline
from dscloud.batch import Location, run_local
from dscloud.batch.counting import count_input
from dscloud.drift import DriftCounts
from tests.runtime.conftest import counted, shifted


def test_shards_merged_in_success_equal_one_pass(
    make_job, write_files, users, churn_artifact, churn_scorer, tmp_path
) -> None:
    frame = shifted(users)
    job = make_job(write_files(frame, files=3), shard_count=3)
    manifests = run_local(job, workers=1)
    baseline = Baseline.of(churn_artifact.envelope.data)
    assert baseline is not None

    one_pass = counted(baseline, churn_scorer, frame)
    merged = DriftCounts(baseline)
    for m in manifests:
        assert m.drift is not None and m.drift["rows"] == m.rows_out
        merged.merge(DriftCounts.from_dict(m.drift, baseline))
    assert merged.to_dict() == one_pass.to_dict()

    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert success["drift"] == json.loads(json.dumps(one_pass.report().to_dict()))
    # The known shift reads as major, ranked first; the prediction moved with it.
    assert success["drift"]["worst_feature"] in {"age", "plan"}
    assert success["drift"]["worst_feature_psi"] > 0.25


def test_rejected_rows_are_not_counted(make_job, write_files, users, tmp_path) -> None:
    frame = users.head(600).copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[[3, 77], "age"] = "forty"  # the core rejects these rows with the reason
    job = make_job(write_files(frame, files=1, fmt="csv"))
    (manifest,) = run_local(job, workers=1)
    assert manifest.rows_rejected == 2
    assert manifest.drift is not None and manifest.drift["rows"] == 598


def test_count_input_reads_any_format_like_the_job(
    write_files, users, churn_artifact, churn_scorer
) -> None:
    baseline = Baseline.of(churn_artifact.envelope.data)
    assert baseline is not None
    csv = write_files(users, files=2, fmt="csv", name="csv")
    parquet = write_files(users, files=2, fmt="parquet", name="parquet")
    from_csv = count_input(Location(str(csv)), churn_scorer, baseline, chunk_rows=700)
    from_parquet = count_input(Location(str(parquet)), churn_scorer, baseline)
    assert (
        from_csv.to_dict()
        == from_parquet.to_dict()
        == counted(baseline, churn_scorer, users).to_dict()
    )
    report = from_parquet.report()
    assert report.worst is not None and report.worst.psi is not None and report.worst.psi < 0.1


def test_a_model_without_baseline_writes_no_drift(
    make_job, write_files, users, archive, churn_artifact, tmp_path
) -> None:
    data = {k: v for k, v in churn_artifact.envelope.data.items() if k != "baseline"}
    archive.publish(replace(churn_artifact.envelope, data=data), churn_artifact.model)
    job = make_job(write_files(users.head(500), files=1), model="churn@2")
    (manifest,) = run_local(job, workers=1)
    assert manifest.drift is None and manifest.rows_out == 500
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["drift"] is None
