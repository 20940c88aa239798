"""stacks/serving.py: Fargate service behind an ALB, readiness checks, autoscaling, and the
signed endpoint (HTTP API with IAM auth and a VPC link) that is the only way in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from dscloud.client import region_of
from stacks.assets import AssetSources
from stacks.config import CONTEXT_KEY, load_config
from stacks.platform import build_platform
from stacks.serving import CONTAINER_PORT, INVOKE_ROUTES, READINESS_PATH
from tests.stacks.conftest import VARIANT_DOMAIN, base_context

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


def test_task_role_reads_models_only(platform: Any, dev_env: str) -> None:
    template = platform.template_json(dev_env, "Serving")
    task_definition = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition"
    )
    task_role = task_definition["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    actions = {a for role, acts, _ in platform.grants(template) if role == task_role for a in acts}

    assert actions == {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "kms:Decrypt"}


def test_deployments_roll_back_on_failure(template_of: TemplateOf) -> None:
    template_of("Serving").has_resource_properties(
        "AWS::ECS::Service",
        {
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}
            )
        },
    )


# -- the signed endpoint --------------------------------------------------------------------


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        lid: r.get("Properties", {})
        for lid, r in template["Resources"].items()
        if r["Type"] == kind
    }


def test_every_route_of_the_api_requires_iam(platform: Any) -> None:
    for env in platform.environments:
        routes = _resources(platform.template_json(env, "Serving"), "AWS::ApiGatewayV2::Route")

        assert routes, f"{env}: no route"
        assert {r["RouteKey"] for r in routes.values()} == {
            f"{method} {path}" for method, path in INVOKE_ROUTES
        }
        assert {r.get("AuthorizationType") for r in routes.values()} == {"AWS_IAM"}, env


def test_the_api_reaches_the_load_balancer_listener_through_a_vpc_link(
    platform: Any, dev_env: str
) -> None:
    template = platform.template_json(dev_env, "Serving")
    (link_id,) = _resources(template, "AWS::ApiGatewayV2::VpcLink")
    (listener_id,) = _resources(template, "AWS::ElasticLoadBalancingV2::Listener")

    Template.from_json(template).has_resource_properties(
        "AWS::ApiGatewayV2::Integration",
        {
            "IntegrationType": "HTTP_PROXY",
            "ConnectionType": "VPC_LINK",
            "ConnectionId": {"Ref": link_id},
            "IntegrationUri": {"Ref": listener_id},
        },
    )


def test_the_load_balancer_admits_only_the_vpc_link(platform: Any, dev_env: str) -> None:
    template = platform.template_json(dev_env, "Serving")
    link = _resources(template, "AWS::ApiGatewayV2::VpcLink")
    (link_props,) = link.values()
    (link_group,) = link_props["SecurityGroupIds"]
    ingress = _resources(template, "AWS::EC2::SecurityGroupIngress").values()
    to_balancer = [rule for rule in ingress if rule.get("SourceSecurityGroupId") == link_group]
    network = platform.template_json(dev_env, "Network")

    assert [(rule["FromPort"], rule["ToPort"]) for rule in to_balancer] == [(80, 80)]
    assert not any("CidrIp" in rule for rule in ingress)
    assert not any(
        props.get("SecurityGroupIngress")
        for props in _resources(network, "AWS::EC2::SecurityGroup").values()
    )
    # The link's own group may only talk to the load balancer, on the listener port.
    link_group_id = link_group["Fn::GetAtt"][0]
    egress = _resources(template, "AWS::EC2::SecurityGroup")[link_group_id]["SecurityGroupEgress"]
    assert [(rule["FromPort"], "DestinationSecurityGroupId" in rule) for rule in egress] == [
        (80, True)
    ]


def test_the_endpoint_url_and_the_invoke_policy_are_stack_outputs(
    platform: Any, dev_env: str
) -> None:
    template = platform.template_json(dev_env, "Serving")
    (stage_id,) = _resources(template, "AWS::ApiGatewayV2::Stage")
    (api_id,) = _resources(template, "AWS::ApiGatewayV2::Api")
    (policy_id,) = _resources(template, "AWS::IAM::ManagedPolicy")
    outputs = {
        name.rstrip("0123456789ABCDEF"): o["Value"] for name, o in template["Outputs"].items()
    }

    url = json.dumps(next(v for k, v in outputs.items() if k.startswith("EndpointUrl")))
    assert api_id in url and "execute-api" in url
    assert {"Ref": policy_id} in outputs.values()
    assert template["Resources"][stage_id]["Properties"]["StageName"] == "$default"


def test_the_invoke_policy_allows_only_invoke_on_the_scoring_and_read_routes(
    platform: Any, dev_env: str
) -> None:
    template = platform.template_json(dev_env, "Serving")
    (policy,) = _resources(template, "AWS::IAM::ManagedPolicy").values()
    (api_id,) = _resources(template, "AWS::ApiGatewayV2::Api")
    (statement,) = policy["PolicyDocument"]["Statement"]
    resources = [json.dumps(r) for r in statement["Resource"]]

    assert (statement["Effect"], statement["Action"]) == ("Allow", "execute-api:Invoke")
    assert all(api_id in resource for resource in resources)
    routes = {r.rsplit('"/$default/', 1)[1].split('"')[0] for r in resources}
    assert routes == {"POST/invocations", "POST/v2/models/*", "GET/*"}


def test_the_stage_writes_an_access_log_naming_the_caller(template_of: TemplateOf) -> None:
    template_of("Serving").has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "AutoDeploy": True,
            "AccessLogSettings": {
                "DestinationArn": Match.any_value(),
                "Format": Match.string_like_regexp(r"\$context\.identity\.userArn"),
            },
        },
    )


def test_grant_invoke_attaches_the_policy_to_a_callers_role(
    stage_settings: Any, asset_sources: AssetSources, tmp_path: Path
) -> None:
    # given a caller's role in another stack of the environment
    raw = stage_settings()
    app = cdk.App(outdir=str(tmp_path), context={**base_context(), CONTEXT_KEY: raw})
    (env,) = build_platform(app, load_config(raw), asset_sources)
    stack = cdk.Stack(env, "Caller")
    caller = iam.Role(stack, "Caller", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))

    # when it is granted the endpoint
    env.serving.endpoint.grant_invoke(caller)

    # then the role carries the endpoint's invoke policy, and nothing broader
    roles = Template.from_stack(stack).find_resources("AWS::IAM::Role")
    (role,) = roles.values()
    (policy_arn,) = role["Properties"]["ManagedPolicyArns"]
    assert "EndpointInvokePolicy" in json.dumps(policy_arn)  # the Serving stack's policy
    assert "Policies" not in role["Properties"]


def test_with_a_certificate_the_api_has_the_custom_domain_and_calls_the_alb_over_tls(
    variant: Any,
) -> None:
    template = variant.template("dsc-ops-live", "Serving")

    template.has_resource_properties(
        "AWS::ApiGatewayV2::DomainName",
        {
            "DomainName": VARIANT_DOMAIN,
            "DomainNameConfigurations": [
                Match.object_like(
                    {
                        "CertificateArn": Match.string_like_regexp("^arn:aws:acm:"),
                        "SecurityPolicy": "TLS_1_2",
                    }
                )
            ],
        },
    )
    template.resource_count_is("AWS::ApiGatewayV2::ApiMapping", 1)
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Integration",
        {"TlsConfig": {"ServerNameToVerify": VARIANT_DOMAIN}, "ConnectionType": "VPC_LINK"},
    )
    template.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress", {"FromPort": 443, "ToPort": 443}
    )
    template.has_output("*", {"Value": f"https://{VARIANT_DOMAIN}/"})


def test_the_endpoint_url_output_is_one_the_client_signs_for_the_right_region(
    platform: Any, dev_env: str
) -> None:
    # stacks -> runtime: the URL a caller copies from the output needs no --region
    env = platform.environments[dev_env].config
    template = platform.template_json(dev_env, "Serving")
    (api_id,) = _resources(template, "AWS::ApiGatewayV2::Api")
    (url,) = [
        o["Value"] for name, o in template["Outputs"].items() if name.startswith("EndpointUrl")
    ]
    delimiter, parts = url["Fn::Join"]
    deployed_values = {
        json.dumps({"Ref": api_id}): "a1b2c3d4e5",
        '{"Ref": "AWS::URLSuffix"}': "amazonaws.com",
    }
    deployed = delimiter.join(
        part if isinstance(part, str) else deployed_values[json.dumps(part)] for part in parts
    )

    assert deployed.startswith("https://a1b2c3d4e5.execute-api.")
    assert region_of(deployed) == env.region
