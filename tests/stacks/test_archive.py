"""stacks/archive.py: KMS key, versioned TLS-only archive bucket, access logs, scoped grants."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from aws_cdk.assertions import Match, Template
from moto import mock_aws

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


def test_runtimes_read_models_and_write_only_alias_and_audit_records(
    platform: Any, dev_env: str
) -> None:
    for stack in ("Serving", "Online"):
        grants = _s3_object_grants(platform, dev_env, stack)

        assert grants, stack
        for actions in grants.values():
            assert actions == {
                f"s3:GetObject {MODELS_PREFIX}*",
                f"s3:GetObjectVersion {MODELS_PREFIX}*",
                # to abort a rollout (docs/security.md); nothing under versions/
                f"s3:PutObject {MODELS_PREFIX}*/aliases/*",
                f"s3:PutObject {MODELS_PREFIX}*/audit/*",
            }


def _runtime_role(template: dict[str, Any], stack: str) -> str:
    """The scorer Lambda's role (Online) or the serving task role (Serving)."""
    for resource in template["Resources"].values():
        if stack == "Online" and resource["Type"] == "AWS::Lambda::Function":
            return str(resource["Properties"]["Role"]["Fn::GetAtt"][0])
        if stack == "Serving" and resource["Type"] == "AWS::ECS::TaskDefinition":
            return str(resource["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0])
    raise AssertionError(f"no runtime role in {stack}")


@pytest.mark.parametrize("stack", ["Online", "Serving"])
def test_a_runtime_may_abort_a_rollout_and_nothing_more(
    platform: Any, dev_env: str, stack: str
) -> None:
    template = platform.template_json(dev_env, stack)
    role = _runtime_role(template, stack)
    bucket = f"arn:aws:s3:::{platform.environments[dev_env].config.name}-archive-"
    writes = [
        (actions, resources)
        for r, actions, resources in platform.grants(template)
        if r == role and any(a.startswith("s3:Put") or a == "s3:*" for a in actions)
    ]

    # exactly one statement: PutObject on alias records and audit records of the archive
    assert len(writes) == 1
    actions, resources = writes[0]
    assert actions == ["s3:PutObject"]
    assert len(resources) == 2 and all(r.startswith(bucket) for r in resources)
    assert sorted(r.split("/", 1)[1] for r in resources) == [
        f"{MODELS_PREFIX}*/aliases/*",
        f"{MODELS_PREFIX}*/audit/*",
    ]
    statement = next(
        st
        for res in template["Resources"].values()
        if res["Type"] == "AWS::IAM::Policy"
        for st in res["Properties"]["PolicyDocument"]["Statement"]
        if st["Action"] == "s3:PutObject"
    )
    assert "Condition" not in statement  # the bucket policy holds the If-Match rule
    # and the data key to encrypt what it writes (SSE-KMS), besides reading
    kms = {
        a
        for r, acts, resources in platform.grants(template)
        if r == role and "Archive" in json.dumps(resources)  # the archive stack's key
        for a in acts
    }
    assert kms == {"kms:Decrypt", "kms:GenerateDataKey"}


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


# -- the seam: the bucket policy against the writes the runtime's archive really sends ------


def _denied(statements: list[dict[str, Any]], key: str, params: dict[str, Any]) -> list[str]:
    """Sids of the PutObject Deny statements that a whole-object PutObject of ``key`` with
    ``params`` would meet. Evaluates exactly the operators these statements use (``Null`` and
    ``Bool`` on ``s3:ObjectCreationOperation``); anything else fails the test."""
    headers = {"s3:if-none-match": "IfNoneMatch", "s3:if-match": "IfMatch"}
    sids = []
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if st["Effect"] != "Deny" or "s3:PutObject" not in actions or "Condition" not in st:
            continue
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        patterns = [r["Fn::Join"][1][-1].lstrip("/") for r in resources]
        if not any(fnmatch.fnmatchcase(key, p) for p in patterns):
            continue
        conditions = dict(st["Condition"])
        assert set(conditions) <= {"Null", "Bool"}, conditions
        assert conditions.get("Bool", {}) == {"s3:ObjectCreationOperation": "true"}
        absent = {k: (headers[k] not in params) for k in conditions.get("Null", {})}
        if all(absent[k] == (v == "true") for k, v in conditions["Null"].items()):
            sids.append(st["Sid"])
    return sids


@pytest.fixture
def recorded_puts() -> Iterator[tuple[Any, list[tuple[str, dict[str, Any]]]]]:
    """A moto S3 client whose PutObject calls are recorded as (key, parameters)."""
    puts: list[tuple[str, dict[str, Any]]] = []
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="archive")

        def record(params: dict[str, Any], **_: Any) -> None:
            puts.append((params["Key"], {k: v for k, v in params.items() if k != "Body"}))

        client.meta.events.register("provide-client-params.s3.PutObject", record)
        yield client, puts


def test_the_runtime_archive_writes_only_what_the_policy_allows(
    template_of: TemplateOf, recorded_puts: Any, churn_artifact: Any
) -> None:
    import dscloud
    from dscloud.archive import Archive

    client, puts = recorded_puts
    policies = [
        resource["Properties"]["PolicyDocument"]["Statement"]
        for resource in template_of("Archive").to_json()["Resources"].values()
        if resource["Type"] == "AWS::S3::BucketPolicy"
    ]
    (policy,) = [
        p for p in policies if "VersionsAndAuditAreCreateOnly" in {st.get("Sid") for st in p}
    ]
    # when the runtime publishes twice and moves an alias (create, then compare-and-swap)
    archive = Archive.open("s3://archive", s3_client=client)
    dscloud.publish(churn_artifact, archive)
    dscloud.publish(churn_artifact, archive)
    archive.promote("churn", 1, "production", by="tests")
    archive.promote("churn", 2, "production", by="tests")

    # then every write it made passes the deny statements
    kinds = {key.split("/")[2] for key, _ in puts}
    assert kinds == {"versions", "audit", "aliases"}
    assert {key: _denied(policy, key, params) for key, params in puts} == {
        key: [] for key, _ in puts
    }
    # and the same writes without their condition headers would be denied
    for key, params in puts:
        bare = {k: v for k, v in params.items() if k not in {"IfNoneMatch", "IfMatch"}}
        assert _denied(policy, key, bare), key
