"""cdk-nag: the AwsSolutions checks on every synth, and acknowledgments attached where they apply.

cdk-nag 3 is a CDK policy-validation plugin: a finding fails synth unless the construct it
concerns (or one of its parents) carries an acknowledgment for exactly that rule, or that
finding of a rule (`AwsSolutions-IAM5[Resource::...]`). Acknowledgments here are always
put on the one construct concerned, each with its reason; nothing is acknowledged for a
whole stack or app.
"""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

__all__ = [
    "acknowledge",
    "acknowledge_wildcard_resource",
    "add_checks",
    "grant_under_prefix",
]


def add_checks(app: cdk.App) -> None:
    """Run the AwsSolutions pack over every stack of `app` at synth (a failure stops synth)."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge finding `rule` (e.g. `AwsSolutions-ECS2`) on `construct` and its children."""
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def acknowledge_wildcard_resource(construct: IConstruct, resource: str, reason: str) -> None:
    """Acknowledge AwsSolutions-IAM5 for the one wildcard resource `resource` (may hold tokens).

    cdk-nag names such a finding after the resource as it appears in the template, with
    references flattened (`<Bucket.Arn>/models/*`); the same flattening is applied here.
    """
    stack = cdk.Stack.of(construct)
    finding = _flatten(stack.resolve(resource))
    acknowledge(construct, f"AwsSolutions-IAM5[Resource::{finding}]", reason)


def grant_under_prefix(
    role: iam.IRole,
    *,
    bucket_name: str,
    prefix: str,
    actions: list[str],
    purpose: str,
) -> None:
    """Allow `actions` on the objects under `prefix` of `bucket_name`, and listing that prefix.

    The object ARN ends in a wildcard by nature (keys under the prefix are not known in
    advance); the IAM5 finding it raises is acknowledged on `role` with `purpose` as reason.
    """
    partition = cdk.Stack.of(role).partition
    objects = f"arn:{partition}:s3:::{bucket_name}/{prefix}*"
    role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=[objects]))
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[f"arn:{partition}:s3:::{bucket_name}"],
            conditions={"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
        )
    )
    acknowledge_wildcard_resource(
        role,
        objects,
        f"{purpose}: limited to the {prefix} prefix of {bucket_name}; "
        "object keys under it are created at run time, so they cannot be listed here.",
    )


def _flatten(node: Any) -> str:
    # Mirrors cdk-nag's flattenCfnReference, which names IAM5 findings.
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))
