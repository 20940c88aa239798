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


def test_change_moves_shadow_to_canary_and_keeps_unnamed_thresholds(two_versions) -> None:
    dsc = two_versions
    dsc("promote", "churn", "1", "--alias", "production")
    dsc(
        "rollout", "start", "churn", "--alias", "production", "--candidate", "2", "--shadow",
        "--max-disagreement", "0.2", "--min-rows", "50",
    )  # fmt: skip
    archive = Archive.open(dsc.archive)
    _, before = status(archive, "churn", "production")

    # when
    code, out, err = dsc(
        "rollout", "change", "churn@production", "--canary", "20", "--max-error-rate", "0.01",
        "--reason", "shadow looked fine",
    )  # fmt: skip

    # then the rollout is a canary at 20%, its other thresholds unchanged
    assert (code, err) == (0, "") and "candidate 2 in canary 20%" in out
    _, after = status(archive, "churn", "production")
    assert before is not None and after is not None
    assert (after.mode, after.share, after.id) == ("canary", 0.2, before.id)
    assert after.thresholds.max_error_rate == 0.01
    assert (after.thresholds.max_disagreement, after.thresholds.min_rows) == (0.2, 50)
    (changed,) = [r for r in archive.audit("churn") if r["event"] == "rollout-change"]
    assert changed["why"] == "shadow looked fine"
    assert changed["from"]["rollout"]["mode"] == "shadow"
    assert changed["to"]["rollout"]["share"] == 0.2
    # and status --audit lists start and change, oldest first
    code, out, _ = dsc("rollout", "status", "churn@production", "--audit")
    lines = [line.split()[1] for line in out.partition("audit:\n")[2].splitlines()[:2]]
    assert code == 0 and lines == ["start", "change"]
    assert "v1 + candidate 2 in shadow -> v1 + candidate 2 in canary 20%" in out
    code, out, _ = dsc("rollout", "status", "churn@production", "--audit", "--json")
    assert [r["event"] for r in json.loads(out)["audit"]] == ["rollout-start", "rollout-change"]


def test_change_needs_a_rollout_something_to_change_and_a_reason(two_versions, capsys) -> None:
    dsc = two_versions
    dsc("promote", "churn", "1", "--alias", "production")
    code, _, err = dsc("rollout", "change", "churn@production", "--shadow", "--reason", "x")
    assert code == 1 and "has no rollout" in err
    dsc("rollout", "start", "churn", "--alias", "production", "--candidate", "2", "--shadow")
    code, _, err = dsc("rollout", "change", "churn@production", "--reason", "x")
    assert code == 2 and "nothing to change" in err
    try:
        dsc("rollout", "change", "churn@production", "--canary", "10")
    except SystemExit as exc:
        assert exc.code == 2
    assert "--reason" in capsys.readouterr().err


def test_dsc_score_follows_the_rollout_unless_told_not_to(two_versions, users, write_files) -> None:
    import pyarrow.parquet as pq

    dsc = two_versions
    dsc("promote", "churn", "1", "--alias", "production")
    dsc("rollout", "start", "churn", "--alias", "production", "--candidate", "2", "--canary", "50")
    data = write_files(users.head(400), files=1)
    out = data.parent / "scores"

    # when
    code, printed, _ = dsc("score", "churn@production", "--input", str(data), "--output", str(out))

    # then both versions answered, and the comparison is in the archive for status
    assert code == 0 and "rollout: candidate 2 in canary 50%: 400 rows compared" in printed
    versions = set(pq.read_table(out / "part-00000-of-00001.parquet")["model_version"].to_pylist())
    assert versions == {1, 2}
    code, shown, _ = dsc("rollout", "status", "churn@production")
    assert "comparison: 400 rows" in shown

    # and --no-rollout scores with the serving version alone
    code, printed, _ = dsc(
        "score", "churn@production", "--input", str(data), "--output", str(out), "--no-rollout"
    )
    assert code == 0 and "rollout:" not in printed
    versions = set(pq.read_table(out / "part-00000-of-00001.parquet")["model_version"].to_pylist())
    assert versions == {1}
