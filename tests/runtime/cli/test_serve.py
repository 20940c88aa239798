"""`dsc serve` refuses settings it cannot run with, in one line and exit code 2.

A flag and its environment variable obey the same rule (the settings table's): the flag
is refused by the parser as a usage error, the variable when the settings are read.
"""

from __future__ import annotations

import pytest

from dscloud.cli import main

OUT_OF_RANGE = [
    ("--port", "DSC_PORT", "99999", "an integer in 0..65535"),
    ("--workers", "DSC_WORKERS", "0", "an integer >= 1"),
    ("--threads", "DSC_THREADS", "0", "an integer >= 1"),
    ("--refresh-seconds", "DSC_REFRESH_SECONDS", "-1", "a number >= 0"),
    ("--max-body-bytes", "DSC_MAX_BODY_BYTES", "0", "an integer >= 1"),
    ("--port", "DSC_PORT", "http", "an integer in 0..65535"),
]


@pytest.mark.parametrize(("flag", "variable", "value", "expected"), OUT_OF_RANGE)
def test_a_bad_flag_is_a_usage_error_naming_the_flag(
    flag: str, variable: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "churn", flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}: expected {expected}, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "variable", "value", "expected"), OUT_OF_RANGE)
def test_a_bad_variable_names_the_variable_by_the_same_rule(
    flag: str,
    variable: str,
    value: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve", "churn"]) == 2
    assert f"{variable}='{value}': expected {expected}" in capsys.readouterr().err


def test_no_models_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSC_MODELS", raising=False)
    assert main(["serve"]) == 2
    assert "no models to serve" in capsys.readouterr().err
