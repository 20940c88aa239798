"""`dsc score`: the batch adapter's command (registered by :mod:`dscloud.cli`).

``dscloud.batch`` (and so pyarrow) is imported only when the command runs, so images
without the ``batch`` extra still start ``dsc``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from dscloud.archive import Archive, Ref
from dscloud.baseline import Baseline
from dscloud.cli import common
from dscloud.errors import ConfigError
from dscloud.settings import cli_argument

__all__ = ["register"]

EPILOG = """\
Shards: --shard-index/--shard-count default to $AWS_BATCH_JOB_ARRAY_INDEX and
$DSC_SHARD_COUNT, so an AWS Batch array job of n children runs one shard each; the last
shard to finish writes OUTPUT/_SUCCESS (or run `dsc score --finalize --output OUTPUT
--shard-count n`). --workers N instead runs every shard here, N at a time (shard count
defaults to N). Rows that fail validation go to OUTPUT/_rejects/ with the reason; a run
that rejects more than --max-rejected-share of its rows (default $DSC_MAX_REJECTED_SHARE,
else 0.5) fails: OUTPUT/_FAILED instead of _SUCCESS, and a non-zero exit.

Rollouts: NAME@ALIAS with a rollout on the alias (dsc rollout start) scores every row with
both versions, pinned for the whole run. Shadow: the candidate's outputs follow the serving
version's as candidate_* columns. Canary: each row is answered by the version its --key
routes to (a canary without key columns is refused), and model_version names it. The
comparison is in the manifests and _SUCCESS, and in `dsc rollout status`; thresholds are
judged once per run and may abort the rollout. --no-rollout scores with the serving
version only.
"""

_BOTH = (
    "--workers runs every shard of the run here; it cannot be combined with --shard-index "
    "or AWS_BATCH_JOB_ARRAY_INDEX (use one or the other)"
)


def register(sub: Any) -> None:
    """Add ``dsc score`` to the ``dsc`` parser."""
    p = sub.add_parser(
        "score",
        help="batch-score Parquet, CSV, ... (a file or prefix, local or s3://) into Parquet parts",
        description="Score every row of INPUT with NAME@REF into Parquet parts under OUTPUT.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", metavar="NAME@REF", help="e.g. churn@production")
    p.add_argument("--input", metavar="URI", help="a file or prefix: path, file://, s3://")
    p.add_argument("--output", metavar="URI", required=True, help="a directory or s3:// prefix")
    p.add_argument("--shard-index", metavar="I", **cli_argument("shard_index", help="this shard"))
    p.add_argument("--shard-count", metavar="N", **cli_argument("shard_count"))
    p.add_argument(
        "--workers", metavar="N", **cli_argument("workers", help="run all shards in N processes")
    )
    p.add_argument(
        "--key",
        nargs="+",
        action="extend",
        metavar="COL",
        help="key columns copied to the output (default: user_id when present)",
    )
    p.add_argument("--chunk-rows", type=int, default=100_000, metavar="N", help="rows per chunk")
    p.add_argument(
        "--format",
        type=_format_name,
        metavar="NAME",
        help="input format: parquet, csv, ... (default: from the file suffix)",
    )
    p.add_argument("--max-rejected-share", metavar="SHARE", **cli_argument("max_rejected_share"))
    p.add_argument(
        "--no-drift",
        dest="drift",
        action="store_false",
        help="do not count drift against the training baseline (manifests, _SUCCESS)",
    )
    p.add_argument(
        "--no-rollout",
        dest="rollout",
        action="store_false",
        help="score with the alias's serving version only, ignoring a rollout on it",
    )
    p.add_argument(
        "--finalize",
        action="store_true",
        help="only write OUTPUT/_SUCCESS from the shard manifests (fails if shards are missing)",
    )
    p.set_defaults(run=cmd_score)


def _format_name(name: str) -> str:
    """``name`` when it is a registered batch input format; else argparse's usage error.

    The registry lives with pyarrow in :mod:`dscloud.batch`, imported only when ``--format``
    is given (so only ``dsc score`` ever does).
    """
    from dscloud.batch import formats

    try:
        formats.named(name)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return name


def _baseline(archive: str, model: Mapping[str, Any]) -> Baseline | None:
    """The training baseline of the run's model, to merge the shards' drift counts."""
    ref = Ref(name=model["name"], version=model["version"])
    return Baseline.of(Archive.open(archive).envelope(ref).data)


def _rollout_line(followed: Mapping[str, Any], shards: list[Mapping[str, Any] | None]) -> str:
    """One line on the rollout a run followed: the pair, and what the shards compared."""
    how = "shadow" if followed["mode"] == "shadow" else f"canary {followed['share'] * 100:g}%"
    head = f"rollout: candidate {followed['candidate']} in {how}"
    if followed.get("refused"):
        return f"{head}: not scored ({followed['refused']})"
    compared = sum(((s or {}).get("comparison") or {}).get("rows_compared", 0) for s in shards)
    differ = sum(((s or {}).get("comparison") or {}).get("disagreements", 0) for s in shards)
    return f"{head}: {compared:,} rows compared, {differ:,} disagree"


def cmd_score(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code. Raises :class:`~dscloud.errors.DscError`."""
    from dscloud import batch

    if args.workers is not None and args.workers > 1 and args.shard_index is not None:
        raise ConfigError(_BOTH)
    settings = common.settings(
        args,
        shard_index=args.shard_index,
        shard_count=args.shard_count,
        workers=args.workers,
        max_rejected_share=args.max_rejected_share,
    )
    if args.finalize:
        summary = batch.finalize(
            batch.Location(args.output, s3_endpoint=settings.s3_endpoint),
            settings.shard_count,
            max_rejected_share=settings.max_rejected_share,
            baseline_of=lambda model: _baseline(settings.archive, model),
            judge=batch.guard_run(settings.archive),
        )
        print(json.dumps(summary, indent=2))
        return 0
    if not args.model or not args.input:
        raise ConfigError("dsc score needs NAME@REF and --input (or --finalize)")
    workers = settings.workers
    if workers > 1:
        if settings.shard_index != 0:
            raise ConfigError(_BOTH)
        count = settings.shard_count if settings.shard_count > 1 else workers
        shards = None
    else:
        count = settings.shard_count
        shards = [settings.shard_index]
    job = batch.ScoreJob(
        model=args.model,
        archive=settings.archive,
        input=args.input,
        output=args.output,
        shard_count=count,
        keys=tuple(args.key) if args.key else None,
        chunk_rows=args.chunk_rows,
        format=args.format,
        s3_endpoint=settings.s3_endpoint,
        threads=settings.threads,
        max_rejected_share=settings.max_rejected_share,
        drift=args.drift,
        rollout=args.rollout,
        metrics=(
            batch.MetricsTarget(settings.metrics_namespace, settings.metrics_service)
            if settings.metrics_namespace
            else None
        ),
    )
    manifests = batch.run_local(job, workers=workers, shards=shards)
    rows_in = sum(m.rows_in for m in manifests)
    rows_out = sum(m.rows_out for m in manifests)
    rejected = sum(m.rows_rejected for m in manifests)
    which = (
        f"shard {manifests[0].shard_index} of {count}" if shards is not None else f"{count} shards"
    )
    model = manifests[0].model if manifests else {}
    print(
        f"{which}: {rows_in:,} rows in, {rows_out:,} scored, {rejected:,} rejected "
        f"with {model.get('name')}@{model.get('version')} -> {args.output}"
    )
    followed = manifests[0].rollout if manifests else None
    if followed is not None:
        print(_rollout_line(followed, [m.rollout for m in manifests]))
    success = batch.read_success(batch.Location(args.output, s3_endpoint=settings.s3_endpoint))
    if success is not None and success.get("plan") == (manifests[0].plan if manifests else None):
        print(f"run complete: {args.output.rstrip('/')}/{batch.SUCCESS}")
        aborted = (success.get("rollout") or {}).get("aborted")
        if aborted:
            print(f"rollout aborted by its guard rail: {aborted.get('why')}", file=sys.stderr)
    elif shards is not None:
        print("run not complete yet: other shards are still to finish", file=sys.stderr)
    return 0
