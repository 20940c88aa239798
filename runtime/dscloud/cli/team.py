"""`dsc team add`: platform configuration in cdk.json (registered by :mod:`dscloud.cli`).

The runtime never imports the stacks (it ships into images), so the command runs
``python -m stacks.team_add`` in the repository and reports its answer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from dscloud.errors import ConfigError, DscError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``dsc team add`` to the ``dsc`` parser."""
    team = sub.add_parser("team", help="platform configuration in cdk.json")
    tsub = team.add_subparsers(dest="team_command", required=True, metavar="COMMAND")
    p = tsub.add_parser("add", help="add a team with default sizes to cdk.json")
    p.add_argument("name")
    p.add_argument(
        "--stage", action="append", dest="stages", help="repeatable (default: dev, prod)"
    )
    p.add_argument("--cdk-json", type=Path, default=Path("cdk.json"))
    p.set_defaults(run=cmd_team_add)


def cmd_team_add(args: argparse.Namespace) -> int:
    cdk_json = args.cdk_json.resolve()
    if not cdk_json.is_file():
        raise ConfigError(f"{cdk_json} not found: run `dsc team add` in the repository root")
    stages = [f"--stage={s}" for s in args.stages or []]
    # The runtime never imports the stacks (it ships into images); the config lives there.
    done = subprocess.run(
        [sys.executable, "-m", "stacks.team_add", args.name, *stages, "--cdk-json", str(cdk_json)],
        cwd=cdk_json.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["team add failed"])[-1]
        raise DscError(last.removeprefix("error: "))
    print(done.stdout.strip())
    return 0
