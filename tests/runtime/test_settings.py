"""Settings: one table, environment first, flags over it, errors that name the source."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from dscloud.errors import ConfigError
from dscloud.settings import SETTINGS, Settings, cli_argument


def test_environment_then_flags() -> None:
    env = {"DSC_ARCHIVE": "s3://b/p", "DSC_MODELS": "churn@production, fraud@3", "DSC_PORT": "9000"}
    s = Settings.from_env(env, port=8081, archive=None)
    assert (
        s.archive == "s3://b/p" and s.models == ("churn@production", "fraud@3") and s.port == 8081
    )
    assert Settings.from_env({}).archive == ".dsc/archive"


def test_every_field_has_exactly_one_row_in_order() -> None:
    # The rows drive parsing, checking, the flags and the docs: a field without one would
    # escape all four.
    assert [f.name for f in fields(Settings)] == [setting.name for setting in SETTINGS]
    # and the defaults in the rows pass the rows' own checks
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DSC_PORT": "http"}, "DSC_PORT='http': expected an integer in 0..65535"),
        ({"DSC_PORT": "65536"}, "DSC_PORT='65536': expected an integer in 0..65535"),
        ({"DSC_WORKERS": "0"}, "DSC_WORKERS='0': expected an integer >= 1"),
        ({"DSC_REFRESH_SECONDS": "-1"}, "DSC_REFRESH_SECONDS='-1': expected a number >= 0"),
        ({"DSC_REFRESH_SECONDS": "inf"}, "DSC_REFRESH_SECONDS='inf': expected a number >= 0"),
        ({"DSC_REFRESH_SECONDS": "nan"}, "DSC_REFRESH_SECONDS='nan': expected a number >= 0"),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "-1"}, "AWS_BATCH_JOB_ARRAY_INDEX='-1': expected an"),
        (
            {"AWS_BATCH_JOB_ARRAY_INDEX": "4", "DSC_SHARD_COUNT": "4"},
            "shard index 4 is outside 0..3",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, "port=70000 (--port / DSC_PORT): expected an integer in 0..65535"),
        ({"workers": 0}, "workers=0 (--workers / DSC_WORKERS): expected an integer >= 1"),
        ({"threads": 1.5}, "threads=1.5 (--threads / DSC_THREADS): expected an integer"),
        ({"port": True}, "port=True"),
        ({"archive": ""}, "archive='' (--archive / DSC_ARCHIVE): expected text"),
        ({"models": ["churn", ""]}, "models=['churn', '']"),
    ],
)
def test_overrides_obey_the_same_table(overrides: dict[str, object], message: str) -> None:
    # A value handed in by code or a flag gets no way around the ranges the environment has.
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({}, **overrides)
    assert message in str(raised.value)
    with pytest.raises(ConfigError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_unknown_override_lists_the_known_settings() -> None:
    with pytest.raises(ConfigError, match="unknown settings \\['prot'\\]; known: \\['archive'"):
        Settings.from_env({}, prot=8080)


def test_the_first_variable_set_wins_and_empty_is_unset() -> None:
    env = {"AWS_ENDPOINT_URL_S3": "", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}
    assert Settings.from_env(env).s3_endpoint == "http://127.0.0.1:5000"
    env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:5001"
    assert Settings.from_env(env).s3_endpoint == "http://127.0.0.1:5001"


def test_values_are_normalised() -> None:
    s = Settings(models=["a@1", "b@prod"], refresh_seconds=5)  # type: ignore[arg-type]
    assert s.models == ("a@1", "b@prod")
    assert isinstance(s.refresh_seconds, float) and s.refresh_seconds == 5.0


def test_environ_round_trips_through_from_env() -> None:
    # given settings a parent process has (server workers are built from the environment)
    parent = Settings(
        archive="s3://b/p", models=("churn@production", "fraud@3"), workers=3, threads=2,
        refresh_seconds=0.5, max_body_bytes=1024, predictions_table="t",
    )  # fmt: skip
    names = [f.name for f in fields(Settings)]
    # when a child reads the environment made from them
    child = Settings.from_env(parent.environ(names))
    # then it sees the same settings
    assert child == parent


def test_a_flag_parses_with_the_table_and_names_the_variable_in_its_help() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--port", **cli_argument("port"))
    parser.add_argument("--refresh-seconds", **cli_argument("refresh_seconds", help="poll"))
    assert parser.parse_args(["--port", "0"]).port == 0
    assert parser.parse_args(["--refresh-seconds", "0.5"]).refresh_seconds == 0.5
    with pytest.raises(
        argparse.ArgumentError, match=r"expected an integer in 0\.\.65535, got '-1'"
    ):
        parser.parse_args(["--port", "-1"])
    help_text = " ".join(parser.format_help().split())
    assert "(default: $DSC_PORT or 8080)" in help_text
    assert "poll (default: $DSC_REFRESH_SECONDS or 30)" in help_text
