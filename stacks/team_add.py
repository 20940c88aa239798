"""Add a team to cdk.json: `python -m stacks.team_add NAME [--stage dev --stage prod]`.

`dsc team add` runs this module as a subprocess (the runtime never imports `stacks`). The
new team gets an empty override block per stage, so every setting comes from
`dscloud.defaults`; the whole resulting configuration is validated before cdk.json is
written, so a refused team leaves the file untouched. A following `cdk synth` creates the
team's environments `dsc-{team}-{stage}`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stacks.config import CONTEXT_KEY, STAGE_PATTERN, TEAM_PATTERN, ConfigError, load_config

__all__ = ["DEFAULT_STAGES", "TeamExistsError", "add_team", "main"]

DEFAULT_STAGES = ("dev", "prod")


class TeamExistsError(ConfigError):
    """The team is already in cdk.json; edit its stages there instead."""


def add_team(
    cdk_json_path: Path, name: str, stages: Sequence[str] = DEFAULT_STAGES
) -> dict[str, Any]:
    """Add team `name` with `stages` to the cdk.json at `cdk_json_path` and write it back.

    Returns the team's entry as written (`{"stages": {"dev": {}, ...}}`). Raises
    ConfigError (or its subclass TeamExistsError) when the name, a stage or the resulting
    configuration is invalid; the file is then left as it was.
    """
    key = f"{CONTEXT_KEY}.teams.{name}"
    if not TEAM_PATTERN.match(name):
        raise ConfigError(
            key,
            f"invalid team name; valid: {TEAM_PATTERN.pattern} (lowercase, starts with a letter, 2-12 characters)",
        )
    if not stages:
        raise ConfigError(f"{key}.stages", "give at least one stage")
    for stage in stages:
        if not STAGE_PATTERN.match(stage):
            raise ConfigError(
                f"{key}.stages.{stage}",
                f"invalid stage name; valid: {STAGE_PATTERN.pattern} (lowercase, starts with a letter, 2-8 characters)",
            )
    if len(set(stages)) != len(stages):
        raise ConfigError(f"{key}.stages", f"duplicate stage in {list(stages)}")

    document = json.loads(cdk_json_path.read_text())
    context = document.setdefault("context", {})
    platform = context.setdefault(CONTEXT_KEY, {})
    teams = platform.setdefault("teams", {})
    if name in teams:
        raise TeamExistsError(key, "team already exists; edit its stages in cdk.json")
    entry: dict[str, Any] = {"stages": {stage: {} for stage in stages}}
    teams[name] = entry
    load_config(platform)  # validate the result before touching the file
    cdk_json_path.write_text(json.dumps(document, indent=2) + "\n")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status (0 ok, 2 refused)."""
    parser = argparse.ArgumentParser(
        prog="python -m stacks.team_add", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", help="team name, e.g. recs")
    parser.add_argument(
        "--stage", action="append", dest="stages", help="repeatable; default: dev and prod"
    )
    parser.add_argument(
        "--cdk-json", type=Path, default=Path("cdk.json"), help="default: ./cdk.json"
    )
    args = parser.parse_args(argv)
    stages = tuple(args.stages or DEFAULT_STAGES)
    try:
        add_team(args.cdk_json, args.name, stages)
    except (ConfigError, OSError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names = ", ".join(f"dsc-{args.name}-{stage}" for stage in stages)
    print(f"added team {args.name} to {args.cdk_json}: {names}; run `make synth` to build them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
