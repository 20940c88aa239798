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
   prefix, every row accounted for.

The image's paths are mapped to this checkout (`/opt/dsc/examples/` -> `examples/`,
`python` -> this interpreter, `dsc` -> the venv's), since no container engine is assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stacks.config import EnvironmentConfig
from stacks.local.deploy import Deployment
from stacks.local.server import MotoServer, free_port
from stacks.local.verify import Clients, Report

__all__ = ["LifecycleError", "run_lifecycle", "substitute"]

_JOB_TIMEOUT = 600.0
_READY_TIMEOUT = 120.0
TRAINING_ROWS = 3000
STREAM_EVENTS = 60
POISON_RECORDS = 3


class LifecycleError(RuntimeError):
    """A step of the lifecycle failed; the message says which and shows its output."""


def substitute(command: Sequence[str], parameters: Mapping[str, str]) -> list[str]:
    """`command` with each `Ref::name` replaced by parameter `name`, as AWS Batch does.
    Raises LifecycleError for a Ref with no parameter."""
    out = []
    for word in command:
        if word.startswith("Ref::"):
            name = word[len("Ref::") :]
            if name not in parameters:
                raise LifecycleError(
                    f"{word} in {list(command)} has no parameter; have {dict(parameters)}"
                )
            word = parameters[name]
        out.append(word)
    return out


def _local_command(command: Sequence[str], repo_root: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    mapped = []
    for word in command:
        if word.startswith("/opt/dsc/examples/"):
            word = str(repo_root / "examples" / word[len("/opt/dsc/examples/") :])
        mapped.append(word)
    if mapped and mapped[0] == "python":
        mapped[0] = sys.executable
    elif mapped and mapped[0] == "dsc":
        mapped[0] = str(bin_dir / "dsc")
    return mapped


def _run(what: str, command: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    try:
        result = subprocess.run(
            list(command),
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_JOB_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise LifecycleError(f"{what}: timed out after {_JOB_TIMEOUT:.0f}s") from error
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LifecycleError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{tail}"
        )
    return result.stdout


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
        _run(
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
        train = _job(batch, f"{config.name}-train")
        command = substitute(train["containerProperties"]["command"], train.get("parameters", {}))
        out = _run(
            "training job",
            _local_command(command, repo_root),
            {**base_env, **_environment(train)},
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
        _serve(deployment, config, base_env, work, report, version, log)

        # 4. the stream: records in, predictions and rejects out
        _stream(deployment, config, server, client, base_env, work, report, log)

        # 5. the nightly scoring array job
        _score(deployment, config, client, base_env, work, repo_root, report, log)
    return report


def _job(batch: Any, name: str) -> dict[str, Any]:
    found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")[
        "jobDefinitions"
    ]
    if not found:
        raise LifecycleError(f"no active job definition {name}")
    return dict(max(found, key=lambda j: j["revision"]))


def _environment(job: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["containerProperties"].get("environment", [])}


def _serve(
    d: Deployment,
    config: EnvironmentConfig,
    base_env: Mapping[str, str],
    work: Path,
    report: Report,
    version: str,
    log: Any,
) -> None:
    client = _client_from(base_env)
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


def _client_from(env: Mapping[str, str]) -> Clients:
    import boto3

    def make(service: str) -> Any:
        factory: Any = boto3.client
        return factory(
            service,
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    return make


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
    _run(
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
    out = _run(
        "dsc stream run", [dsc, "stream", "run", *aws, "--stream", stream, *flags], env, work
    )
    # The handler's own logs come first; the runner's report is the indented JSON at the end.
    lines = out.splitlines()
    run = json.loads("\n".join(lines[len(lines) - 1 - lines[::-1].index("{") :]))
    table = function["Environment"]["Variables"]["DSC_PREDICTIONS_TABLE"]
    items = dynamodb.scan(TableName=table, Select="COUNT")["Count"]
    report.check("stream", "records read", run["records"], STREAM_EVENTS + POISON_RECORDS)
    # the poison records are two entities ("broken" has no parsable body at all)
    report.check("predictions table", "one item per scored entity", items, STREAM_EVENTS)
    rejects = _drain(sqs, function["Environment"]["Variables"]["DSC_REJECTS_QUEUE_URL"])
    report.check("rejects queue", "one message per poison record", len(rejects), POISON_RECORDS)
    report.check(
        "stream failures queue", "empty (nothing given up)", len(_drain(sqs, failures_url)), 0
    )
    log(
        f"  stream: {STREAM_EVENTS}+{POISON_RECORDS} poison records on {stream} -> {items} items in "
        f"{table}, {len(rejects)} in the rejects queue ({run['invocations']} invocations)"
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


def _schedule_request(d: Deployment, client: Clients) -> tuple[str, dict[str, Any]]:
    """The nightly schedule's target ARN and SubmitJob request, read from the synthesized
    template (moto has no Scheduler model), its Refs resolved to the deployed resources."""
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in client("cloudformation").describe_stack_resources(
            StackName=f"{d.environment}-Batch"
        )["StackResources"]
        if "LogicalResourceId" in r  # moto lists what it has no model for without one
    }

    def resolve(node: Any) -> str:
        if isinstance(node, str):
            return node
        if "Fn::Join" in node:
            separator, parts = node["Fn::Join"]
            return str(separator).join(resolve(part) for part in parts)
        if node.get("Ref") == "AWS::Partition":
            return "aws"
        if "Ref" in node:
            return str(physical[node["Ref"]])
        raise LifecycleError(f"cannot resolve {node} in the schedule's target")

    for path in Path(d.assembly).rglob("*.template.json"):
        for resource in json.loads(path.read_text()).get("Resources", {}).values():
            if resource["Type"] == "AWS::Scheduler::Schedule":
                target = resource["Properties"]["Target"]
                return resolve(target["Arn"]), dict(json.loads(resolve(target["Input"])))
    raise LifecycleError("no AWS::Scheduler::Schedule in the synthesized templates")


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
    target, request = _schedule_request(d, client)
    job = _job(batch, f"{config.name}-score")
    report.check(
        "nightly schedule", "target", target, "arn:aws:scheduler:::aws-sdk:batch:submitJob"
    )
    report.check(
        "nightly schedule", "job queue", request["JobQueue"], d.output("Batch", "JobQueueArn")
    )
    report.check(
        "nightly schedule", "job definition", request["JobDefinition"], job["jobDefinitionArn"]
    )
    run = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parameters = {
        k: v.replace("<aws.scheduler.scheduled-time>", run)
        for k, v in request["Parameters"].items()
    }
    size = int(request.get("ArrayProperties", {}).get("Size", 1))
    report.check(
        "nightly schedule", "array size is the shard count", size, config.batch.shard_count
    )
    command = _local_command(
        substitute(job["containerProperties"]["command"], parameters), repo_root
    )
    env = {**base_env, **_environment(job)}
    for index in range(size):
        child = {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)} if size > 1 else env
        _run(f"scoring job child {index}", command, child, work)
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
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    parts = [k for k in keys if k.endswith(".parquet") and "/_" not in k[len(prefix) :]]
    report.check("scoring output", "one part per shard", len(parts), size)
    log(
        f"  scoring job: {size} children of `{' '.join(job['containerProperties']['command'])}` -> "
        f"{rows['out']} rows in {len(parts)} parts and _SUCCESS under {output}"
    )
