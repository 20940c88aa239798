"""Settings: environment first, flags over it, errors that name the variable."""

from __future__ import annotations

import pytest

from dscloud.errors import ConfigError
from dscloud.settings import Settings


def test_environment_then_flags() -> None:
    env = {"DSC_ARCHIVE": "s3://b/p", "DSC_MODELS": "churn@production, fraud@3", "DSC_PORT": "9000"}
    s = Settings.from_env(env, port=8081, archive=None)
    assert (
        s.archive == "s3://b/p" and s.models == ("churn@production", "fraud@3") and s.port == 8081
    )
    assert Settings.from_env({}).archive == ".dsc/archive"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DSC_PORT": "http"}, "DSC_PORT='http': expected an integer"),
        ({"DSC_WORKERS": "0"}, "DSC_WORKERS='0': expected an integer >= 1"),
        ({"DSC_REFRESH_SECONDS": "-1"}, "DSC_REFRESH_SECONDS='-1': expected a number >= 0"),
        (
            {"AWS_BATCH_JOB_ARRAY_INDEX": "4", "DSC_SHARD_COUNT": "4"},
            "shard index 4 is outside 0..3",
        ),
    ],
)
def test_bad_values_name_the_variable(env, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Settings.from_env(env)
