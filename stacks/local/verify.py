"""Read the deployed environment back through the service APIs and check its wiring.

Never the CLI's tick: each resource the environment promises is read with boto3 from the
moto server and compared with what the environment's configuration says it must be. Three
kinds of finding go into the report:

- a check: passed or failed (a failed one fails `make local` and the test);
- dropped: a property the template sets that moto does not keep (versioning, public access
  block, encryption, PITR, ...); the synthesized template stays the check for those;
- not modelled: a resource type moto's CloudFormation creates nothing for (alarms,
  scheduler schedules, autoscaling, resource policies); checked in the template only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.batch import SCORING_COMMAND, TRAINING_COMMAND
from stacks.config import EnvironmentConfig
from stacks.local.deploy import Deployment
from stacks.online import METRICS_NAMESPACE
from stacks.serving import CONTAINER_PORT, READINESS_PATH

__all__ = ["Check", "Report", "verify"]

Clients = Callable[[str], Any]


@dataclass(frozen=True)
class Check:
    """One comparison of a deployed value with the expected one."""

    resource: str
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    """Everything `verify` found."""

    checks: list[Check] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    not_modelled: list[str] = field(default_factory=list)

    def check(self, resource: str, what: str, actual: Any, expected: Any) -> bool:
        """Record whether `actual` equals `expected`; returns whether it did."""
        ok = bool(actual == expected)
        detail = "" if ok else f"got {actual!r}, expected {expected!r}"
        self.checks.append(Check(resource, what, ok, detail))
        return ok

    def drop(self, resource: str, what: str, actual: Any) -> None:
        """Record a property moto did not keep."""
        self.dropped.append(f"{resource}: {what} (moto returns {actual!r})")

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]


def _code(error: Exception) -> str:
    response = getattr(error, "response", {})
    return str(response.get("Error", {}).get("Code", type(error).__name__))


def verify(deployment: Deployment, config: EnvironmentConfig, client: Clients) -> Report:
    """Check every resource of the deployed environment against `config`; returns the Report
    (read `failures`). `client(service)` makes a boto3 client for the moto server."""
    report = Report()
    _archive(deployment, config, client, report)
    _network(deployment, client, report)
    _batch(deployment, config, client, report)
    _online(deployment, config, client, report)
    _serving(deployment, config, client, report)
    _not_modelled(deployment, report)
    return report


def _archive(d: Deployment, config: EnvironmentConfig, client: Clients, report: Report) -> None:
    s3, kms = client("s3"), client("kms")
    bucket = d.output("Archive", "ArchiveBucketName")
    report.check(
        "archive bucket", "name", bucket, f"{config.name}-archive-{config.account}-{config.region}"
    )
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    report.check("archive bucket", "exists", bucket in names, True)
    report.check(
        "access-log bucket",
        "exists",
        f"{config.name}-logs-{config.account}-{config.region}" in names,
        True,
    )
    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    if versioning != "Enabled":
        report.drop("archive bucket", "versioning", versioning)
    try:
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        report.check("archive bucket", "public access blocked", all(block.values()), True)
    except Exception as error:  # moto: NoSuchPublicAccessBlockConfiguration
        report.drop("archive bucket", "public access block", _code(error))
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
        algorithm = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        report.check("archive bucket", "encryption", algorithm, "aws:kms")
    except Exception as error:
        report.drop("archive bucket", "default encryption (SSE-KMS)", _code(error))
    key = kms.describe_key(KeyId=f"alias/{config.name}-archive")["KeyMetadata"]
    report.check("archive key", "enabled", key["KeyState"], "Enabled")
    report.check(
        "archive key",
        "ARN matches the stack output",
        key["Arn"],
        d.output("Archive", "ArchiveKeyArn"),
    )
    rotation = kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
    if rotation is not True:
        report.drop("archive key", "rotation", rotation)


def _network(d: Deployment, client: Clients, report: Report) -> None:
    ec2 = client("ec2")
    vpc_id = d.output("Network", "VpcId")
    vpcs = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    report.check("vpc", "exists", len(vpcs), 1)
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    report.check(
        "vpc", "public subnets in two zones", len({s["AvailabilityZone"] for s in subnets}), 2
    )
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    described = {
        g["Description"].split(": ", 1)[-1].split(" (")[0] for g in groups["SecurityGroups"]
    }
    for role in ("batch jobs", "model server tasks", "model server load balancer"):
        report.check("security groups", role, role in described, True)
    flow = ec2.describe_flow_logs(Filters=[{"Name": "resource-id", "Values": [vpc_id]}])["FlowLogs"]
    report.check("vpc", "flow log to S3", [f.get("LogDestinationType") for f in flow], ["s3"])


def _job_definition(batch: Any, name: str) -> dict[str, Any]:
    found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")[
        "jobDefinitions"
    ]
    if not found:
        raise LookupError(f"job definition {name} not found")
    return dict(max(found, key=lambda j: j["revision"]))


def _batch(d: Deployment, config: EnvironmentConfig, client: Clients, report: Report) -> None:
    batch = client("batch")
    settings = config.batch
    queue_name = d.output("Batch", "JobQueueName")
    queues = batch.describe_job_queues(jobQueues=[queue_name])["jobQueues"]
    report.check("job queue", "exists", len(queues), 1)
    order = sorted(queues[0]["computeEnvironmentOrder"], key=lambda o: o["order"]) if queues else []
    environments = batch.describe_compute_environments(
        computeEnvironments=[o["computeEnvironment"] for o in order]
    )["computeEnvironments"]
    kinds = [e["computeResources"]["type"] for e in environments]
    expected = ["FARGATE_SPOT", "FARGATE"] if settings.spot else ["FARGATE"]
    report.check("job queue", "compute environments, in order", sorted(kinds), sorted(expected))
    archive = f"s3://{d.output('Archive', 'ArchiveBucketName')}"
    input_uri = f"{archive}/{settings.input_prefix}"
    for suffix, command, parameters, env in (
        ("train", TRAINING_COMMAND, {"data": input_uri}, {"DSC_ARCHIVE": archive}),
        (
            "score",
            SCORING_COMMAND,
            {
                "model": str(config.nightly_model),
                "input": input_uri,
                "output": f"{archive}/{settings.output_prefix}",
            },
            {
                "DSC_ARCHIVE": archive,
                "DSC_SHARD_COUNT": str(settings.shard_count),
                "DSC_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "DSC_METRICS_SERVICE": f"{config.name}-score",
            },
        ),
    ):
        name = f"{config.name}-{suffix}"
        job = _job_definition(batch, name)
        container = job["containerProperties"]
        report.check(name, "image", container["image"], settings.image)
        report.check(name, "parameters", job.get("parameters", {}), parameters)
        environment = {e["name"]: e["value"] for e in container.get("environment", [])}
        report.check(name, "environment", environment, env)
        report.check(name, "command", container.get("command"), list(command))


def _online(d: Deployment, config: EnvironmentConfig, client: Clients, report: Report) -> None:
    kinesis, lam, dynamodb, sqs = (
        client("kinesis"),
        client("lambda"),
        client("dynamodb"),
        client("sqs"),
    )
    settings = config.stream
    stream_name = d.output("Online", "StreamName")
    stream = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    report.check("stream", "shards", stream["OpenShardCount"], settings.shards)
    if stream.get("EncryptionType") != "KMS":
        report.drop("stream", "encryption", stream.get("EncryptionType"))
    function = lam.get_function_configuration(FunctionName=d.output("Online", "ScorerFunctionName"))
    env = function["Environment"]["Variables"]
    table = env.get("DSC_PREDICTIONS_TABLE", "")
    report.check(
        "scorer function", "handler", function["Handler"], "dscloud.stream.handler.handler"
    )
    report.check(
        "scorer function",
        "DSC_PREDICTIONS_TABLE is the deployed table",
        table,
        d.output("Online", "PredictionsTableName"),
    )
    described = dynamodb.describe_table(TableName=table)["Table"]
    report.check(
        "predictions table",
        "key",
        described["KeySchema"],
        [{"AttributeName": "entity_id", "KeyType": "HASH"}],
    )
    pitr = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    if pitr.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") != "ENABLED":
        report.drop(
            "predictions table",
            "point-in-time recovery",
            pitr.get("PointInTimeRecoveryDescription"),
        )
    rejects_url = env.get("DSC_REJECTS_QUEUE_URL", "")
    report.check(
        "scorer function",
        "DSC_REJECTS_QUEUE_URL is the deployed queue",
        rejects_url,
        d.output("Online", "RejectsQueueUrl"),
    )
    attributes = sqs.get_queue_attributes(QueueUrl=rejects_url, AttributeNames=["All"])[
        "Attributes"
    ]
    report.check("rejects queue", "FIFO", attributes.get("FifoQueue"), "true")
    report.check(
        "scorer function", "DSC_MODELS", env.get("DSC_MODELS"), " ".join(map(str, config.models))
    )
    report.check(
        "scorer function",
        "DSC_ARCHIVE",
        env.get("DSC_ARCHIVE"),
        f"s3://{d.output('Archive', 'ArchiveBucketName')}",
    )
    mappings = lam.list_event_source_mappings(FunctionName=function["FunctionName"])[
        "EventSourceMappings"
    ]
    report.check(
        "event source mapping",
        "one, from the stream",
        [m["EventSourceArn"] for m in mappings],
        [stream["StreamARN"]],
    )
    failures_arn = sqs.get_queue_attributes(
        QueueUrl=d.output("Online", "StreamFailuresQueueUrl"), AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    for mapping in mappings:
        expected = {
            "BatchSize": settings.batch_size,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": settings.retry_attempts,
            "MaximumRecordAgeInSeconds": settings.max_record_age_seconds,
            "ParallelizationFactor": settings.parallelization_factor,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "StartingPosition": "TRIM_HORIZON",
        }
        for name, value in expected.items():
            if name not in mapping:
                report.drop("event source mapping", name, None)
            else:
                report.check("event source mapping", name, mapping[name], value)
        destination = mapping.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if destination is None:
            report.drop("event source mapping", "on-failure destination", destination)
        else:
            report.check(
                "event source mapping", "on-failure destination", destination, failures_arn
            )


def _serving(d: Deployment, config: EnvironmentConfig, client: Clients, report: Report) -> None:
    ecs, elbv2 = client("ecs"), client("elbv2")
    cluster = d.output("Serving", "ClusterName")
    services = ecs.describe_services(cluster=cluster, services=[f"{config.name}-serving"])[
        "services"
    ]
    report.check("serving service", "exists", len(services), 1)
    if not services:
        return
    report.check(
        "serving service", "desired tasks", services[0]["desiredCount"], config.serving.min_tasks
    )
    task = ecs.describe_task_definition(taskDefinition=services[0]["taskDefinition"])[
        "taskDefinition"
    ]
    container = task["containerDefinitions"][0]
    env = {e["name"]: e["value"] for e in container.get("environment", [])}
    report.check("serving task", "image", container["image"], config.serving.image)
    report.check(
        "serving task",
        "DSC_ARCHIVE",
        env.get("DSC_ARCHIVE"),
        f"s3://{d.output('Archive', 'ArchiveBucketName')}",
    )
    report.check(
        "serving task", "DSC_MODELS", env.get("DSC_MODELS"), " ".join(map(str, config.models))
    )
    report.check(
        "serving task",
        "port",
        [p["containerPort"] for p in container.get("portMappings", [])],
        [CONTAINER_PORT],
    )
    groups = elbv2.describe_target_groups()["TargetGroups"]
    paths = [g.get("HealthCheckPath") for g in groups]
    report.check("load balancer", "health check on readiness", READINESS_PATH in paths, True)


# Resource types moto 5.2's CloudFormation creates nothing for (see DESIGN.md).
_NOT_MODELLED = (
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::CloudWatch::Alarm",
    "AWS::Scheduler::Schedule",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::EC2::SecurityGroupEgress",
    "AWS::ApiGatewayV2::",  # every type of the signed endpoint (a prefix)
)


def _not_modelled(d: Deployment, report: Report) -> None:
    counts: dict[str, int] = {}
    for path in sorted(Path(d.assembly).rglob("*.template.json")):
        for resource in json.loads(path.read_text()).get("Resources", {}).values():
            if resource["Type"].startswith(_NOT_MODELLED):
                counts[resource["Type"]] = counts.get(resource["Type"], 0) + 1
    report.not_modelled.extend(f"{kind} x{n}" for kind, n in sorted(counts.items()))
