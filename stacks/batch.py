"""The batch cluster: Fargate compute (Spot optional), a job queue, the training and scoring
job definitions, and the nightly scoring schedule.

Scoring runs as an array job: child i of n scores shard i (`AWS_BATCH_JOB_ARRAY_INDEX`,
set by Batch) of n (`DSC_SHARD_COUNT`, set here and equal to the schedule's array size).
Compute environments scale to zero, so an idle cluster costs nothing.

A completed nightly run publishes its drift figures (`DriftPredictionPsi`,
`DriftWorstFeaturePsi`, `DriftRows`: runtime/dscloud/batch/metrics.py) under the same
namespace as the online scorer; two alarms send the environment's alarms topic (the online
stack's) a message when either PSI is above `batch.drift_psi_alarm`.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.archive import MODELS_PREFIX, Archive
from stacks.assets import AssetSources
from stacks.compliance import acknowledge, grant_under_prefix
from stacks.config import EnvironmentConfig
from stacks.network import Network
from stacks.online import METRICS_NAMESPACE
from stacks.retention import log_group

__all__ = [
    "SCORING_COMMAND",
    "TRAINING_COMMAND",
    "BatchCluster",
    "BatchStack",
    "NightlyDriftAlarms",
    "NightlyScoring",
]

# The batch image has no ENTRYPOINT, so the job definition's command is the whole command.
# Batch substitutes each Ref::name with the submitted parameter, else the default below.
# Where data is read and written travels as parameters only, never also as environment
# variables: the nightly run writes under a per-run output prefix, which a fixed variable
# would contradict.
TRAINING_COMMAND = (
    "python",
    "/opt/dsc/examples/train_churn.py",
    "--data",
    "Ref::data",
    "--promote",
    "staging",
)
SCORING_COMMAND = ("dsc", "score", "Ref::model", "--input", "Ref::input", "--output", "Ref::output")


def _task_role(scope: Construct, id: str, description: str) -> iam.Role:
    return iam.Role(
        scope,
        id,
        assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        description=description,
    )


class BatchCluster(Construct):
    """Compute environments, job queue, log group, roles and the two job definitions."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        archive_uri: str,
        assets: AssetSources,
    ) -> None:
        super().__init__(scope, id)
        settings = config.batch
        environments = []
        if settings.spot:
            spot = batch.FargateComputeEnvironment(
                self,
                "Spot",
                vpc=network.vpc,
                vpc_subnets=network.task_subnets,
                security_groups=[network.batch_security_group],
                maxv_cpus=settings.max_vcpus,
                spot=True,
            )
            environments.append(spot)
        self.on_demand = batch.FargateComputeEnvironment(
            self,
            "OnDemand",
            vpc=network.vpc,
            vpc_subnets=network.task_subnets,
            security_groups=[network.batch_security_group],
            maxv_cpus=settings.max_vcpus,
            spot=False,
        )
        environments.append(self.on_demand)
        self.compute_environments = environments
        # Spot first when enabled; on-demand takes what Spot cannot place.
        self.job_queue = batch.JobQueue(
            self,
            "Queue",
            job_queue_name=f"{config.name}-jobs",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=env, order=order)
                for order, env in enumerate(environments, start=1)
            ],
        )
        # CloudWatch Logs' own encryption (checkov CKV_AWS_158, see stacks/retention.py).
        self.log_group = log_group(
            self, "Logs", name=f"/aws/batch/{config.name}", days=config.retention_days
        )
        self.execution_role = _task_role(
            self, "ExecutionRole", f"{config.name}: pulls the batch image, writes job logs"
        )
        acknowledge(
            self.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, granted for pulling the batch image, has no resource-level "
            "permissions; the pull actions themselves are limited to the asset repository.",
        )
        self.training_role = _task_role(self, "TrainingRole", f"{config.name}: training jobs")
        self.scoring_role = _task_role(self, "ScoringRole", f"{config.name}: batch scoring jobs")

        # The `service` dimension of the scoring job's drift metrics (the job definition's name).
        self.metrics_service = f"{config.name}-score"
        self.input_uri = f"{archive_uri}/{settings.input_prefix}"
        self.output_uri = f"{archive_uri}/{settings.output_prefix}"
        image = assets.batch_image(self, config.batch.image)

        def job_definition(
            id: str,
            suffix: str,
            *,
            role: iam.Role,
            command: tuple[str, ...],
            environment: dict[str, str],
            parameters: dict[str, object] | None = None,
        ) -> batch.EcsJobDefinition:
            return batch.EcsJobDefinition(
                self,
                id,
                job_definition_name=f"{config.name}-{suffix}",
                timeout=cdk.Duration.minutes(settings.job_timeout_minutes),
                retry_attempts=2,
                propagate_tags=True,
                parameters=parameters,
                container=batch.EcsFargateContainerDefinition(
                    self,
                    f"{id}Container",
                    image=image,
                    cpu=settings.job_cpu / 1024,
                    memory=cdk.Size.mebibytes(settings.job_memory_mib),
                    job_role=role,
                    execution_role=self.execution_role,
                    assign_public_ip=network.assign_public_ip,
                    logging=ecs.LogDriver.aws_logs(stream_prefix=suffix, log_group=self.log_group),
                    command=list(command),
                    environment={"DSC_ARCHIVE": archive_uri, **environment},
                ),
            )

        # The example training script by default; a submission overrides the command with its own.
        self.training_job = job_definition(
            "Training",
            "train",
            role=self.training_role,
            command=TRAINING_COMMAND,
            parameters={"data": self.input_uri},
            environment={},
        )
        self.scoring_job = job_definition(
            "Scoring",
            "score",
            role=self.scoring_role,
            command=SCORING_COMMAND,
            parameters={
                "model": str(config.nightly_model),
                "input": self.input_uri,
                "output": self.output_uri,
            },
            environment={
                "DSC_SHARD_COUNT": str(settings.shard_count),
                "DSC_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "DSC_METRICS_SERVICE": self.metrics_service,
            },
        )
        # A completed run's drift metrics (PutMetricData). The action has no resource-level
        # permissions, so the resource is "*"; the namespace condition is what scopes it:
        # the job can write its own namespace's metrics and nothing else in CloudWatch.
        self.scoring_role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
        acknowledge(
            self.scoring_role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData has no resource-level permissions; the statement is "
            f"limited to the {METRICS_NAMESPACE} namespace by its cloudwatch:namespace condition.",
        )


