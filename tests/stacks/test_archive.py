"""stacks/archive.py: KMS key, versioned TLS-only archive bucket, access logs, scoped grants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_cdk.assertions import Match, Template

from stacks.archive import MODELS_PREFIX

TemplateOf = Callable[[str], Template]


def test_key_rotates_and_is_retained(template_of: TemplateOf) -> None:
    template = template_of("Archive")

    template.has_resource(
        "AWS::KMS::Key",
        {
            "Properties": {"EnableKeyRotation": True},
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_archive_bucket_is_versioned_kms_encrypted_private_and_retained(
    template_of: TemplateOf, dev_env: str
) -> None:
    template = template_of("Archive")

    template.has_resource(
        "AWS::S3::Bucket",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BucketName": Match.string_like_regexp(rf"^{dev_env}-archive-\d{{12}}-"),
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            Match.object_like(
                                {
                                    "ServerSideEncryptionByDefault": {
                                        "SSEAlgorithm": "aws:kms",
                                        "KMSMasterKeyID": Match.any_value(),
                                    }
                                }
                            )
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "LoggingConfiguration": {
                        "DestinationBucketName": Match.any_value(),
                        "LogFilePrefix": "s3/archive/",
                    },
                    "LifecycleConfiguration": {
                        "Rules": Match.array_with(
                            [
                                Match.object_like(
                                    {
                                        "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                                        "Status": "Enabled",
                                    }
                                )
                            ]
                        )
                    },
                }
            ),
        },
    )


def test_both_buckets_deny_requests_without_tls(template_of: TemplateOf) -> None:
    template = template_of("Archive")

    policies = template.find_resources(
        "AWS::S3::BucketPolicy",
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
    assert len(policies) == 2


def test_access_log_bucket_receives_server_access_logs(template_of: TemplateOf) -> None:
    template_of("Archive").has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                            }
                        )
                    ]
                )
            }
        },
    )


def _s3_object_grants(platform: Any, env: str, stack: str) -> dict[str, set[str]]:
    """role -> the archive object ARNs (prefix/*) it may act on, with the actions."""
    grants: dict[str, set[str]] = {}
    for role, actions, resources in platform.grants(platform.template_json(env, stack)):
        for resource in resources:
            if (
                isinstance(resource, str)
                and resource.startswith("arn:aws:s3:::")
                and "/" in resource
            ):
                prefix = resource.split("/", 1)[1]
                grants.setdefault(role, set()).update(f"{action} {prefix}" for action in actions)
    return grants


def test_readers_are_limited_to_the_models_prefix(platform: Any, dev_env: str) -> None:
    for stack in ("Serving", "Online"):
        grants = _s3_object_grants(platform, dev_env, stack)

        assert grants, stack
        for actions in grants.values():
            assert actions == {
                f"s3:GetObject {MODELS_PREFIX}*",
                f"s3:GetObjectVersion {MODELS_PREFIX}*",
            }


def test_only_training_writes_models(platform: Any, dev_env: str) -> None:
    template = platform.template_json(dev_env, "Batch")
    training = next(
        r["Properties"]["ContainerProperties"]["JobRoleArn"]["Fn::GetAtt"][0]
        for r in template["Resources"].values()
        if r["Properties"].get("JobDefinitionName") == f"{dev_env}-train"
    )

    writers = {
        role
        for role, actions in _s3_object_grants(platform, dev_env, "Batch").items()
        if f"s3:PutObject {MODELS_PREFIX}*" in actions
    }

    assert writers == {training}


def test_listing_is_limited_to_the_granted_prefixes(platform: Any, dev_env: str) -> None:
    for stack in ("Serving", "Online", "Batch"):
        template = platform.template_json(dev_env, stack)
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Action"] == "s3:ListBucket":
                    assert statement["Condition"]["StringLike"]["s3:prefix"], statement


def _deny(sid: str, actions: Any, resources: list[str], condition: Any = None) -> Any:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": actions,
        "Resource": [
            {"Fn::Join": ["", [Match.any_value(), f"/{resource}"]]} for resource in resources
        ],
    }
    if len(resources) == 1:  # CloudFormation renders a single resource without the list
        statement["Resource"] = statement["Resource"][0]
    if condition is not None:
        statement["Condition"] = condition
    return Match.object_like(statement)


def test_versions_and_audit_records_are_create_only_for_everyone(template_of: TemplateOf) -> None:
    # A PutObject (or CompleteMultipartUpload) without If-None-Match under versions/ or
    # audit/ is denied, whoever sends it; the training role's grant cannot overrule a Deny.
    template_of("Archive").has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        _deny(
                            "VersionsAndAuditAreCreateOnly",
                            "s3:PutObject",
                            ["models/*/audit/*", "models/*/versions/*"],
                            {
                                "Null": {"s3:if-none-match": "true"},
                                "Bool": {"s3:ObjectCreationOperation": "true"},
                            },
                        ),
                        _deny(
                            "VersionsAndAuditAreNeverDeleted",
                            ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                            ["models/*/audit/*", "models/*/versions/*"],
                        ),
                    ]
                )
            }
        },
    )


def test_aliases_are_written_new_or_by_compare_and_swap(template_of: TemplateOf) -> None:
    template_of("Archive").has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        _deny(
                            "AliasesMoveByCompareAndSwap",
                            "s3:PutObject",
                            ["models/*/aliases/*"],
                            {
                                "Null": {"s3:if-none-match": "true", "s3:if-match": "true"},
                                "Bool": {"s3:ObjectCreationOperation": "true"},
                            },
                        )
                    ]
                )
            }
        },
    )


def test_access_log_bucket_is_versioned_and_its_old_copies_expire(
    template_of: TemplateOf, dev_env: str
) -> None:
    template_of("Archive").has_resource_properties(
        "AWS::S3::Bucket",
        Match.object_like(
            {
                "BucketName": Match.string_like_regexp(rf"^{dev_env}-logs-"),
                "VersioningConfiguration": {"Status": "Enabled"},
                "LifecycleConfiguration": {
                    "Rules": [
                        Match.object_like(
                            {
                                "ExpirationInDays": Match.any_value(),
                                "NoncurrentVersionExpiration": {
                                    "NoncurrentDays": Match.any_value()
                                },
                            }
                        )
                    ]
                },
            }
        ),
    )
