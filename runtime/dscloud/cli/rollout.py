"""`dsc rollout` commands (registered by :mod:`dscloud.cli`): start, change, status, promote,
abort.

Each calls :mod:`dscloud.rollout` (and :mod:`dscloud.rollout_guard` for the merged
comparison); the rules (verification, compatibility, compare-and-swap, audit) live there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from dscloud import rollout as rollouts
from dscloud.archive import Archive, Ref, current_user
from dscloud.cli.common import open_archive
from dscloud.errors import ConfigError, RolloutError
from dscloud.rollout_guard import comparison

__all__ = ["register"]

#: The audit events ``dsc rollout status --audit`` lists.
_AUDITED = ("rollout-start", "rollout-change", "rollout-promote", "rollout-abort")


def register(sub: Any) -> None:
    """Add ``dsc rollout start|change|status|promote|abort`` to the ``dsc`` parser."""
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
    _thresholds(p, min_rows=100)
    p.add_argument("--reason", default="", help="why, for the audit record")
    p.set_defaults(run=cmd_start)

    p = commands.add_parser(
        "change",
        help="change the running rollout: mode, canary share or thresholds",
        description="Change the rollout on NAME@ALIAS; thresholds not given keep their values. "
        "Routing is unchanged for a canary: a larger share only adds keys.",
    )
    p.add_argument("ref", metavar="NAME@ALIAS")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--shadow", action="store_true", help="candidate scores, answers no one")
    mode.add_argument(
        "--canary", type=_percent, metavar="PCT", help="candidate answers PCT%% of keys"
    )
    _thresholds(p, min_rows=None)
    p.add_argument("--reason", required=True, help="why, for the audit record")
    p.set_defaults(run=cmd_change)

    p = commands.add_parser("status", help="the rollout on NAME@ALIAS and its comparison")
    p.add_argument("ref", metavar="NAME@ALIAS")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--audit", action="store_true", help="also list the alias's rollout audit records"
    )
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


def cmd_change(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    name, alias = _alias_ref(args.ref)
    given = {
        k: getattr(args, k)
        for k in ("max_error_rate", "max_disagreement", "min_rows")
        if getattr(args, k) is not None
    }
    if not (args.shadow or args.canary is not None or given):
        raise ConfigError(
            "dsc rollout change: nothing to change; give --shadow, --canary PCT or a threshold "
            "(--max-error-rate, --max-disagreement, --min-rows)"
        )
    thresholds = None
    if given:
        _, running = rollouts.status(archive, name, alias)
        if running is None:
            raise RolloutError(f"{name}@{alias} has no rollout")
        thresholds = dataclasses.replace(running.thresholds, **given)
    changed = rollouts.change(
        archive,
        name,
        alias,
        mode="shadow" if args.shadow else ("canary" if args.canary is not None else None),
        share=args.canary / 100.0 if args.canary is not None else None,
        thresholds=thresholds,
        reason=args.reason,
        by=current_user(),
    )
    print(f"{name}@{alias}: {_describe(changed)}{_limits(changed.thresholds)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    name, alias = _alias_ref(args.ref)
    record, running = rollouts.status(archive, name, alias)
    merged = comparison(archive, name, alias, running) if running is not None else None
    figures = merged.figures() if merged is not None else None
    events = _rollout_events(archive, name, alias) if args.audit else None
    if args.json:
        shown: dict[str, Any] = {
            "alias": record,
            "rollout": running.to_dict() if running else None,
            "comparison": figures,
        }
        if events is not None:
            shown["audit"] = events
        print(json.dumps(shown, indent=2))
        return 0
    print(f"{name}@{alias} -> {record['version']} (set by {record['set_by']})")
    if events:
        _print_audit(events)
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


def _rollout_events(archive: Archive, name: str, alias: str) -> list[dict[str, Any]]:
    """The alias's rollout audit records (start, change, promote, abort), oldest first."""
    return [
        r for r in archive.audit(name) if r.get("event") in _AUDITED and r.get("alias") == alias
    ]


def _print_audit(events: list[dict[str, Any]]) -> None:
    """``events`` one a line: when, what, who, from and to, why."""
    print("audit:")
    for r in events:
        before, after = r.get("from") or {}, r.get("to") or {}
        what = r["event"].removeprefix("rollout-")
        move = f"{_brief(before)} -> {_brief(after)}"
        why = f": {r['why']}" if r.get("why") else ""
        print(f"  {r['at']}  {what:<7} by {r['by']}  {move}{why}")


def _brief(record: Mapping[str, Any]) -> str:
    """An alias state in a few words: ``v1`` or ``v1 + candidate 2 (canary 20%)``."""
    if not record:
        return "?"
    running = record.get("rollout")
    if not running:
        return f"v{record.get('version')}"
    return f"v{record.get('version')} + {_describe(rollouts.Rollout.from_dict(running))}"


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


def _thresholds(p: argparse.ArgumentParser, *, min_rows: int | None) -> None:
    p.add_argument("--max-error-rate", type=_rate, help="abort above this candidate error rate")
    p.add_argument("--max-disagreement", type=_rate, help="abort above this disagreement rate")
    p.add_argument(
        "--min-rows",
        type=int,
        default=min_rows,
        help="rows compared before a threshold is judged"
        + (f" (default {min_rows})" if min_rows is not None else ""),
    )


def _limits(thresholds: rollouts.Thresholds) -> str:
    parts = [
        f"{label} {value}"
        for label, value in (
            ("max error rate", thresholds.max_error_rate),
            ("max disagreement", thresholds.max_disagreement),
        )
        if value is not None
    ]
    return f" ({', '.join(parts)}; judged after {thresholds.min_rows} rows)" if parts else ""


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
