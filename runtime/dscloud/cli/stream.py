"""`dsc` commands of the stream adapter (registered by :mod:`dscloud.cli`).

- ``dsc stream create``: the stream, predictions table and queues (moto server or sandbox)
- ``dsc stream put``: JSON lines (or generated example events) onto a stream
- ``dsc stream run``: the local event source mapping feeding the Lambda handler
- ``dsc stream show``: the predictions table and queue messages
- ``dsc bundle lambda``: the docker-free Lambda zip or folder

The stream modules are imported inside each command, so ``dsc`` starts without them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dscloud.cli.common import settings
from dscloud.errors import ConfigError
from dscloud.settings import cli_argument

__all__ = ["register"]

DEFAULT_HANDLER = "dscloud.stream.handler.handler"


def register(sub: Any) -> None:
    """Add ``stream`` and ``bundle`` to the ``dsc`` parser."""
    stream = sub.add_parser("stream", help="score Kinesis records: run, put, create, show")
    commands = stream.add_subparsers(dest="stream_command", required=True, metavar="COMMAND")
    _register_create(commands)
    _register_put(commands)
    _register_run(commands)
    _register_show(commands)

    bundle = sub.add_parser("bundle", help="package code for the cloud")
    targets = bundle.add_subparsers(dest="bundle_target", required=True, metavar="TARGET")
    lam = targets.add_parser(
        "lambda", help="the scorer Lambda as a zip or folder (pip platform targeting, no Docker)"
    )
    lam.add_argument("zip", nargs="?", help="write a zip here (OUT.zip)")
    lam.add_argument("--dir", help="write the unzipped bundle into this folder (emptied first)")
    lam.add_argument("--arch", choices=["x86_64", "arm64"], default="x86_64")
    lam.add_argument("--python-version", default=None, help="Lambda runtime (default 3.12)")
    lam.add_argument("--runtime", default=None, help="the runtime/ source folder")
    lam.add_argument("--requirements", default=None, help="pinned requirements file")
    lam.set_defaults(run=cmd_bundle_lambda)


def _aws_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url",
        help="AWS endpoint, e.g. http://127.0.0.1:5000 (default: $AWS_ENDPOINT_URL)",
    )
    parser.add_argument("--region", help="AWS region (default: $AWS_DEFAULT_REGION)")


def _client(args: argparse.Namespace, service: str) -> Any:
    import boto3

    make: Any = boto3.client  # one call for several services: the typed overloads can't see it
    return make(service, endpoint_url=args.endpoint_url, region_name=args.region)


def _register_create(commands: Any) -> None:
    p = commands.add_parser("create", help="create the stream, table and queues")
    _aws_flags(p)
    p.add_argument("--stream", default="events")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--table", default="predictions")
    p.add_argument("--rejects-queue", default="rejects.fifo", help="a .fifo name deduplicates")
    p.add_argument("--failures-queue", default="stream-failures")
    p.set_defaults(run=cmd_stream_create)


def cmd_stream_create(args: argparse.Namespace) -> int:
    from dscloud.stream.local import create_resources

    made = create_resources(
        kinesis=_client(args, "kinesis"),
        dynamodb=_client(args, "dynamodb"),
        sqs=_client(args, "sqs"),
        stream=args.stream,
        shards=args.shards,
        table=args.table,
        rejects_queue=args.rejects_queue,
        failures_queue=args.failures_queue,
    )
    print(json.dumps(made.to_dict(), indent=2))
    return 0


def _register_put(commands: Any) -> None:
    p = commands.add_parser("put", help="put JSON-lines records (or example events) on a stream")
    _aws_flags(p)
    p.add_argument("--stream", required=True)
    p.add_argument("file", nargs="?", help="JSON lines, one record each ('-': stdin)")
    p.add_argument("--example", type=int, metavar="N", help="N churn example events instead")
    p.add_argument("--poison", type=int, default=0, metavar="K", help="mix in K bad records")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(run=cmd_stream_put)


def cmd_stream_put(args: argparse.Namespace) -> int:
    from dscloud.stream.local import put_payloads

    if args.example is not None:
        payloads = _example_payloads(args.example, args.poison, args.seed)
    elif args.file:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
        with source:
            payloads = [line.strip().encode() for line in source if line.strip()]
    else:
        raise ConfigError("dsc stream put: give a FILE of JSON lines, '-' or --example N")
    sequences = put_payloads(_client(args, "kinesis"), args.stream, payloads)
    print(f"put {len(sequences)} records on {args.stream}")
    return 0


def _example_payloads(n: int, poison: int, seed: int) -> list[bytes]:
    """``n`` churn events (entities u00000000...) with ``poison`` bad records spread in."""
    import math
    from datetime import UTC, datetime, timedelta

    from dscloud import example  # needs pandas: a laptop tool, never in the Lambda

    frame = example.churn_data(n, seed=seed)
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)
    payloads = []
    for i, row in enumerate(frame.to_dict("records")):
        features = {
            k: (None if isinstance(row[k], float) and math.isnan(row[k]) else row[k])
            for k in example.FEATURES
        }
        when = (start + timedelta(seconds=i)).isoformat()
        payloads.append(
            json.dumps(
                {"entity_id": row[example.KEY], "features": features, "event_time": when}
            ).encode()
        )
    bad = [
        b'{"entity_id": "broken", "features": ',
        json.dumps(
            {
                "entity_id": "bad-plan",
                "features": {**json.loads(payloads[0])["features"], "tenure_months": "ten"},
                "event_time": start.isoformat(),
            }
        ).encode(),
    ]
    for k in range(poison):
        payloads.insert(min(len(payloads), (k + 1) * max(1, n // (poison + 1))), bad[k % 2])
    return payloads


def _register_run(commands: Any) -> None:
    p = commands.add_parser(
        "run",
        help="poll a stream and call the Lambda handler as Lambda's event source mapping does",
    )
    _aws_flags(p)
    p.add_argument("--stream", required=True)
    p.add_argument("--handler", default=DEFAULT_HANDLER, help="package.module.function")
    p.add_argument("--model", **cli_argument("models", help="the model reference"))
    p.add_argument("--table", **cli_argument("predictions_table"))
    p.add_argument("--rejects-queue-url", **cli_argument("rejects_queue_url"))
    p.add_argument("--output-stream", **cli_argument("output_stream"))
    m = p.add_argument_group("event source mapping (CDK KinesisEventSource names)")
    m.add_argument("--batch-size", type=int, default=100)
    m.add_argument("--bisect-batch-on-error", action="store_true")
    m.add_argument("--max-record-age", type=float, metavar="SECONDS")
    m.add_argument("--retry-attempts", type=int, default=-1, help="-1: until records expire")
    m.add_argument("--report-batch-item-failures", action="store_true")
    m.add_argument("--parallelization-factor", type=int, default=1)
    m.add_argument(
        "--starting-position", default="TRIM_HORIZON", choices=["TRIM_HORIZON", "LATEST"]
    )
    m.add_argument("--on-failure", metavar="QUEUE_URL", help="SQS on-failure destination")
    r = p.add_argument_group("runner")
    r.add_argument("--follow", action="store_true", help="keep polling after the stream drains")
    r.add_argument("--timeout", type=float, help="stop after this many seconds")
    r.add_argument("--max-invocations", type=int)
    r.add_argument("--function-timeout", type=float, default=60.0)
    r.add_argument("--poll-interval", type=float, default=1.0)
    r.add_argument("--checkpoint", help="resume from and save shard checkpoints in this file")
    p.set_defaults(run=cmd_stream_run)


def cmd_stream_run(args: argparse.Namespace) -> int:
    from dscloud.stream.mapping import EventSourceMapping
    from dscloud.stream.runner import EventSourceRunner, load_handler

    mapping = EventSourceMapping(
        batch_size=args.batch_size,
        bisect_batch_on_error=args.bisect_batch_on_error,
        max_record_age=args.max_record_age,
        retry_attempts=args.retry_attempts,
        report_batch_item_failures=args.report_batch_item_failures,
        parallelization_factor=args.parallelization_factor,
        starting_position=args.starting_position,
        on_failure=args.on_failure,
    )
    kinesis = _client(args, "kinesis")
    sqs = _client(args, "sqs")
    if args.handler == DEFAULT_HANDLER:
        from dscloud.stream import handler as handler_module

        config = settings(
            args,
            models=[args.model] if args.model else None,
            predictions_table=args.table,
            rejects_queue_url=args.rejects_queue_url,
            output_stream=args.output_stream,
        )
        handler_module.configure(
            handler_module.StreamScorer.from_settings(
                config, dynamodb=_client(args, "dynamodb"), sqs=sqs, kinesis=kinesis
            )
        )
    runner = EventSourceRunner(
        kinesis,
        args.stream,
        load_handler(args.handler),
        mapping,
        sqs=sqs,
        function_timeout=args.function_timeout,
        poll_interval=args.poll_interval,
        checkpoint_file=args.checkpoint,
    )
    report = runner.run(
        until_drained=not args.follow, timeout=args.timeout, max_invocations=args.max_invocations
    )
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def _register_show(commands: Any) -> None:
    p = commands.add_parser("show", help="print the predictions table and queue messages")
    _aws_flags(p)
    p.add_argument("--table", help="predictions table")
    p.add_argument("--queue", action="append", default=[], metavar="URL", help="repeatable")
    p.add_argument("--delete", action="store_true", help="delete the messages read")
    p.set_defaults(run=cmd_stream_show)


def cmd_stream_show(args: argparse.Namespace) -> int:
    from dscloud.stream.local import read_queue, scan_table

    if args.table:
        items = scan_table(_client(args, "dynamodb"), args.table)
        print(f"{args.table}: {len(items)} predictions")
        print(f"  {'entity_id':<12} {'score':>7} {'label':>5}  model        event_time")
        for item in items:
            score = item.get("score")
            print(
                f"  {item['entity_id']:<12} "
                f"{score if score is None else format(score, '.4f'):>7} "
                f"{item.get('label', ''):>5}  "
                f"{item.get('model_name')}@{item.get('model_version')}  "
                f"{item.get('event_time')}"
            )
    for url in args.queue:
        messages = list(read_queue(_client(args, "sqs"), url, delete=args.delete))
        print(f"{url.rsplit('/', 1)[-1]}: {len(messages)} messages")
        for message in messages:
            if "KinesisBatchInfo" in message:
                info = message["KinesisBatchInfo"]
                print(
                    f"  {message['requestContext']['condition']}: {info['shardId']} "
                    f"{info['startSequenceNumber']}..{info['endSequenceNumber']} "
                    f"({info['batchSize']} records)"
                )
            else:
                print(f"  {message.get('entity_id') or '?'}: {message.get('reason', message)}")
    return 0


def cmd_bundle_lambda(args: argparse.Namespace) -> int:
    from dscloud.stream.bundle import DEFAULT_PYTHON, build_bundle

    if not args.zip and not args.dir:
        raise ConfigError("dsc bundle lambda: give OUT.zip, --dir OUTDIR, or both")
    root = _repo_root()
    runtime = Path(args.runtime) if args.runtime else root / "runtime"
    requirements = (
        Path(args.requirements) if args.requirements else root / "docker/requirements-lambda.txt"
    )
    if args.dir:
        out_dir = Path(args.dir)
        report = build_bundle(
            out_dir,
            runtime_dir=runtime,
            requirements=requirements,
            python_version=args.python_version or DEFAULT_PYTHON,
            arch=args.arch,
            zip_path=args.zip,
        )
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="dsc-lambda-") as tmp:
            report = build_bundle(
                Path(tmp) / "bundle",
                runtime_dir=runtime,
                requirements=requirements,
                python_version=args.python_version or DEFAULT_PYTHON,
                arch=args.arch,
                zip_path=args.zip,
            )
    where = f"{report.zip_path} ({(report.zip_bytes or 0) / 1e6:.1f} MB zipped)" if args.zip else ""
    if args.dir:
        where = f"{args.dir}" + (f" and {where}" if where else "")
    print(
        f"Lambda bundle for python{report.python_version} {report.arch}: {where}; "
        f"{report.unzipped_bytes / 1e6:.1f} MB unzipped (limit 250 MB), "
        f"{len(report.distributions)} distributions, no scikit-learn",
        file=sys.stderr,
    )
    return 0


def _repo_root() -> Path:
    """The repository holding runtime/ and docker/: the working directory or its parents."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "runtime" / "pyproject.toml").is_file() and (candidate / "docker").is_dir():
            return candidate
    source = Path(__file__).resolve().parents[3]  # runtime/dscloud/cli/stream.py
    if (source / "runtime" / "pyproject.toml").is_file():
        return source
    raise ConfigError(
        "cannot find the repository (runtime/pyproject.toml and docker/): run from it, "
        "or pass --runtime and --requirements"
    )
