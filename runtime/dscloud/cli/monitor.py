"""`dsc drift` and `dsc evaluate`: monitoring a version (registered by :mod:`dscloud.cli`).

``drift`` counts a data set against the version's training baseline (the same counting
``dsc score`` does) and prints the report; ``evaluate`` joins a batch run's predictions
with observed outcomes and records the live metrics in the archive, where ``dsc history``
shows them beside the offline ones. ``dscloud.batch`` (pyarrow) is imported only when a
command runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from dscloud.archive import Ref, current_user
from dscloud.baseline import Baseline
from dscloud.cli import common
from dscloud.errors import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``dsc drift`` and ``dsc evaluate`` to the ``dsc`` parser."""
    p = sub.add_parser(
        "drift",
        help="drift of a data set against a version's training baseline",
        description="Score INPUT with NAME@REF and compare it with the training baseline: "
        "features ranked by PSI (< 0.1 stable, 0.1 to 0.25 moderate, > 0.25 major).",
    )
    p.add_argument("model", metavar="NAME@REF")
    p.add_argument(
        "--input", required=True, metavar="URI", help="a file or prefix (Parquet, CSV, JSONL)"
    )
    p.add_argument("--format", metavar="NAME", help="input format (default: from the suffix)")
    p.add_argument("--plot", metavar="FILE.png", help="write a chart (needs the plot extra)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=cmd_drift)

    p = sub.add_parser(
        "evaluate",
        help="live metrics of a version from a batch run's predictions and observed labels",
        description="Join PREDICTIONS (a dsc score output) with LABELS on --key and record "
        "AUC, accuracy, log loss (or RMSE, MAE) as an audited record of NAME@REF.",
    )
    p.add_argument("model", metavar="NAME@REF")
    p.add_argument("--predictions", required=True, metavar="URI", help="a dsc score output")
    p.add_argument("--labels", required=True, metavar="URI", help="a file or prefix of outcomes")
    p.add_argument("--key", default="user_id", help="the join column (default: user_id)")
    p.add_argument("--label-column", default="label", help="outcome column (default: label)")
    p.add_argument("--time-column", help="when each outcome was observed (the window)")
    p.add_argument("--json", action="store_true", help="print the recorded evaluation as JSON")
    p.set_defaults(run=cmd_evaluate)


def cmd_drift(args: argparse.Namespace) -> int:
    """Count ``--input`` and print the report; returns 0. Raises DscError subclasses."""
    from dscloud.batch import Location
    from dscloud.batch.counting import count_input
    from dscloud.scorer import Scorer

    settings = common.settings(args)
    artifact = common.open_archive(args).load(args.model)
    baseline = Baseline.of(artifact.envelope.data)
    if baseline is None:
        raise ConfigError(
            f"{artifact.envelope.ref} has no training baseline (packaged before drift "
            "monitoring); re-package it, or import it with `dsc import-onnx --baseline DATA`"
        )
    counts = count_input(
        Location(args.input, s3_endpoint=settings.s3_endpoint),
        Scorer(artifact, threads=settings.threads),
        baseline,
        format=args.format,
    )
    report = counts.report()
    print(report.to_json() if args.json else report.table())
    if args.plot:
        from dscloud.drift_plot import plot_drift

        plot_drift(report, args.plot, title=f"{artifact.envelope.ref}: drift of {args.input}")
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate and record; returns 0. Raises DscError subclasses (nothing is recorded)."""
    from dscloud.batch import Location, read_success
    from dscloud.batch.tables import read_columns
    from dscloud.evaluate import Outcomes, Scored, evaluate

    settings = common.settings(args)
    archive = common.open_archive(args)
    ref = Ref.parse(args.model)
    version = archive.resolve(ref)
    envelope = archive.envelope(Ref(name=ref.name, version=version))
    run = Location(args.predictions, s3_endpoint=settings.s3_endpoint)
    success = read_success(run)
    scored_by = (success or {}).get("model", {}).get("sha256")
    if scored_by is not None and scored_by != envelope.sha256:
        raise ConfigError(
            f"{args.predictions} was scored by sha256 {scored_by[:12]}, not by "
            f"{envelope.ref} ({envelope.sha256[:12]}): evaluate the version that scored it"
        )
    probabilities = envelope.schema.output("probabilities")
    classes = probabilities.classes if probabilities is not None else None
    scored = Scored.from_columns(read_columns(run), key=args.key, classes=classes)
    wanted = [args.key, args.label_column, *([args.time_column] if args.time_column else [])]
    labels = read_columns(Location(args.labels, s3_endpoint=settings.s3_endpoint), wanted=wanted)
    outcomes = Outcomes(
        keys=labels[args.key],
        labels=labels[args.label_column],
        times=labels[args.time_column] if args.time_column else None,
    )
    evaluation = evaluate(scored, outcomes)
    record = archive.record_evaluation(
        envelope.name,
        version,
        evaluation.to_dict() | {"predictions": run.uri, "labels": args.labels, "key": args.key},
        by=current_user(),
    )
    if args.json:
        print(json.dumps(record, indent=2, default=str))
        return 0
    rows = evaluation.rows
    print(
        f"{envelope.ref} live: {common.metrics_text(evaluation.metrics)} on {rows['used']:,} "
        f"rows ({rows['matched']:,} matched of {rows['predictions']:,} predictions, "
        f"{rows['labels']:,} labels); recorded at {record['at']}"
    )
    for note in evaluation.notes:
        print(f"  note: {note}")
    return 0