class NightlyScoring(Construct):
    """An EventBridge Scheduler schedule that submits the scoring array job every night."""

    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, cluster: BatchCluster
    ) -> None:
        super().__init__(scope, id)
        settings = config.batch
        run = scheduler.ContextAttribute.scheduled_time
        request: dict[str, object] = {
            "JobName": f"{config.name}-nightly-score",
            "JobQueue": cluster.job_queue.job_queue_arn,
            "JobDefinition": cluster.scoring_job.job_definition_arn,
            "Parameters": {
                "model": str(config.nightly_model),
                "input": cluster.input_uri,
                "output": f"{cluster.output_uri}{run}/",
            },
            "PropagateTags": True,
        }
        if settings.shard_count > 1:  # Batch array jobs have 2 to 10,000 children.
            request["ArrayProperties"] = {"Size": settings.shard_count}
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            schedule_name=f"{config.name}-nightly-score",
            description=f"{config.name}: nightly batch scoring of {config.nightly_model}",
            schedule=scheduler.ScheduleExpression.expression(
                settings.schedule, cdk.TimeZone.of(settings.schedule_timezone)
            ),
            target=targets.Universal(
                service="batch",
                action="submitJob",
                input=scheduler.ScheduleTargetInput.from_object(request),
                retry_attempts=3,
                max_event_age=cdk.Duration.hours(2),
                policy_statements=[
                    iam.PolicyStatement(
                        actions=["batch:SubmitJob"],
                        resources=[
                            cluster.job_queue.job_queue_arn,
                            cluster.scoring_job.job_definition_arn,
                        ],
                    )
                ],
            ),
        )


