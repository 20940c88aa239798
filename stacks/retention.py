"""How long things are kept: log groups with the configured retention, keys kept on delete."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import LOG_RETENTION_DAYS

__all__ = ["log_group", "log_retention", "retained_key"]

_BY_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
assert tuple(_BY_DAYS) == LOG_RETENTION_DAYS, "config.LOG_RETENTION_DAYS and this table differ"


def log_retention(days: int) -> logs.RetentionDays:
    """Return the enum member for `days` (validated by config); raises KeyError otherwise."""
    return _BY_DAYS[days]


def log_group(
    scope: Construct, id: str, *, name: str, days: int, key: kms.Key | None = None
) -> logs.LogGroup:
    """A named log group that keeps `days` of logs and goes with its stack.

    Without `key`, CloudWatch Logs encrypts it with keys of its own (checkov CKV_AWS_158,
    justified in docs/security.md). With `key` (a key of the same stack), the log group is
    encrypted with it, and the key's policy lets the CloudWatch Logs service use it for this
    log group only: CloudWatch Logs needs that grant in the key policy, and CDK does not add it.
    """
    if key is not None:
        stack = cdk.Stack.of(scope)
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid=f"CloudWatchLogs{id}",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    # The name is a literal, so the ARN needs no reference to the log group
                    # (which itself refers to the key).
                    "ArnEquals": {
                        "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name=name,
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )
    return logs.LogGroup(
        scope,
        id,
        log_group_name=name,
        retention=log_retention(days),
        encryption_key=key,
        removal_policy=cdk.RemovalPolicy.DESTROY,
    )


def retained_key(scope: Construct, id: str, *, description: str, alias: str) -> kms.Key:
    """A customer-managed KMS key with yearly rotation, kept when its stack is deleted
    (what it encrypted is retained too)."""
    return kms.Key(
        scope,
        id,
        description=description,
        alias=alias,
        enable_key_rotation=True,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
