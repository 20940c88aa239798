"""`dsc rollout` commands (registered by :mod:`dscloud.cli`): start, status, promote, abort.

Each calls :mod:`dscloud.rollout` (and :mod:`dscloud.rollout_guard` for the merged
comparison); the rules (verification, compatibility, compare-and-swap, audit) live there.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dscloud import rollout as rollouts
from dscloud.archive import Ref, current_user
from dscloud.cli.common import open_archive
from dscloud.errors import ConfigError
from dscloud.rollout_guard import comparison

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``dsc rollout start|status|promote|abort`` to the ``dsc`` parser."""
    group = sub.add_parser("rollout", help="shadow or canary a candidate version behind an alias")
    commands = group.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")

    p = commands.add_parser("start", help="start a rollout of a candidate behind an alias")
    p.add_argument("name")
    p.add_argument("--alias", required=True, help="the alias whose traffic is shared")
    p.add_argument("--candidate", required=True, type=_version, help="the candidate version")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--shadow", action="store_true", help="candidate scores, answers no one")
    mode.add_argument(
        "--canary", type=_percent, metavar="PCT", help="candidate answers PCT%% of keys"
    )
    p.add_argument("--max-error-rate", type=_rate, help="abort above this candidate error rate")
    p.add_argument("--max-disagreement", type=_rate, help="abort above this disagreement rate")
    p.add_argument(
        "--min-rows", type=int, default=100, help="rows compared before a threshold is judged"
    )
    p.add_argument("--reason", default="", help="why, for the audit record")
    p.set_defaults(run=cmd_start)

    p = commands.add_parser("status", help="the rollout on NAME@ALIAS and its comparison")
    p.add_argument("ref", metavar="NAME@ALIAS")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_status)

    p = commands.add_parser("promote", help="point the alias at its candidate")
    p.add_argument("ref", metavar="NAME@ALIAS")
    p.add_argument("--reason", default="", help="why, for the audit record")
    p.set_defaults(run=cmd_promote)

    p = commands.add_parser("abort", help="end the rollout; the alias keeps its version")
    p.add_argument("ref", metavar="NAME@ALIAS")
    p.add_argument("--reason", required=True, help="why, for the audit record")
    p.set_defaults(run=cmd_abort)


def cmd_start(args: argparse.Namespace) -> int:
    started = rollouts.start(
        open_archive(args),
        args.name,
        args.alias,
        args.candidate,
        mode="shadow" if args.shadow else "canary",
        share=0.0 if args.shadow else args.canary / 100.0,
        thresholds=rollouts.Thresholds(
            max_error_rate=args.max_error_rate,
            max_disagreement=args.max_disagreement,
            min_rows=args.min_rows,
        ),
        reason=args.reason,
        by=current_user(),
    )
    print(f"{args.name}@{args.alias}: {_describe(started)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    name, alias = _alias_ref(args.ref)
    record, running = rollouts.status(archive, name, alias)
    merged = comparison(archive, name, alias, running) if running is not None else None
    figures = merged.figures() if merged is not None else None
    if args.json:
        print(
            json.dumps(
                {
                    "alias": record,
                    "rollout": running.to_dict() if running else None,
                    "comparison": figures,
                },
                indent=2,
            )
        )
        return 0
    print(f"{name}@{alias} -> {record['version']} (set by {record['set_by']})")
    if running is None:
        print("no rollout")
        return 0
    print(f"rollout: {_describe(running)}, started by {running.started_by} at {running.started_at}")
    if figures is None:
        print("comparison: no rows compared yet")
        return 0
    cur, cand = figures["versions"]["current"], figures["versions"]["candidate"]
    print(
        f"comparison: {figures['rows_compared']} rows, disagreement "
        f"{figures['disagreement_rate']:.4f}; errors {cur['error_rate']:.4f} (v{cur['version']}) "
        f"vs {cand['error_rate']:.4f} (v{cand['version']})"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    name, alias = _alias_ref(args.ref)
    record = rollouts.promote(
        open_archive(args), name, alias, reason=args.reason, by=current_user()
    )
    print(f"{name}@{alias} -> {record['version']} (sha256 {record['sha256'][:12]}); rollout ended")
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    name, alias = _alias_ref(args.ref)
    audit = rollouts.abort(open_archive(args), name, alias, reason=args.reason, by=current_user())
    assert audit is not None  # without a rollout id, abort raises instead of declining
    print(f"{name}@{alias}: rollout aborted; still serving {audit['version']}")
    return 0


def _describe(rollout: rollouts.Rollout) -> str:
    how = "shadow" if rollout.mode == "shadow" else f"canary {rollout.share * 100:g}%"
    return f"candidate {rollout.candidate} in {how}"


def _alias_ref(text: str) -> tuple[str, str]:
    ref = Ref.parse(text)
    if ref.alias is None:
        raise ConfigError(f"{text!r}: expected NAME@ALIAS (a rollout lives on an alias)")
    return ref.name, ref.alias


def _version(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a version number, got {text!r}")
    return int(text)


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 100.0:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1, got {text!r}")
    return value
