"""Run the model lifecycle from the deployed definitions, as AWS would run them.

moto runs no Lambda, Batch job or ECS task, so each is run here from what was deployed,
never from hand-written arguments:

1. training data goes to the deployed input prefix;
2. the training job definition's command and environment run as AWS Batch would run them
   (parameters substituted for `Ref::name`): it publishes to the deployed archive and
   promotes the alias the environment serves;
3. the serving task definition's environment runs `dsc serve`, which must answer with
   that version;
4. records put on the deployed stream are scored by the real handler through
   `dsc stream run`, configured from the function's environment and its event source
   mapping; they must land in the deployed table, poison records in the rejects queue;
5. the scoring job runs as the schedule's array job would (one child per shard, with
   AWS_BATCH_JOB_ARRAY_INDEX) and must write its parts and `_SUCCESS` under the output
   prefix, every row accounted for, and publish its drift metrics to CloudWatch.

Jobs run as stacks.local.jobs emulates AWS Batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stacks.config import EnvironmentConfig
from stacks.local.deploy import Deployment
from stacks.local.jobs import (
    LifecycleError,
    job_definition,
    job_environment,
    local_command,
    run,
    schedule_request,
    substitute,
)
from stacks.local.server import MotoServer, free_port
from stacks.local.verify import Clients, Report
from stacks.online import METRICS_NAMESPACE

__all__ = ["LifecycleError", "run_lifecycle"]

_READY_TIMEOUT = 120.0
TRAINING_ROWS = 3000
STREAM_EVENTS = 60
POISON_RECORDS = 3


def run_lifecycle(
    deployment: Deployment,
    config: EnvironmentConfig,
    server: MotoServer,
    client: Clients,
    *,
    repo_root: Path,
    log: Any = print,
) -> Report:
    """Run steps 1-5 against the deployed environment; returns a Report of what was checked.
    Raises LifecycleError when a job, the handler runner or the server fails to run."""
    report = Report()
    base_env = {**os.environ, **server.environ(deployment.region)}
    batch, s3 = client("batch"), client("s3")
    bucket = deployment.output("Archive", "ArchiveBucketName")
    with tempfile.TemporaryDirectory(prefix="dsc-local-") as tmp:
        work = Path(tmp)
        # 1. training (and scoring) data under the deployed input prefix
        data = work / "churn.parquet"
        run(
            "dsc example data",
            [
                str(Path(sys.executable).parent / "dsc"),
                "example",
                "data",
                "--rows",
                str(TRAINING_ROWS),
                "--out",
                str(data),
            ],
            base_env,
            work,
        )
        key = f"{config.batch.input_prefix}churn.parquet"
        s3.put_object(Bucket=bucket, Key=key, Body=data.read_bytes())
        log(f"  data: {TRAINING_ROWS} rows -> s3://{bucket}/{key}")

        # 2. the training job, from its job definition
        train = job_definition(batch, f"{config.name}-train")
        command = substitute(train["containerProperties"]["command"], train.get("parameters", {}))
        out = run(
            "training job",
            local_command(command, repo_root),
            {**base_env, **job_environment(train)},
            work,
        )
        reference = out.strip().splitlines()[-1]
        version = reference.partition("@")[2]
        model = config.models[0]
        report.check(
            "training job",
            f"published a version of {model.name}",
            reference,
            f"{model.name}@{version}",
        )
        report.check("training job", "published a version", version.isdigit(), True)
        alias = json.loads(
            s3.get_object(Bucket=bucket, Key=f"models/{model.name}/aliases/{model.alias}.json")[
                "Body"
            ].read()
        )
        report.check("archive", f"{model} after training", str(alias["version"]), version)
        log(f"  training job: {' '.join(command)} -> {reference}, {model} -> {version}")

        # 3. the serving task definition, as `dsc serve`
        _serve(deployment, config, client, base_env, work, report, version, log)

        # 4. the stream: records in, predictions and rejects out
        _stream(deployment, config, server, client, base_env, work, report, log)

        # 5. the nightly scoring array job
        _score(deployment, config, client, base_env, work, repo_root, report, log)
    return report


def _serve(
    d: Deployment,
    config: EnvironmentConfig,
    client: Clients,
    base_env: Mapping[str, str],
    work: Path,
    report: Report,
    version: str,
    log: Any,
) -> None:
    cluster = d.output("Serving", "ClusterName")
    service = client("ecs").describe_services(cluster=cluster, services=[f"{config.name}-serving"])[
        "services"
    ][0]
    task = client("ecs").describe_task_definition(taskDefinition=service["taskDefinition"])[
        "taskDefinition"
    ]
    container = task["containerDefinitions"][0]
    env = {e["name"]: e["value"] for e in container.get("environment", [])}
    port = free_port()  # the container's 8080 may be taken here; the task's env is kept as is
    server_env = {**base_env, **env, "DSC_HOST": "127.0.0.1", "DSC_PORT": str(port)}
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dsc"), "serve"],
        env=server_env,
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = _wait_ready(f"{url}/v2/health/ready", process)
        report.check("serving", "ready (golden examples replayed)", ready, True)
        model = config.models[0]
        with urllib.request.urlopen(f"{url}/v2/models/{model.name}", timeout=10) as answer:
            body = json.loads(answer.read())
        report.check(
            "serving", f"{model.name} answers with the trained version", body["versions"], [version]
        )
        log(
            f"  serving: dsc serve with the task definition's environment on {url}: {model.name} v{body['versions'][0]}"
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise LifecycleError(f"dsc serve exited with {process.returncode}:\n{output[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _stream(
    d: Deployment,
    config: EnvironmentConfig,
    server: MotoServer,
    client: Clients,
    base_env: Mapping[str, str],
    work: Path,
    report: Report,
    log: Any,
) -> None:
    lam, sqs, dynamodb = client("lambda"), client("sqs"), client("dynamodb")
    dsc = str(Path(sys.executable).parent / "dsc")
    stream = d.output("Online", "StreamName")
    aws = ["--endpoint-url", server.endpoint, "--region", d.region]
    run(
        "dsc stream put",
        [
            dsc,
            "stream",
            "put",
            *aws,
            "--stream",
            stream,
            "--example",
            str(STREAM_EVENTS),
            "--poison",
            str(POISON_RECORDS),
        ],
        base_env,
        work,
    )
    function = lam.get_function_configuration(FunctionName=d.output("Online", "ScorerFunctionName"))
    mapping = lam.list_event_source_mappings(FunctionName=function["FunctionName"])[
        "EventSourceMappings"
    ][0]
    failures = mapping["DestinationConfig"]["OnFailure"]["Destination"]
    failures_url = sqs.get_queue_url(QueueName=failures.rsplit(":", 1)[-1])["QueueUrl"]
    flags = [
        "--handler",
        function["Handler"],
        "--batch-size",
        str(mapping["BatchSize"]),
        "--retry-attempts",
        str(mapping["MaximumRetryAttempts"]),
        "--max-record-age",
        str(mapping["MaximumRecordAgeInSeconds"]),
        "--parallelization-factor",
        str(mapping["ParallelizationFactor"]),
        "--starting-position",
        mapping["StartingPosition"],
        "--on-failure",
        failures_url,
        "--function-timeout",
        str(function["Timeout"]),
        "--timeout",
        "300",
    ]
    if mapping.get("BisectBatchOnFunctionError"):
        flags.append("--bisect-batch-on-error")
    if "ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", []):
        flags.append("--report-batch-item-failures")
    env = {**base_env, **function["Environment"]["Variables"]}
    out = run("dsc stream run", [dsc, "stream", "run", *aws, "--stream", stream, *flags], env, work)
    # The handler's own logs come first; the runner's report is the indented JSON at the end.
    lines = out.splitlines()
    runner = json.loads("\n".join(lines[len(lines) - 1 - lines[::-1].index("{") :]))
    table = function["Environment"]["Variables"]["DSC_PREDICTIONS_TABLE"]
    items = dynamodb.scan(TableName=table, Select="COUNT")["Count"]
    report.check("stream", "records read", runner["records"], STREAM_EVENTS + POISON_RECORDS)
    # the poison records are two entities ("broken" has no parsable body at all)
    report.check("predictions table", "one item per scored entity", items, STREAM_EVENTS)
    rejects = _drain(sqs, function["Environment"]["Variables"]["DSC_REJECTS_QUEUE_URL"])
    report.check("rejects queue", "one message per poison record", len(rejects), POISON_RECORDS)
    report.check(
        "stream failures queue", "empty (nothing given up)", len(_drain(sqs, failures_url)), 0
    )
    log(
        f"  stream: {STREAM_EVENTS}+{POISON_RECORDS} poison records on {stream} -> {items} items in "
        f"{table}, {len(rejects)} in the rejects queue ({runner['invocations']} invocations)"
    )


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for _ in range(50):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not batch:
            break
        messages.extend(batch)
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def _score(
    d: Deployment,
    config: EnvironmentConfig,
    client: Clients,
    base_env: Mapping[str, str],
    work: Path,
    repo_root: Path,
    report: Report,
    log: Any,
) -> None:
    batch, s3 = client("batch"), client("s3")
    target, request = schedule_request(d, client)
    job = job_definition(batch, f"{config.name}-score")
    report.check(
        "nightly schedule", "target", target, "arn:aws:scheduler:::aws-sdk:batch:submitJob"
    )
    report.check(
        "nightly schedule", "job queue", request["JobQueue"], d.output("Batch", "JobQueueArn")
    )
    report.check(
        "nightly schedule", "job definition", request["JobDefinition"], job["jobDefinitionArn"]
    )
    scheduled = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parameters = {
        k: v.replace("<aws.scheduler.scheduled-time>", scheduled)
        for k, v in request["Parameters"].items()
    }
    size = int(request.get("ArrayProperties", {}).get("Size", 1))
    report.check(
        "nightly schedule", "array size is the shard count", size, config.batch.shard_count
    )
    command = local_command(
        substitute(job["containerProperties"]["command"], parameters), repo_root
    )
    env = {**base_env, **job_environment(job)}
    for index in range(size):
        child = {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)} if size > 1 else env
        run(f"scoring job child {index}", command, child, work)
    output = parameters["output"]
    bucket, _, prefix = output.removeprefix("s3://").partition("/")
    success = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}_SUCCESS")["Body"].read())
    rows = success["rows"]
    report.check(
        "scoring output",
        "_SUCCESS: every row scored or rejected",
        rows["in"],
        rows["out"] + rows["rejected"],
    )
    report.check("scoring output", "rows in", rows["in"], TRAINING_ROWS)
    # The completed run's drift metrics, in moto's CloudWatch under the job's service.
    report.check(
        "scoring output",
        "_SUCCESS: drift metrics published",
        success["metrics"].get("published"),
        True,
    )
    published = client("cloudwatch").list_metrics(
        Namespace=METRICS_NAMESPACE,
        Dimensions=[{"Name": "service", "Value": job_environment(job)["DSC_METRICS_SERVICE"]}],
    )["Metrics"]
    # what CloudWatch holds is what the job says it published, the alarmed two among them
    said = sorted(success["metrics"].get("metrics") or {})
    report.check(
        "scoring output",
        "drift metrics in CloudWatch",
        sorted({m["MetricName"] for m in published}),
        said,
    )
    report.check(
        "scoring output",
        "the alarmed drift metrics published",
        {"DriftPredictionPsi", "DriftWorstFeaturePsi"} <= set(said),
        True,
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    parts = [k for k in keys if k.endswith(".parquet") and "/_" not in k[len(prefix) :]]
    report.check("scoring output", "one part per shard", len(parts), size)
    log(
        f"  scoring job: {size} children of `{' '.join(job['containerProperties']['command'])}` -> "
        f"{rows['out']} rows in {len(parts)} parts and _SUCCESS under {output}"
    )
