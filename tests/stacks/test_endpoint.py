"""stacks/endpoint.py: the HTTP API with IAM auth and a VPC link, the only way to the ALB.

moto has no CloudFormation model for AWS::ApiGatewayV2::*, so the synthesized template is
the check.
"""

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
from stacks.endpoint import INVOKE_ROUTES
from stacks.platform import build_platform
from tests.stacks.conftest import VARIANT_DOMAIN, base_context

TemplateOf = Callable[[str], Template]


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