class NightlyDriftAlarms(Construct):
    """Alarms on a completed nightly run's drift: prediction PSI and worst feature PSI.

    They watch the dimensions the job publishes under for the nightly model (`service`,
    `model`; not `version`, which the alias decides at run time). A run publishes once, so
    the period is an hour: it holds the run's datapoint, and the alarm is back to OK (no
    data is not breaching) before the next night, so every drifting run sends a message.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        cluster: BatchCluster,
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, id)
        threshold = config.batch.drift_psi_alarm
        model = config.nightly_model.name
        self.alarms = []
        for which, metric, what in (
            ("Prediction", "DriftPredictionPsi", "the predictions' distribution moved:"),
            ("Feature", "DriftWorstFeaturePsi", "an input feature moved:"),
        ):
            alarm = cloudwatch.Alarm(
                self,
                f"{which}Drift",
                alarm_name=f"{config.name}-Nightly{which}Drift",
                alarm_description=(
                    f"{config.name}: nightly scoring of {model}: {what} PSI above {threshold} "
                    "against the training baseline (major drift); the run's _SUCCESS has the report"
                ),
                metric=cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name=metric,
                    dimensions_map={"service": cluster.metrics_service, "model": model},
                    statistic="Maximum",
                    period=cdk.Duration.hours(1),
                ),
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
            self.alarms.append(alarm)


class BatchStack(cdk.Stack):
    """Composes the cluster and the schedule, and scopes the job roles to their prefixes."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        network: Network,
        archive: Archive,
        assets: AssetSources,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, id, description=f"{config.name}: batch cluster (dscloud)")
        settings = config.batch
        self.cluster = BatchCluster(
            self, "Cluster", config=config, network=network, archive_uri=archive.uri, assets=assets
        )
        self.nightly = NightlyScoring(self, "Nightly", config=config, cluster=self.cluster)
        # The environment's one alarms topic lives in the online stack; this stack only
        # refers to it, so Batch deploys after Online and nothing refers back.
        self.drift_alarms = NightlyDriftAlarms(
            self, "DriftAlarms", config=config, cluster=self.cluster, topic=alarm_topic
        )
        cluster = self.cluster
        archive.grant_write_models(cluster.training_role)
        archive.grant_read_prefix(
            cluster.training_role, settings.input_prefix, purpose="Reads training data"
        )
        archive.grant_read_models(cluster.scoring_role)
        archive.grant_read_prefix(
            cluster.scoring_role, settings.input_prefix, purpose="Reads scoring input"
        )
        archive.grant_replace_prefix(
            cluster.scoring_role, settings.output_prefix, purpose="Writes scoring output"
        )
        # A run that follows an alias's rollout records its comparison (an audit record) and,
        # when the run's figures breach the rollout's thresholds, aborts it: a compare-and-swap
        # of the alias record plus an audit record (runtime/dscloud/batch/following.py). So
        # PutObject on those two kinds of keys only; model versions stay read-only.
        for prefix, purpose in (
            (f"{MODELS_PREFIX}*/aliases/", "Aborts a rollout that breached its thresholds"),
            (f"{MODELS_PREFIX}*/audit/", "Records rollout comparisons and aborts"),
        ):
            grant_under_prefix(
                cluster.scoring_role,
                bucket_name=archive.bucket_name,
                prefix=prefix,
                actions=["s3:PutObject"],
                purpose=purpose,
            )
        archive.key.grant(cluster.scoring_role, "kms:GenerateDataKey")
        outputs = {
            "JobQueueName": cluster.job_queue.job_queue_name,
            "JobQueueArn": cluster.job_queue.job_queue_arn,
            "ScoringJobDefinitionArn": cluster.scoring_job.job_definition_arn,
            "TrainingJobDefinitionArn": cluster.training_job.job_definition_arn,
            "ScoringInputUri": cluster.input_uri,
            "ScoringOutputUri": cluster.output_uri,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)
