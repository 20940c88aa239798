"""The online path: Kinesis stream -> scorer Lambda -> DynamoDB table of latest predictions.

The event source mapping is set so one bad record never blocks a shard and no record is
lost: start at the trim horizon, bisect a failing batch, report per-record failures,
bound retries and record age, and send what still fails to an SQS queue. Records that
can never be scored go to a rejects queue from the handler itself. Both queues (and their
shared dead-letter queue, the table and the alarm topic) use the environment's online KMS
key; the stream uses the AWS-managed Kinesis key, which producers need no grant for.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.archive import Archive
from stacks.assets import LAMBDA_PYTHON_VERSION, LAMBDA_RUNTIME, AssetSources
from stacks.compliance import acknowledge
from stacks.config import EnvironmentConfig
from stacks.retention import log_group, retained_key

__all__ = ["HANDLER", "OnlinePath", "OnlineStack", "ScorerQueues"]

HANDLER = "dscloud.stream.handler.handler"
_QUEUE_RETENTION = cdk.Duration.days(14)


#: The CloudWatch namespace of the scorer's metrics (Powertools EMF), drift included.
METRICS_NAMESPACE = "dscloud"


class ScorerQueues(Construct):
    """The rejects queue, the stream's on-failure queue, and the dead-letter queue of both."""

    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, key: kms.IKey
    ) -> None:
        super().__init__(scope, id)
        self.dead_letters = self._queue("DeadLetters", f"{config.name}-dead-letters", key)
        dlq = sqs.DeadLetterQueue(queue=self.dead_letters, max_receive_count=5)
        self.failures = self._queue("StreamFailures", f"{config.name}-stream-failures", key, dlq)
        # Rejects are FIFO: the handler sets the record id as deduplication id, so a batch
        # redelivered after a crash does not report its rejects twice. A FIFO queue needs a
        # FIFO dead-letter queue of its own.
        self.rejects_dead_letters = self._queue(
            "RejectsDeadLetters", f"{config.name}-rejects-dead-letters.fifo", key, fifo=True
        )
        self.rejects = self._queue(
            "Rejects",
            f"{config.name}-rejects.fifo",
            key,
            sqs.DeadLetterQueue(queue=self.rejects_dead_letters, max_receive_count=5),
            fifo=True,
        )

    def _queue(
        self,
        id: str,
        name: str,
        key: kms.IKey,
        dlq: sqs.DeadLetterQueue | None = None,
        *,
        fifo: bool = False,
    ) -> sqs.Queue:
        return sqs.Queue(
            self,
            id,
            queue_name=name,
            fifo=fifo or None,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=_QUEUE_RETENTION,
            dead_letter_queue=dlq,
        )


