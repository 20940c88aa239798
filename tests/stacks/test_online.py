"""stacks/online.py: Kinesis -> scorer Lambda -> DynamoDB, with queues, DLQ and alarms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_cdk.assertions import Match, Template

from stacks.assets import LAMBDA_RUNTIME
from stacks.online import HANDLER

TemplateOf = Callable[[str], Template]


def test_stream_is_kms_encrypted_with_the_configured_shards(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config

    platform.template(dev_env, "Online").has_resource_properties(
        "AWS::Kinesis::Stream",
        {
            "Name": f"{env.name}-events",
            "ShardCount": env.stream.shards,
            "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
        },
    )


def test_scorer_runs_the_stream_handler_with_its_settings(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config

    platform.template(dev_env, "Online").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": HANDLER,
            "Runtime": LAMBDA_RUNTIME.name,
            "MemorySize": env.stream.lambda_memory_mib,
            "Environment": {
                "Variables": {
                    "DSC_ARCHIVE": f"s3://{env.name}-archive-{env.account}-{env.region}",
                    "DSC_MODELS": " ".join(str(m) for m in env.models),
                    "DSC_PREDICTIONS_TABLE": {"Ref": Match.any_value()},
                    "DSC_REJECTS_QUEUE_URL": {"Ref": Match.any_value()},
                    "DSC_REFRESH_SECONDS": str(env.refresh_seconds),
                    "DSC_DRIFT_WINDOW_SECONDS": str(env.stream.drift_window_seconds),
                    "DSC_DRIFT_MIN_ROWS": str(env.stream.drift_min_rows),
                    "POWERTOOLS_SERVICE_NAME": f"{env.name}-scorer",
                    "POWERTOOLS_METRICS_NAMESPACE": "dscloud",
                }
            },
        },
    )


def test_event_source_never_lets_a_bad_record_block_a_shard(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config
    template = platform.template(dev_env, "Online")
    failures = template.find_resources(
        "AWS::SQS::Queue", {"Properties": {"QueueName": f"{env.name}-stream-failures"}}
    )

    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": env.stream.batch_size,
            "ParallelizationFactor": env.stream.parallelization_factor,
            "BisectBatchOnFunctionError": True,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "MaximumRetryAttempts": env.stream.retry_attempts,
            "MaximumRecordAgeInSeconds": env.stream.max_record_age_seconds,
            "DestinationConfig": {
                "OnFailure": {"Destination": {"Fn::GetAtt": [next(iter(failures)), "Arn"]}}
            },
        },
    )


def test_queues_are_kms_encrypted_tls_only_and_dead_lettered(template_of: TemplateOf) -> None:
    template = template_of("Online")
    queues = template.find_resources("AWS::SQS::Queue")
    names = {lid: q["Properties"]["QueueName"] for lid, q in queues.items()}
    dead_letters = {n: lid for lid, n in names.items() if "dead-letters" in n}

    assert len(queues) == 4 and len(dead_letters) == 2
    template.all_resources_properties(
        "AWS::SQS::Queue", {"KmsMasterKeyId": {"Fn::GetAtt": [Match.any_value(), "Arn"]}}
    )
    for lid, queue in queues.items():
        if names[lid] in dead_letters:
            continue
        fifo = names[lid].endswith(".fifo")
        # rejects are FIFO (deduplicated by record id) with a FIFO dead-letter queue
        assert fifo == names[lid].endswith("-rejects.fifo")
        assert queue["Properties"].get("FifoQueue", False) is fifo
        dlq = next(lid2 for n, lid2 in dead_letters.items() if n.endswith(".fifo") is fifo)
        assert queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [dlq, "Arn"]
        }
    policies = template.find_resources(
        "AWS::SQS::QueuePolicy",
        {
            "Properties": {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            }
        },
    )
    assert len(policies) == len(queues)


def test_predictions_table_is_on_demand_recoverable_and_kms_encrypted(
    template_of: TemplateOf,
) -> None:
    template_of("Online").has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "KeySchema": [{"AttributeName": "entity_id", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "entity_id", "AttributeType": "S"}],
                    "BillingMode": "PAY_PER_REQUEST",
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "SSESpecification": {
                        "SSEEnabled": True,
                        "SSEType": "KMS",
                        "KMSMasterKeyId": Match.any_value(),
                    },
                }
            ),
        },
    )


def test_alarms_watch_iterator_age_errors_and_every_queue(template_of: TemplateOf) -> None:
    template = template_of("Online")
    alarms = template.find_resources("AWS::CloudWatch::Alarm").values()

    metrics = sorted(alarm["Properties"]["MetricName"] for alarm in alarms)
    assert metrics == ["ApproximateNumberOfMessagesVisible"] * 3 + [
        "DriftPredictionPsi",
        "DriftWorstFeaturePsi",
        "Errors",
        "IteratorAge",
    ]
    template.all_resources_properties(
        "AWS::CloudWatch::Alarm", {"AlarmActions": [{"Ref": Match.any_value()}]}
    )
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_drift_alarms_watch_what_the_scorer_publishes_at_the_configured_threshold(
    platform: Any, dev_env: str
) -> None:
    # The names the runtime publishes (tests/runtime/stream/test_drift.py sees them in EMF).
    from dscloud.stream.drift import ALARMED_METRICS

    env = platform.environments[dev_env].config
    template = platform.template(dev_env, "Online")
    for metric in ALARMED_METRICS:
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "MetricName": metric,
                "Namespace": "dscloud",
                "Dimensions": [{"Name": "service", "Value": f"{env.name}-scorer"}],
                "Threshold": env.stream.drift_psi_alarm,
                "Statistic": "Maximum",
                "Period": 300,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": Match.any_value()}],
            },
        )


def test_scorer_logs_have_retention(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config

    platform.template(dev_env, "Online").has_resource_properties(
        "AWS::Logs::LogGroup",
        {"LogGroupName": f"/aws/lambda/{env.name}-scorer", "RetentionInDays": env.retention_days},
    )


def test_scorer_logs_are_encrypted_with_the_online_key_for_that_log_group_only(
    platform: Any, dev_env: str
) -> None:
    # A reject's reason may quote a record's values: the logs get the queues' and table's key.
    env = platform.environments[dev_env].config
    template = platform.template_json(dev_env, "Online")
    resources = template["Resources"]
    (group,) = [r for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    key_id = group["Properties"]["KmsKeyId"]["Fn::GetAtt"][0]
    assert resources[key_id]["Type"] == "AWS::KMS::Key"
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    statements = resources[key_id]["Properties"]["KeyPolicy"]["Statement"]
    (logs,) = [
        s for s in statements if s["Principal"].get("Service") == f"logs.{env.region}.amazonaws.com"
    ]
    condition = logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    scorer_logs = f"arn:aws:logs:{env.region}:{env.account}:log-group:/aws/lambda/{env.name}-scorer"
    assert condition == scorer_logs
    assert "kms:Decrypt*" in logs["Action"] and "kms:GenerateDataKey*" in logs["Action"]


def test_scorer_role_uses_no_managed_policy(template_of: TemplateOf) -> None:
    template_of("Online").all_resources_properties(
        "AWS::IAM::Role", {"ManagedPolicyArns": Match.absent()}
    )


def test_scorer_may_write_predictions_but_not_read_the_table(platform: Any, dev_env: str) -> None:
    template = platform.template_json(dev_env, "Online")
    function = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
    )
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    dynamodb = {
        a
        for r, acts, _ in platform.grants(template)
        if r == role
        for a in acts
        if a.startswith("dynamodb:")
    }

    assert "dynamodb:PutItem" in dynamodb
    assert not dynamodb & {"dynamodb:Scan", "dynamodb:Query", "dynamodb:GetItem"}
