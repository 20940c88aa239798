"""`dsc invoke` (dscloud/cli/invoke.py): the command signs with the environment's credentials.

The calls go through the SigV4-verifying proxy of tests/runtime/conftest.py to a real
`dsc serve`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dscloud.cli import main
from tests.runtime.conftest import KEY_ID, REGION, SECRET, Verifier
from tests.runtime.server.conftest import Server


def test_dsc_invoke_signs_with_the_environments_credentials(
    verifier: Verifier,
    rows_json: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    body = tmp_path / "rows.json"
    body.write_bytes(rows_json)

    code = main(["invoke", verifier.url, "--model", "churn", "--json", f"@{body}"])

    assert code == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) > 0
    assert verifier.forwarded == 1


def test_dsc_invoke_with_a_wrong_secret_fails_with_the_refusal(
    verifier: Verifier,
    rows_json: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    code = main(
        [
            "invoke",
            verifier.url,
            "--region",
            REGION,
            "--json",
            rows_json.decode(),
            "--model",
            "churn",
        ]
    )

    assert code == 1
    assert "answered 403" in capsys.readouterr().err


def test_dsc_invoke_unsigned_calls_a_local_server(
    churn_server: Server, rows_json: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["invoke", churn_server.url, "--unsigned", "--model", "churn", "--json", rows_json.decode()]
    )

    assert code == 0
    assert "predictions" in json.loads(capsys.readouterr().out)
