"""dscloud/refs.py: the one rule for model names, versions, aliases and references."""

from __future__ import annotations

from pathlib import Path

import pytest

from dscloud.archive import Ref
from dscloud.errors import ConfigError
from dscloud.refs import check_alias, check_name, check_version, split_ref


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("churn", ("churn", None, None)),
        ("churn@3", ("churn", 3, None)),
        ("churn@production", ("churn", None, "production")),
        ("churn.v2-eu_1@canary-2", ("churn.v2-eu_1", None, "canary-2")),
    ],
)
def test_valid_references_split_into_name_version_alias(text: str, parts: tuple) -> None:
    assert split_ref(text) == parts


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("..", "model name"),
        ("churn@", "NAME@VERSION"),
        ("churn@0", "version 0"),
        ("churn@2b", "NAME@ALIAS"),
        ("churn@prod.eu", "NAME@ALIAS"),
        ("churn@a@b", "NAME@ALIAS"),
        ("1churn@1", "model name"),
        ("churn\u0663@1", "model name"),  # a non-ASCII digit is not a version
        ("churn@\u0663", "NAME@ALIAS"),
        ("c" * 65, "at most 64"),
    ],
)
def test_invalid_references_are_refused_naming_the_form(text: str, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        split_ref(text)


@pytest.mark.parametrize("bad", ["../../..", "a/b", ".hidden", "", None, 3])
def test_names_that_could_leave_their_directory_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="model name"):
        check_name(bad)


def test_versions_are_positive_whole_numbers() -> None:
    assert check_version(7) == 7
    for bad in (0, -1, True, 1.0, "1"):
        with pytest.raises(ConfigError, match="positive whole number"):
            check_version(bad)


def test_aliases_start_with_a_letter() -> None:
    assert check_alias("production") == "production"
    for bad in ("1", "../x", "a.b", ""):
        with pytest.raises(ConfigError, match="alias"):
            check_alias(bad)


def test_a_ref_cannot_be_constructed_around_the_rule() -> None:
    with pytest.raises(ConfigError, match="model name"):
        Ref(name="../../..", version=1)
    with pytest.raises(ConfigError, match="alias"):
        Ref(name="churn", alias="../x")
    with pytest.raises(ConfigError, match="version"):
        Ref(name="churn", version=0)
    with pytest.raises(ConfigError, match="not both"):
        Ref(name="churn", version=1, alias="production")
    assert Ref(path=Path("../exported")).path == Path("../exported")
