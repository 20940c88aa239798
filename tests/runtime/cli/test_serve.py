"""`dsc serve` refuses settings it cannot run with, in one line and exit code 2."""

from __future__ import annotations

import pytest

from dscloud.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "churn", "--port", "99999"], "port 99999"),
        (["serve", "churn", "--workers", "0"], "workers 0"),
        (["serve", "churn", "--threads", "0"], "threads 0"),
        (["serve", "churn", "--refresh-seconds", "-1"], "refresh seconds"),
        (["serve", "churn", "--max-body-bytes", "0"], "max body bytes"),
        (["serve"], "no models to serve"),
    ],
)
def test_bad_settings_exit_2(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DSC_MODELS", raising=False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