class OnlinePath(Construct):
    """Stream, scorer Lambda with its event source, predictions table, queues and alarms."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        archive_uri: str,
        assets: AssetSources,
    ) -> None:
        super().__init__(scope, id)
        settings = config.stream
        self.key = retained_key(
            self,
            "Key",
            description=f"{config.name}: queues, predictions table and alarm topic",
            alias=f"alias/{config.name}-online",
        )
        # CloudWatch alarms publish to the encrypted topic.
        self.key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey"
        )
        self.stream = kinesis.Stream(
            self,
            "Stream",
            stream_name=f"{config.name}-events",
            stream_mode=kinesis.StreamMode.PROVISIONED,
            shard_count=settings.shards,
            encryption=kinesis.StreamEncryption.MANAGED,
        )
        self.queues = ScorerQueues(self, "Queues", config=config, key=self.key)
        self.table = dynamodb.Table(
            self,
            "Predictions",
            table_name=f"{config.name}-predictions",
            partition_key=dynamodb.Attribute(name="entity_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # The online key, like the queues and table: a reject's reason in these logs may quote
        # a record's values. The serving and batch logs use CloudWatch's own encryption
        # (checkov CKV_AWS_158, justified in docs/security.md).
        self.log_group = log_group(
            self,
            "ScorerLogs",
            name=f"/aws/lambda/{config.name}-scorer",
            days=config.retention_days,
            key=self.key,
        )
        # Own role instead of the AWS managed basic-execution policy: logs to this group only.
        self.role = iam.Role(
            self,
            "ScorerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{config.name}: scorer Lambda",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        # checkov's Lambda checks that stay (justified in docs/security.md): no reserved
        # concurrency (CKV_AWS_115: the mapping bounds it at shards x parallelization factor),
        # no function DLQ (CKV_AWS_116: it is never invoked asynchronously; the mapping's
        # on-failure queue and the rejects queue keep what fails), outside the VPC
        # (CKV_AWS_117: it calls AWS APIs only; no NAT gateway), environment under Lambda's
        # AWS managed key (CKV_AWS_173: settings, not secrets).
        self.function = lambda_.Function(
            self,
            "Scorer",
            function_name=f"{config.name}-scorer",
            description=f"{config.name}: scores Kinesis records into {config.name}-predictions",
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=HANDLER,
            code=assets.scorer_code(self),
            memory_size=settings.lambda_memory_mib,
            timeout=cdk.Duration.seconds(settings.lambda_timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            environment={
                "DSC_ARCHIVE": archive_uri,
                "DSC_MODELS": " ".join(str(model) for model in config.models),
                "DSC_PREDICTIONS_TABLE": self.table.table_name,
                "DSC_REJECTS_QUEUE_URL": self.queues.rejects.queue_url,
                "DSC_REFRESH_SECONDS": str(config.refresh_seconds),
                "DSC_DRIFT_WINDOW_SECONDS": str(settings.drift_window_seconds),
                "DSC_DRIFT_MIN_ROWS": str(settings.drift_min_rows),
                "POWERTOOLS_SERVICE_NAME": f"{config.name}-scorer",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            },
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            f"Pinned to Python {LAMBDA_PYTHON_VERSION}: the docker-free bundle's compiled wheels "
            "(onnxruntime, numpy) are fetched for exactly this interpreter; move both together.",
        )
        self.function.add_event_source(
            sources.KinesisEventSource(
                self.stream,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=settings.batch_size,
                parallelization_factor=settings.parallelization_factor,
                bisect_batch_on_error=True,
                report_batch_item_failures=True,
                retry_attempts=settings.retry_attempts,
                max_record_age=cdk.Duration.seconds(settings.max_record_age_seconds),
                on_failure=sources.SqsDlq(self.queues.failures),
            )
        )
        self.table.grant_write_data(self.function)
        self.queues.rejects.grant_send_messages(self.function)
        # grantSendMessages / grantWriteData on KMS-encrypted targets add these two
        # wildcard KMS actions; they apply to the online key's ARN only.
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(
                self.role,
                f"AwsSolutions-IAM5[Action::{action}]",
                f"{action} comes from CDK's grants to send to the KMS-encrypted queues and write "
                f"the encrypted table; the statement's only resource is the {config.name}-online key.",
            )
        self.alarm_topic = sns.Topic(
            self,
            "Alarms",
            topic_name=f"{config.name}-alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.alarms = self._alarms(config)

    def _drift_alarms(
        self, config: EnvironmentConfig
    ) -> list[tuple[str, cloudwatch.IMetric, float, str]]:
        """The scorer's drift metrics (EMF in its log stream: no IAM grant needed beyond its
        logs) above the threshold, over a period that holds one published window."""
        settings = config.stream
        period = cdk.Duration.minutes(max(1, -(-settings.drift_window_seconds // 60)))
        threshold = settings.drift_psi_alarm
        return [
            (
                f"{which}Drift",
                cloudwatch.Metric(
                    namespace=METRICS_NAMESPACE,
                    metric_name=metric,
                    dimensions_map={"service": f"{config.name}-scorer"},
                    statistic="Maximum",
                    period=period,
                ),
                threshold,
                f"{what} PSI above {threshold} against the training baseline (major drift)",
            )
            for which, metric, what in (
                ("Prediction", "DriftPredictionPsi", "the predictions' distribution moved:"),
                ("Feature", "DriftWorstFeaturePsi", "an input feature moved:"),
            )
        ]

    def _alarms(self, config: EnvironmentConfig) -> list[cloudwatch.Alarm]:
        five_minutes = cdk.Duration.minutes(5)
        iterator_age = self.function.metric(
            "IteratorAge", statistic="Maximum", period=cdk.Duration.minutes(1)
        )
        specs: list[tuple[str, cloudwatch.IMetric, float, str]] = [
            (
                "IteratorAge",
                iterator_age,
                config.stream.iterator_age_alarm_seconds * 1000,
                "the scorer falls behind the stream",
            ),
            *self._drift_alarms(config),
            (
                "ScorerErrors",
                self.function.metric_errors(period=five_minutes, statistic="Sum"),
                0,
                "the scorer Lambda raised (batches are retried, then sent to the failures queue)",
            ),
        ]
        for queue_id, queue in (
            ("Rejects", self.queues.rejects),
            ("StreamFailures", self.queues.failures),
            ("DeadLetters", self.queues.dead_letters),
        ):
            depth = queue.metric_approximate_number_of_messages_visible(
                period=five_minutes, statistic="Maximum"
            )
            specs.append((f"{queue_id}Depth", depth, 0, f"messages waiting in {queue_id}"))
        alarms = []
        for id, metric, threshold, reason in specs:
            alarm = cloudwatch.Alarm(
                self,
                f"{id}Alarm",
                alarm_name=f"{config.name}-{id}",
                alarm_description=f"{config.name}: {reason}",
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))
            alarms.append(alarm)
        return alarms


class OnlineStack(cdk.Stack):
    """Composes the online path and grants its scorer read access to the archive's models."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        archive: Archive,
        assets: AssetSources,
    ) -> None:
        super().__init__(scope, id, description=f"{config.name}: online scoring path (dscloud)")
        self.online = OnlinePath(
            self, "Online", config=config, archive_uri=archive.uri, assets=assets
        )
        archive.grant_read_models(self.online.role)
        online = self.online
        outputs = {
            "StreamName": online.stream.stream_name,
            "PredictionsTableName": online.table.table_name,
            "RejectsQueueUrl": online.queues.rejects.queue_url,
            "StreamFailuresQueueUrl": online.queues.failures.queue_url,
            "DeadLetterQueueUrl": online.queues.dead_letters.queue_url,
            "ScorerFunctionName": online.function.function_name,
            "AlarmTopicArn": online.alarm_topic.topic_arn,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)
