"""stacks/serving.py: Fargate service behind an ALB, readiness checks, autoscaling, and the
signed endpoint (HTTP API with IAM auth and a VPC link) that is the only way in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_cdk.assertions import Match, Template

from stacks.serving import CONTAINER_PORT, READINESS_PATH, RESERVED_MIB, memory_budget_bytes

TemplateOf = Callable[[str], Template]


def test_cluster_has_container_insights(template_of: TemplateOf) -> None:
    template_of("Serving").has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]},
    )


def test_task_runs_the_serving_image_with_the_model_references(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config

    platform.template(dev_env, "Serving").has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": str(env.serving.cpu),
            "Memory": str(env.serving.memory_mib),
            "RequiresCompatibilities": ["FARGATE"],
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "PortMappings": [{"ContainerPort": CONTAINER_PORT, "Protocol": "tcp"}],
                        "Environment": Match.array_with(
                            [
                                {
                                    "Name": "DSC_ARCHIVE",
                                    "Value": f"s3://{env.name}-archive-{env.account}-{env.region}",
                                },
                                {
                                    "Name": "DSC_MODELS",
                                    "Value": " ".join(str(m) for m in env.models),
                                },
                            ]
                        ),
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )


def test_traffic_goes_only_to_ready_tasks(template_of: TemplateOf) -> None:
    template_of("Serving").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {"HealthCheckPath": READINESS_PATH, "Matcher": {"HttpCode": "200"}, "TargetType": "ip"},
    )


def test_service_scales_on_cpu_and_requests_per_task(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config
    template = platform.template(dev_env, "Serving")

    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": env.serving.min_tasks, "MaxCapacity": env.serving.max_tasks},
    )
    for metric, target in (
        ("ECSServiceAverageCPUUtilization", env.serving.target_cpu_percent),
        ("ALBRequestCountPerTarget", env.serving.target_requests_per_task),
    ):
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                    {
                        "TargetValue": target,
                        "PredefinedMetricSpecification": Match.object_like(
                            {"PredefinedMetricType": metric}
                        ),
                    }
                )
            },
        )


def test_default_load_balancer_is_internal_http(template_of: TemplateOf) -> None:
    template = template_of("Serving")

    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internal"}
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Protocol": "HTTP", "Port": 80}
    )


def test_load_balancer_logs_access_and_drops_invalid_headers(template_of: TemplateOf) -> None:
    template_of("Serving").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "LoadBalancerAttributes": Match.array_with(
                [
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "access_logs.s3.enabled", "Value": "true"},
                ]
            )
        },
    )


def test_with_a_certificate_the_listener_is_https_and_http_redirects(variant: Any) -> None:
    template = variant.template("dsc-ops-live", "Serving")

    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Protocol": "HTTPS",
            "Port": 443,
            "Certificates": [{"CertificateArn": Match.string_like_regexp("^arn:aws:acm:")}],
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Protocol": "HTTP",
            "Port": 80,
            "DefaultActions": [Match.object_like({"Type": "redirect"})],
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer", {"Scheme": "internet-facing"}
    )


def test_task_role_reads_models_and_may_only_abort_rollouts(platform: Any, dev_env: str) -> None:
    template = platform.template_json(dev_env, "Serving")
    task_definition = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"
    )
    task_role = task_definition["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    actions = {a for role, acts, _ in platform.grants(template) if role == task_role for a in acts}

    # PutObject and GenerateDataKey: alias and audit records only, to abort a rollout
    # (tests/stacks/test_archive.py holds the exact statement).
    assert actions == {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
        "s3:PutObject",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }


def test_deployments_roll_back_on_failure(template_of: TemplateOf) -> None:
    template_of("Serving").has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}
            )
        },
    )


def test_the_task_memory_budget_is_one_the_server_reads_and_accepts(
    platform: Any, dev_env: str
) -> None:
    # stacks -> runtime: the variable the task definition sets is a setting the server
    # reads, and it can take one largest body (else `dsc serve` would refuse to start)
    from dscloud.server.run import check
    from dscloud.settings import Settings

    env = platform.environments[dev_env].config
    template = platform.template_json(dev_env, "Serving")
    (task,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    variables = {
        v["Name"]: v["Value"]
        for v in task["Properties"]["ContainerDefinitions"][0]["Environment"]
        if isinstance(v["Value"], str)
    }
    assert variables["DSC_MEMORY_BUDGET_BYTES"] == str(memory_budget_bytes(env.serving.memory_mib))
    settings = Settings.from_env({**variables, "DSC_ARCHIVE": "s3://bucket"})
    assert settings.memory_budget_bytes == (env.serving.memory_mib - RESERVED_MIB) * 1024 * 1024
    check(settings)  # raises ConfigError when the budget cannot take one largest body
