"""`dsc` model and archive commands: the model lifecycle end to end, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dscloud.cli import main
from tests.runtime.test_onnx_import import golden, linear_model


def test_train_promote_show_diff_history_verify(two_versions, tmp_path) -> None:
    dsc = two_versions
    code, out, _ = dsc("promote", "churn", "1", "--alias", "production")
    assert code == 0 and "churn@production -> 1" in out

    code, out, _ = dsc("list")
    assert "churn" in out and "latest 2" in out and "production->1" in out
    code, out, _ = dsc("list", "churn")
    assert "churn@1" in out and "[production]" in out and "churn@2" in out

    code, out, _ = dsc("show", "churn@production", "--json")
    env = json.loads(out)
    assert env["identity"]["version"] == 1 and env["provenance"]["hyperparameters"]["seed"] == 1

    code, out, _ = dsc("diff", "churn@1", "churn@2")
    assert "[parameters]" in out and "C: 1.0 -> 0.1" in out and "[metrics]" in out

    plot = tmp_path / "auc.png"
    code, out, _ = dsc("history", "churn", "--metric", "auc", "--plot", str(plot))
    assert code == 0 and "production" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000

    code, out, _ = dsc("verify", "churn@production")
    assert code == 0 and "5 golden examples reproduced" in out
    code, out, _ = dsc("verify", "churn@2", "--json")
    report = json.loads(out)
    assert all(g["expected"] == g["actual"] for g in report["goldens"])


def test_verify_fails_on_a_tampered_artifact(two_versions) -> None:
    dsc = two_versions
    model = dsc.archive / "models/churn/versions/2/model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    code, out, err = dsc("verify", "churn@2")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "sha256" in err and str(model) in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "fraud"], "no model 'fraud'"),
        (["show", "churn@9"], "has no version 9"),
        (["show", "churn@canary"], "has no alias 'canary'"),
        (["promote", "churn", "1", "--alias", "7"], "alias '7'"),
        (["history", "churn", "--metric", "f1"], "metric 'f1' is not recorded"),
        (["example", "data", "--rows", "10", "--out", "x.txt"], "expected a .parquet or .csv"),
    ],
)
def test_user_mistakes_are_one_line_errors(two_versions, argv, message) -> None:
    code, _, err = two_versions(*argv)
    assert code != 0
    assert err.startswith("dsc: error: ") and message in err and "Traceback" not in err


def test_missing_archive_is_a_clear_error(tmp_path, capsys) -> None:
    code = main(["--archive", str(tmp_path / "nowhere"), "show", "churn@production"])
    assert code == 1
    assert "no model 'churn' in archive" in capsys.readouterr().err


def test_import_onnx_publishes_after_replaying_goldens(dsc, tmp_path) -> None:
    model = tmp_path / "linear.onnx"
    model.write_bytes(linear_model())
    goldens = tmp_path / "goldens.json"
    goldens.write_text(json.dumps([golden([1.0, 2.0, 3.0])]))
    code, out, _ = dsc("import-onnx", str(model), "--name", "linear", "--golden", str(goldens))
    assert code == 0 and "published linear@1" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"inputs": {"f0": 1, "f1": 2, "f2": 3}, "outputs": {"score": 0}}]))
    code, _, err = dsc("import-onnx", str(model), "--name", "linear", "--golden", str(bad))
    assert code == 1 and "ONNX Runtime disagrees" in err


def test_console_script_runs(tmp_path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dsc")), "--archive", str(tmp_path), "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "no models" in done.stdout
