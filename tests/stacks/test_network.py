"""stacks/network.py: a VPC without NAT gateways, with flow logs; or an existing VPC."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_cdk.assertions import Match, Template

TemplateOf = Callable[[str], Template]


def test_new_vpc_has_no_nat_gateway_and_only_public_subnets(template_of: TemplateOf) -> None:
    template = template_of("Network")

    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::Subnet", 2)
    template.all_resources_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": True})


def test_vpc_flow_logs_go_to_the_access_log_bucket(template_of: TemplateOf) -> None:
    template_of("Network").has_resource_properties(
        "AWS::EC2::FlowLog",
        {"LogDestinationType": "s3", "TrafficType": "ALL", "ResourceType": "VPC"},
    )


def test_s3_traffic_uses_a_gateway_endpoint(template_of: TemplateOf) -> None:
    endpoints = template_of("Network").find_resources(
        "AWS::EC2::VPCEndpoint", {"Properties": {"VpcEndpointType": "Gateway"}}
    )

    assert len(endpoints) == 1
    assert ".s3" in json.dumps(next(iter(endpoints.values()))["Properties"]["ServiceName"])


def test_an_existing_vpc_is_looked_up_not_created(variant: Any) -> None:
    network = variant.template("dsc-ops-live", "Network")

    network.resource_count_is("AWS::EC2::VPC", 0)
    network.resource_count_is("AWS::EC2::Subnet", 0)


def test_tasks_in_an_existing_vpc_use_its_private_subnets(variant: Any) -> None:
    serving = variant.template("dsc-ops-live", "Serving")

    serving.has_resource_properties(
        "AWS::ECS::Service",
        {
            "NetworkConfiguration": {
                "AwsvpcConfiguration": Match.object_like(
                    {
                        "AssignPublicIp": "DISABLED",
                        "Subnets": ["subnet-0bbb0000000000001", "subnet-0bbb0000000000002"],
                    }
                )
            }
        },
    )


def test_security_groups_admit_no_cidr_and_tasks_admit_the_load_balancer_only(
    platform: Any, dev_env: str
) -> None:
    template = platform.template_json(dev_env, "Network")
    groups = {
        lid: r["Properties"]
        for lid, r in template["Resources"].items()
        if r["Type"] == "AWS::EC2::SecurityGroup"
    }
    load_balancer = next(
        lid for lid, props in groups.items() if props["GroupDescription"].endswith("load balancer")
    )

    assert len(groups) == 3
    # By default nobody reaches the load balancer by address: only the signed endpoint's
    # VPC link, admitted by the serving stack (tests/stacks/test_endpoint.py).
    assert [lid for lid, props in groups.items() if props.get("SecurityGroupIngress")] == []
    task_ingress = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
    ]
    assert [rule["FromPort"] for rule in task_ingress] == [8080]
    assert task_ingress[0]["SourceSecurityGroupId"] == {"Fn::GetAtt": [load_balancer, "GroupId"]}


def test_configured_cidrs_and_https_ports_are_admitted(variant: Any) -> None:
    variant.template("dsc-ops-live", "Network").has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "SecurityGroupIngress": [
                Match.object_like({"CidrIp": "0.0.0.0/0", "FromPort": 443}),
                Match.object_like({"CidrIp": "0.0.0.0/0", "FromPort": 80}),
            ]
        },
    )
