"""`dsc drift`, `dsc evaluate` and what `dsc show` / `dsc history` say about monitoring."""

from __future__ import annotations

import json
from dataclasses import replace

from tests.runtime.conftest import shifted

PNG = b"\x89PNG\r\n\x1a\n"


def test_drift_ranks_a_known_shift_first_and_plots_it(dsc, archive, users, tmp_path) -> None:
    data = tmp_path / "shifted.parquet"
    shifted(users).to_parquet(data)
    plot = tmp_path / "drift.png"
    code, out, err = dsc("drift", "churn@production", "--input", str(data), "--plot", str(plot))
    assert code == 0, err
    assert "PSI < 0.1 stable, 0.1 to 0.25 moderate, > 0.25 major" in out
    assert f"wrote {plot}" in out and plot.read_bytes()[:8] == PNG

    code, out, _ = dsc("drift", "churn@production", "--input", str(data), "--json")
    report = json.loads(out)
    assert report["rows"] == len(users)
    assert {f["name"] for f in report["features"][:2]} == {"age", "plan"}
    assert all(f["psi"] > 0.25 for f in report["features"][:2])
    assert all(f["psi"] < 0.1 for f in report["features"][2:])


def test_drift_of_a_sample_of_the_training_distribution_is_stable(
    dsc, archive, users, tmp_path
) -> None:
    data = tmp_path / "users.csv"
    users.to_csv(data, index=False)
    code, out, err = dsc("drift", "churn@1", "--input", str(data), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["worst_feature_psi"] < 0.1 and report["prediction"]["psi"] < 0.1


def test_show_says_whether_the_baseline_is_there(dsc, archive, churn_artifact, tmp_path) -> None:
    code, out, _ = dsc("show", "churn@1")
    assert code == 0 and "baseline     8 features and prediction (probability)" in out

    data = {k: v for k, v in churn_artifact.envelope.data.items() if k != "baseline"}
    archive.publish(replace(churn_artifact.envelope, data=data), churn_artifact.model)
    code, out, _ = dsc("show", "churn@2")
    assert code == 0 and "baseline     missing" in out

    data_file = tmp_path / "users.csv"
    data_file.write_text("age\n1\n")
    code, out, err = dsc("drift", "churn@2", "--input", str(data_file))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and "churn@2 has no training baseline" in err


def test_evaluate_records_live_metrics_that_history_shows(dsc, archive, users, tmp_path) -> None:
    data = tmp_path / "users.parquet"
    users.drop(columns=["churned"]).to_parquet(data)
    labels = tmp_path / "labels.csv"
    users[["user_id", "churned"]].to_csv(labels, index=False)
    run = tmp_path / "run"
    assert dsc("score", "churn@production", "--input", str(data), "--output", str(run))[0] == 0

    code, out, err = dsc(
        "evaluate", "churn@production", "--predictions", str(run), "--labels", str(labels),
        "--key", "user_id", "--label-column", "churned",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("churn@1 live: ") and " auc=" in out and "on 3,000 rows" in out

    (record,) = archive.evaluations("churn")
    assert record["version"] == 1 and record["rows"]["matched"] == 3000
    assert 0.6 < record["metrics"]["auc"] < 1 and 0 < record["metrics"]["log_loss"] < 1
    assert record["labels"] == str(labels) and record["key"] == "user_id"

    plot = tmp_path / "history.png"
    code, out, _ = dsc("history", "churn", "--metric", "auc", "--plot", str(plot))
    live_line = next(line for line in out.splitlines() if line.startswith("  live"))
    assert f"{record['metrics']['auc']:.4f}" in live_line and "(3000 rows)" in live_line
    assert plot.read_bytes()[:8] == PNG

    code, out, _ = dsc("history", "churn", "--json")
    assert json.loads(out)[0]["live"][0]["metrics"] == record["metrics"]


def test_evaluate_refuses_predictions_of_another_version(two_versions, users, tmp_path) -> None:
    dsc = two_versions
    data = tmp_path / "users.parquet"
    users.to_parquet(data)
    run = tmp_path / "run"
    assert dsc("score", "churn@1", "--input", str(data), "--output", str(run))[0] == 0
    code, out, err = dsc(
        "evaluate", "churn@2", "--predictions", str(run), "--labels", str(data),
        "--label-column", "churned",
    )  # fmt: skip
    assert code != 0 and out == ""
    assert "not by churn@2" in err
    assert dsc.archive.joinpath("models/churn/audit").exists() is False or not any(
        p.name.endswith("-evaluate.json")
        for p in dsc.archive.joinpath("models/churn/audit").iterdir()
    )


def test_import_onnx_with_baseline_data_stores_the_same_baseline(
    dsc, churn_artifact, churn_example, churn_baseline, tmp_path
) -> None:
    env = churn_artifact.envelope
    model = tmp_path / "churn.onnx"
    model.write_bytes(churn_artifact.model)
    goldens = tmp_path / "goldens.json"
    goldens.write_text(
        json.dumps([{"inputs": g.inputs, "outputs": g.outputs} for g in env.goldens])
    )
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(env.schema.to_dict()))
    train = tmp_path / "train.parquet"
    churn_example.X_train.to_parquet(train)
    argv = ["import-onnx", str(model), "--name", "churn", "--golden", str(goldens)]
    code, out, err = dsc(*argv, "--schema", str(schema), "--baseline", str(train))
    assert code == 0, err

    code, out, _ = dsc("show", "churn@1")
    assert "baseline     8 features and prediction (probability) over 2400 rows" in out
    from dscloud.archive import Archive
    from dscloud.baseline import Baseline

    stored = Baseline.of(Archive.open(dsc.archive).envelope("churn@1").data)
    assert stored is not None and stored.features == churn_baseline.features
