"""stacks/team_add.py: `dsc team add` adds a validated team to cdk.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.config import ConfigError, load_config_file
from stacks.team_add import TeamExistsError, add_team, main


def test_added_team_is_in_the_config_with_defaults(cdk_json_copy: Path) -> None:
    # when
    entry = add_team(cdk_json_copy, "growth", ["dev", "prod"])

    # then
    assert entry == {"stages": {"dev": {}, "prod": {}}}
    config = load_config_file(cdk_json_copy)
    added = [env for env in config.environments if env.team == "growth"]
    assert [env.name for env in added] == ["dsc-growth-dev", "dsc-growth-prod"]
    defaults = json.loads(cdk_json_copy.read_text())["context"]["dscloud"]["defaults"]
    assert added[0].account == defaults["account"]
    assert added[0].stream.shards == defaults["stream"]["shards"]


def test_other_context_is_kept(cdk_json_copy: Path) -> None:
    before = json.loads(cdk_json_copy.read_text())

    add_team(cdk_json_copy, "growth", ["dev"])

    after = json.loads(cdk_json_copy.read_text())
    del after["context"]["dscloud"]["teams"]["growth"]
    assert after == before


@pytest.mark.parametrize(
    ("name", "stages"),
    [
        ("Growth", ["dev"]),
        ("g", ["dev"]),
        ("growth-team", ["dev"]),
        ("averyverylongteam", ["dev"]),
        ("growth", ["Dev"]),
        ("growth", ["production-eu"]),
        ("growth", []),
        ("growth", ["dev", "dev"]),
    ],
)
def test_invalid_names_are_refused_and_the_file_untouched(
    cdk_json_copy: Path, name: str, stages: list[str]
) -> None:
    before = cdk_json_copy.read_text()

    with pytest.raises(ConfigError, match=r"dscloud\.teams"):
        add_team(cdk_json_copy, name, stages)

    assert cdk_json_copy.read_text() == before


def test_an_existing_team_is_refused(cdk_json_copy: Path) -> None:
    existing = next(iter(json.loads(cdk_json_copy.read_text())["context"]["dscloud"]["teams"]))

    with pytest.raises(TeamExistsError, match="already exists"):
        add_team(cdk_json_copy, existing, ["dev"])


def test_an_invalid_resulting_config_is_not_written(tmp_path: Path) -> None:
    # given a cdk.json whose defaults lack the account every stage needs
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"context": {"dscloud": {"defaults": {"models": ["m@a"]}}}}))
    before = cdk_json.read_text()

    with pytest.raises(ConfigError, match="account"):
        add_team(cdk_json, "growth", ["dev"])

    assert cdk_json.read_text() == before


def test_cli_reports_success_and_refusal(
    cdk_json_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["growth", "--stage", "dev", "--cdk-json", str(cdk_json_copy)]) == 0
    assert "dsc-growth-dev" in capsys.readouterr().out

    assert main(["growth", "--cdk-json", str(cdk_json_copy)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_runs_as_a_module_without_cdk(cdk_json_copy: Path) -> None:
    # `dsc team add` calls it like this; stacks.config must not pull in jsii.
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "stacks.team_add",
            "growth",
            "--cdk-json",
            str(cdk_json_copy),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "dsc-growth-dev, dsc-growth-prod" in result.stdout
    assert "aws_cdk" not in result.stderr  # -X importtime lists every import on stderr
