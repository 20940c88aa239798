"""`dsc team add`: edits cdk.json through the stacks package, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from dscloud.cli import main


def test_team_add_edits_cdk_json_through_the_stacks_package(tmp_path, capsys) -> None:
    import shutil

    root = Path(__file__).resolve().parents[3]
    shutil.copy(root / "cdk.json", tmp_path / "cdk.json")
    shutil.copytree(root / "stacks", tmp_path / "stacks")
    cdk_json = str(tmp_path / "cdk.json")

    assert main(["team", "add", "growth", "--stage", "dev", "--cdk-json", cdk_json]) == 0
    assert "dsc-growth-dev" in capsys.readouterr().out
    teams = json.loads((tmp_path / "cdk.json").read_text())["context"]["dscloud"]["teams"]
    assert set(teams["growth"]["stages"]) == {"dev"}

    assert main(["team", "add", "growth", "--cdk-json", cdk_json]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsc: error: dscloud.teams.growth: team already exists")
