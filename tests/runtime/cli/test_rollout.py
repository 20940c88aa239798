"""`dsc rollout`: start, status (with the merged comparison), promote, abort, and refusals
as one-line errors."""

from __future__ import annotations

import json

from dscloud import example
from dscloud.archive import Archive
from dscloud.rollout import status
from dscloud.rollout_compare import Comparison
from dscloud.rollout_guard import record_comparison
from dscloud.scorer import Scorer


def test_shadow_then_canary_then_promote(two_versions) -> None:
    dsc = two_versions
    assert dsc("promote", "churn", "1", "--alias", "production")[0] == 0

    # when a shadow rollout starts
    code, out, err = dsc(
        "rollout", "start", "churn", "--alias", "production", "--candidate", "2", "--shadow",
        "--max-disagreement", "0.2", "--reason", "C=0.1",
    )  # fmt: skip
    assert (code, err) == (0, "") and "candidate 2 in shadow" in out
    code, out, _ = dsc("rollout", "status", "churn@production", "--json")
    shown = json.loads(out)
    assert shown["alias"]["version"] == 1 and shown["rollout"]["mode"] == "shadow"
    assert shown["rollout"]["thresholds"]["max_disagreement"] == 0.2
    assert shown["comparison"] is None

    # and a runtime records what it compared
    archive = Archive.open(dsc.archive)
    _, rollout = status(archive, "churn", "production")
    assert rollout is not None
    rows = example.churn_data(200, seed=5).fillna(0.0).to_dict(orient="records")
    counts = Comparison(1, 2)
    counts.add(
        Scorer(archive.load("churn@1")).score_records(rows),
        Scorer(archive.load("churn@2")).score_records(rows),
    )
    record_comparison(archive, "churn", "production", rollout, counts)
    code, out, _ = dsc("rollout", "status", "churn@production")
    assert code == 0 and "candidate 2 in shadow" in out and "comparison: 200 rows" in out
    code, out, _ = dsc("rollout", "status", "churn@production", "--json")
    assert json.loads(out)["comparison"]["rows_compared"] == 200

    # then it is promoted
    code, out, _ = dsc("rollout", "promote", "churn@production", "--reason", "fine")
    assert code == 0 and "churn@production -> 2" in out
    code, out, _ = dsc("rollout", "status", "churn@production")
    assert "churn@production -> 2" in out and "no rollout" in out
    events = [r["event"] for r in archive.audit("churn")]
    assert events.count("rollout-start") == 1 and events.count("rollout-promote") == 1


def test_canary_then_abort(two_versions) -> None:
    dsc = two_versions
    dsc("promote", "churn", "1", "--alias", "production")
    code, out, _ = dsc(
        "rollout", "start", "churn", "--alias", "production", "--candidate", "2", "--canary", "20"
    )
    assert code == 0 and "canary 20%" in out
    code, out, _ = dsc("rollout", "abort", "churn@production", "--reason", "worse")
    assert code == 0 and "still serving 1" in out
    abort = [r for r in Archive.open(dsc.archive).audit("churn") if r["event"] == "rollout-abort"]
    assert len(abort) == 1 and abort[0]["why"] == "worse"


def test_refusals_are_one_line_errors(two_versions) -> None:
    dsc = two_versions
    dsc("promote", "churn", "1", "--alias", "production")
    model = dsc.archive / "models/churn/versions/2/model.onnx"
    model.write_bytes(model.read_bytes()[:100])
    code, out, err = dsc(
        "rollout", "start", "churn", "--alias", "production", "--candidate", "2", "--shadow"
    )
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "churn@2 refused" in err and "sha256" in err

    code, _, err = dsc("rollout", "promote", "churn@production")
    assert code == 1 and "no rollout to promote" in err
    code, _, err = dsc("rollout", "status", "churn")
    assert code == 2 and "expected NAME@ALIAS" in err


def test_flags_are_checked_by_the_parser(two_versions, capsys) -> None:
    dsc = two_versions
    for argv, message in [
        (["--canary", "0"], "percentage"),
        (["--canary", "150"], "percentage"),
        (["--shadow", "--canary", "10"], "not allowed with"),
        (["--shadow", "--max-error-rate", "2"], "rate between 0 and 1"),
    ]:
        try:
            dsc("rollout", "start", "churn", "--alias", "production", "--candidate", "2", *argv)
        except SystemExit as exc:
            assert exc.code == 2
        assert message in capsys.readouterr().err
