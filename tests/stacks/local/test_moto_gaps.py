"""stacks/local/moto_gaps.py: each workaround is still needed, and is enough.

Every test deploys a minimal template twice to a moto server: as CDK writes it (moto must
still fail: the day it does not, the test fails and the workaround can go) and patched
(it must deploy). What the patches change is also checked on the dicts.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from stacks.local import moto_gaps

_names = itertools.count()
Template = dict[str, Any]


def deploys(aws: Any, template: Template) -> bool:
    """Whether moto's CloudFormation creates every resource of `template` (and the stack)."""
    cloudformation = aws("cloudformation")
    name = f"gap-{next(_names)}"
    try:
        cloudformation.create_stack(
            StackName=name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_IAM"]
        )
    except Exception:  # moto answers 4xx/5xx, or a body boto3 cannot parse
        return False
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return bool(stack["StackStatus"] == "CREATE_COMPLETE")


def check_gap(aws: Any, template: Template, fix: Callable[[Template], int]) -> Template:
    """Assert moto fails `template` as written and deploys it once `fix` changed it."""
    patched = copy.deepcopy(template)
    assert fix(patched) > 0
    assert not deploys(aws, template), f"moto deploys it unpatched now: drop {fix.__name__}"
    assert deploys(aws, patched)
    return patched


POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


def key_template(**properties: Any) -> Template:
    return {
        "Resources": {
            "Key": {"Type": "AWS::KMS::Key", "Properties": {"Description": "k", **properties}}
        }
    }


def test_kms_key_tags_still_break_moto(aws: Any) -> None:
    template = key_template(KeyPolicy=json.dumps(POLICY), Tags=[{"Key": "team", "Value": "recs"}])

    patched = check_gap(aws, template, moto_gaps.kms_key_without_tags)

    assert "Tags" not in patched["Resources"]["Key"]["Properties"]


def test_kms_key_policy_object_breaks_describe_key(aws: Any) -> None:
    # moto creates the key; every later DescribeKey of it fails, so the gap shows there.
    kms = aws("kms")
    cloudformation = aws("cloudformation")

    def describe(template: Template) -> bool:
        name = f"gap-{next(_names)}"
        cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))
        key_id = cloudformation.describe_stack_resource(StackName=name, LogicalResourceId="Key")[
            "StackResourceDetail"
        ]["PhysicalResourceId"]
        try:
            kms.describe_key(KeyId=key_id)
        except Exception:
            return False
        return True

    template = key_template(KeyPolicy=POLICY)
    patched = copy.deepcopy(template)
    assert moto_gaps.kms_key_policy_as_text(patched) == 1

    assert not describe(template), "moto describes the key now: drop kms_key_policy_as_text"
    assert describe(patched)
    assert json.loads(patched["Resources"]["Key"]["Properties"]["KeyPolicy"]) == POLICY


def batch_template(**environment: Any) -> Template:
    return {
        "Resources": {
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
            "Subnet": {
                "Type": "AWS::EC2::Subnet",
                "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.9.0.0/24"},
            },
            "Group": {
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {"GroupDescription": "g", "VpcId": {"Ref": "Vpc"}},
            },
            "Compute": {
                "Type": "AWS::Batch::ComputeEnvironment",
                "Properties": {
                    "ComputeResources": {
                        "Type": "FARGATE",
                        "MaxvCpus": 4,
                        "Subnets": [{"Ref": "Subnet"}],
                        "SecurityGroupIds": [{"Fn::GetAtt": ["Group", "GroupId"]}],
                    },
                    "State": "ENABLED",
                    **environment,
                },
            },
        }
    }


def test_batch_compute_environment_without_service_role_breaks_moto(aws: Any) -> None:
    template = batch_template(Type="MANAGED")

    patched = check_gap(aws, template, moto_gaps.batch_service_role_given)

    role = patched["Resources"]["Compute"]["Properties"]["ServiceRole"]
    assert patched["Resources"][role["Fn::GetAtt"][0]]["Type"] == "AWS::IAM::Role"


def test_batch_lower_case_managed_breaks_moto(aws: Any) -> None:
    template = batch_template(Type="managed")
    moto_gaps.batch_service_role_given(template)

    patched = check_gap(aws, template, moto_gaps.batch_compute_environment_type_upper_case)

    assert patched["Resources"]["Compute"]["Properties"]["Type"] == "MANAGED"


def test_batch_arn_attributes_break_moto(aws: Any) -> None:
    template = batch_template(Type="MANAGED")
    moto_gaps.batch_service_role_given(template)
    template["Resources"]["Queue"] = {
        "Type": "AWS::Batch::JobQueue",
        "Properties": {
            "Priority": 1,
            "ComputeEnvironmentOrder": [
                {
                    "Order": 1,
                    "ComputeEnvironment": {"Fn::GetAtt": ["Compute", "ComputeEnvironmentArn"]},
                }
            ],
        },
    }
    template["Outputs"] = {"Queue": {"Value": {"Fn::GetAtt": ["Queue", "JobQueueArn"]}}}

    patched = check_gap(aws, template, moto_gaps.batch_arns_by_ref)

    assert patched["Outputs"]["Queue"]["Value"] == {"Ref": "Queue"}


def test_flow_log_s3_prefix_breaks_moto(aws: Any) -> None:
    template: Template = {
        "Resources": {
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.8.0.0/16"}},
            "Logs": {"Type": "AWS::S3::Bucket", "Properties": {}},
            "Flow": {
                "Type": "AWS::EC2::FlowLog",
                "Properties": {
                    "ResourceId": {"Ref": "Vpc"},
                    "ResourceType": "VPC",
                    "TrafficType": "ALL",
                    "LogDestinationType": "s3",
                    "LogDestination": {
                        "Fn::Join": ["", [{"Fn::GetAtt": ["Logs", "Arn"]}, "/vpc-flow-logs/"]]
                    },
                },
            },
        }
    }

    patched = check_gap(aws, template, moto_gaps.flow_log_destination_without_prefix)

    join = patched["Resources"]["Flow"]["Properties"]["LogDestination"]["Fn::Join"]
    assert join[1][-1] == ""


def test_an_ip_address_in_the_template_url_is_read_as_a_bucket_name(aws: Any, moto: Any) -> None:
    # Why the CDK CLI gets `localhost` (MotoServer.cli_endpoint), not 127.0.0.1.
    s3, cloudformation = aws("s3"), aws("cloudformation")
    s3.create_bucket(
        Bucket="gap-templates", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    body = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    s3.put_object(Bucket="gap-templates", Key="t.json", Body=json.dumps(body).encode())

    def create(endpoint: str) -> bool:
        try:
            cloudformation.create_stack(
                StackName=f"gap-{next(_names)}", TemplateURL=f"{endpoint}/gap-templates/t.json"
            )
        except Exception:
            return False
        return True

    assert not create(moto.endpoint), "moto reads TemplateURL hosts now: use 127.0.0.1 for the CLI"
    assert create(moto.cli_endpoint)


@pytest.mark.parametrize("fix", moto_gaps.WORKAROUNDS, ids=lambda f: f.__name__)
def test_a_workaround_leaves_a_template_without_its_gap_alone(
    fix: Callable[[Template], int],
) -> None:
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic", "Properties": {}}}}
    before = copy.deepcopy(template)

    assert fix(template) == 0
    assert template == before
