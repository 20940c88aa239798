"""stacks/batch.py: Fargate (and Spot) compute, queue, job definitions, nightly schedule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match

from stacks.archive import MODELS_PREFIX
from stacks.assets import BATCH_DOCKERFILE
from stacks.batch import SCORING_COMMAND, TRAINING_COMMAND

REPO_ROOT = Path(__file__).resolve().parents[2]


def _first_env_with_spot(platform: Any) -> str:
    return next(name for name, env in platform.environments.items() if env.config.batch.spot)


def _first_env_without_spot(platform: Any) -> str:
    return next(name for name, env in platform.environments.items() if not env.config.batch.spot)


def test_spot_environment_comes_first_when_enabled(platform: Any) -> None:
    name = _first_env_with_spot(platform)
    env = platform.environments[name].config
    template = platform.template(name, "Batch")
    environments = template.find_resources("AWS::Batch::ComputeEnvironment")
    by_type = {
        ce["Properties"]["ComputeResources"]["Type"]: lid for lid, ce in environments.items()
    }

    assert set(by_type) == {"FARGATE", "FARGATE_SPOT"}
    template.all_resources_properties(
        "AWS::Batch::ComputeEnvironment",
        {
            "Type": "managed",
            "ComputeResources": Match.object_like({"MaxvCpus": env.batch.max_vcpus}),
        },
    )
    template.has_resource_properties(
        "AWS::Batch::JobQueue",
        {
            "JobQueueName": f"{name}-jobs",
            "ComputeEnvironmentOrder": [
                {
                    "ComputeEnvironment": {
                        "Fn::GetAtt": [by_type["FARGATE_SPOT"], "ComputeEnvironmentArn"]
                    },
                    "Order": 1,
                },
                {
                    "ComputeEnvironment": {
                        "Fn::GetAtt": [by_type["FARGATE"], "ComputeEnvironmentArn"]
                    },
                    "Order": 2,
                },
            ],
        },
    )


def test_without_spot_only_on_demand_fargate(platform: Any) -> None:
    template = platform.template(_first_env_without_spot(platform), "Batch")

    template.resource_count_is("AWS::Batch::ComputeEnvironment", 1)
    template.has_resource_properties(
        "AWS::Batch::ComputeEnvironment",
        {"ComputeResources": Match.object_like({"Type": "FARGATE"})},
    )


def test_job_commands_are_whole_commands_for_the_batch_image() -> None:
    # Batch overrides CMD, never ENTRYPOINT: the image has none, so commands start with the program.
    dockerfile = (REPO_ROOT / BATCH_DOCKERFILE).read_text()

    assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)
    assert SCORING_COMMAND[:2] == ("dsc", "score")
    assert "COPY examples/train_churn.py " + TRAINING_COMMAND[1] in dockerfile


def test_scoring_job_is_an_array_job_definition_with_the_shard_count(
    platform: Any, dev_env: str
) -> None:
    env = platform.environments[dev_env].config

    platform.template(dev_env, "Batch").has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": f"{env.name}-score",
            "PlatformCapabilities": ["FARGATE"],
            "Parameters": Match.object_like({"model": str(env.nightly_model)}),
            "ContainerProperties": Match.object_like(
                {
                    "Command": list(SCORING_COMMAND),
                    "Environment": Match.array_with(
                        [{"Name": "DSC_SHARD_COUNT", "Value": str(env.batch.shard_count)}]
                    ),
                    "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                }
            ),
        },
    )


def test_training_job_definition_exists(platform: Any, dev_env: str) -> None:
    platform.template(dev_env, "Batch").has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": f"{dev_env}-train",
            "ContainerProperties": Match.object_like(
                {"Environment": Match.array_with([Match.object_like({"Name": "DSC_ARCHIVE"})])}
            ),
        },
    )


def test_nightly_schedule_submits_the_scoring_array_job(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config
    template = platform.template_json(dev_env, "Batch")
    schedule = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"
    )
    target = schedule["Properties"]["Target"]
    # The input is a Fn::Join of JSON text and references; a reference stands inside quotes.
    parts = target["Input"]["Fn::Join"][1]
    request = json.loads("".join(part if isinstance(part, str) else "ref" for part in parts))

    assert schedule["Properties"]["ScheduleExpression"] == env.batch.schedule
    assert schedule["Properties"]["ScheduleExpressionTimezone"] == env.batch.schedule_timezone
    assert target["Arn"]["Fn::Join"][1][-1] == ":scheduler:::aws-sdk:batch:submitJob"
    assert request["ArrayProperties"] == {"Size": env.batch.shard_count}
    assert request["Parameters"]["model"] == str(env.nightly_model)
    assert request["Parameters"]["output"].endswith("<aws.scheduler.scheduled-time>/")


def test_a_single_shard_is_submitted_as_a_plain_job(variant: Any) -> None:
    template = variant.template_json("dsc-ops-live", "Batch")
    schedule = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"
    )

    assert "ArrayProperties" not in json.dumps(schedule["Properties"]["Target"]["Input"])
    assert "upsell@champion" in json.dumps(schedule["Properties"]["Target"]["Input"])


def test_scheduler_may_submit_only_the_scoring_job_to_its_queue(
    platform: Any, dev_env: str
) -> None:
    template = platform.template_json(dev_env, "Batch")
    submit = [
        (actions, resources)
        for _, actions, resources in platform.grants(template)
        if "batch:SubmitJob" in actions
    ]

    assert len(submit) == 1
    actions, resources = submit[0]
    assert actions == ["batch:SubmitJob"]
    assert "*" not in json.dumps(resources)


def job_role(template: dict[str, Any], job_definition_name: str) -> str:
    """The logical id of the job role of the named job definition."""
    for resource in template["Resources"].values():
        properties = resource["Properties"]
        if properties.get("JobDefinitionName") == job_definition_name:
            return str(properties["ContainerProperties"]["JobRoleArn"]["Fn::GetAtt"][0])
    raise AssertionError(f"no job definition {job_definition_name}")


def test_scoring_role_reads_input_writes_output_and_never_writes_model_versions(
    platform: Any, dev_env: str
) -> None:
    env = platform.environments[dev_env].config
    template = platform.template_json(dev_env, "Batch")
    scoring_role = job_role(template, f"{env.name}-score")
    scoring: dict[str, set[str]] = {}
    for role, actions, resources in platform.grants(template):
        if role == scoring_role:
            for resource in resources:
                if (
                    isinstance(resource, str)
                    and resource.startswith("arn:aws:s3:::")
                    and "/" in resource
                ):
                    scoring.setdefault(resource.split("/", 1)[1], set()).update(actions)

    assert set(scoring) == {
        f"{MODELS_PREFIX}*",
        f"{MODELS_PREFIX}*/aliases/*",
        f"{MODELS_PREFIX}*/audit/*",
        f"{env.batch.input_prefix}*",
        f"{env.batch.output_prefix}*",
    }
    assert "s3:PutObject" not in scoring[f"{MODELS_PREFIX}*"]
    # a rollout's guard rail: alias records and audit records only, never a version's bytes
    assert scoring[f"{MODELS_PREFIX}*/aliases/*"] == {"s3:PutObject"}
    assert scoring[f"{MODELS_PREFIX}*/audit/*"] == {"s3:PutObject"}
    assert "s3:PutObject" not in scoring[f"{env.batch.input_prefix}*"]
    assert "s3:PutObject" in scoring[f"{env.batch.output_prefix}*"]


def test_job_logs_have_retention(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config

    platform.template(dev_env, "Batch").has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "LogGroupName": f"/aws/batch/{env.name}",
            "RetentionInDays": env.retention_days,
        },
    )


def _drift_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The batch stack's drift alarms, by metric name."""
    return {
        r["Properties"]["MetricName"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_nightly_drift_alarms_watch_the_nightly_models_psi_at_the_configured_threshold(
    platform: Any, variant: Any, dev_env: str
) -> None:
    # The names the job publishes (tests/runtime/batch/test_metrics.py reads them back).
    from dscloud.batch.metrics import ALARMED_METRICS

    for synthesized, name in ((platform, dev_env), (variant, "dsc-ops-live")):
        env = synthesized.environments[name].config
        template = synthesized.template_json(name, "Batch")
        alarms = _drift_alarms(template)
        assert sorted(alarms) == sorted(ALARMED_METRICS)
        for alarm in alarms.values():
            assert alarm["Namespace"] == "dscloud"
            assert alarm["Dimensions"] == [
                {"Name": "model", "Value": env.nightly_model.name},
                {"Name": "service", "Value": f"{env.name}-score"},
            ]
            assert alarm["Threshold"] == env.batch.drift_psi_alarm
            assert alarm["Statistic"] == "Maximum"
            assert alarm["Period"] == 3600
            assert alarm["EvaluationPeriods"] == 1
            assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
            assert alarm["TreatMissingData"] == "notBreaching"
    # the variant's own threshold and nightly model, not the defaults
    variant_alarm = next(
        iter(_drift_alarms(variant.template_json("dsc-ops-live", "Batch")).values())
    )
    assert variant_alarm["Threshold"] == 0.4
    assert {"Name": "model", "Value": "upsell"} in variant_alarm["Dimensions"]


def test_nightly_drift_alarms_notify_the_environments_alarms_topic(
    platform: Any, dev_env: str
) -> None:
    # given the online stack's topic, exported for the batch stack
    online = platform.template_json(dev_env, "Online")
    (topic_id,) = [k for k, r in online["Resources"].items() if r["Type"] == "AWS::SNS::Topic"]
    batch = platform.template_json(dev_env, "Batch")

    # then each drift alarm's only action is a reference to that topic, not a topic of its own
    assert not [r for r in batch["Resources"].values() if r["Type"] == "AWS::SNS::Topic"]
    for alarm in _drift_alarms(batch).values():
        (action,) = alarm["AlarmActions"]
        assert topic_id in json.dumps(action)


def test_scoring_role_may_put_metric_data_in_its_namespace_only(
    platform: Any, dev_env: str
) -> None:
    env = platform.environments[dev_env].config
    template = platform.template_json(dev_env, "Batch")
    roles = {name: job_role(template, name) for name in (f"{env.name}-score", f"{env.name}-train")}
    statements = [
        (role["Ref"], statement)
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
        for role in resource["Properties"].get("Roles", [])
        if "cloudwatch" in json.dumps(statement["Action"])
    ]

    assert statements == [
        (
            roles[f"{env.name}-score"],
            {
                "Action": "cloudwatch:PutMetricData",
                "Condition": {"StringEquals": {"cloudwatch:namespace": "dscloud"}},
                "Effect": "Allow",
                "Resource": "*",
            },
        )
    ]


def test_scoring_job_is_told_where_to_publish_its_drift(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config
    platform.template(dev_env, "Batch").has_resource_properties(
        "AWS::Batch::JobDefinition",
        {
            "JobDefinitionName": f"{env.name}-score",
            "ContainerProperties": Match.object_like(
                {
                    "Environment": Match.array_with(
                        [
                            {"Name": "DSC_METRICS_NAMESPACE", "Value": "dscloud"},
                            {"Name": "DSC_METRICS_SERVICE", "Value": f"{env.name}-score"},
                        ]
                    )
                }
            ),
        },
    )
