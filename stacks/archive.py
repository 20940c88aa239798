"""The model archive: a KMS key, a versioned S3 bucket, and its access-log bucket.

The bucket holds `models/{name}/...` (see DESIGN.md) and, under separate prefixes, the
batch scoring input and output. Both buckets are retained when the stack is deleted, and
have fixed names (`dsc-{team}-{stage}-archive-{account}-{region}`) so that the other
stacks can address them and scope grants to a prefix without cross-stack references.

Immutability is enforced by the bucket, not by client convention: the bucket policy denies
every principal (the training role included) a `PutObject` under `models/*/versions/*` or
`models/*/audit/*` that does not carry `If-None-Match` (condition key `s3:if-none-match`),
so a version or an audit record can be created once and never overwritten; an alias
(`models/*/aliases/*`) is written either new (`If-None-Match`) or as a compare-and-swap
(`If-Match`, key `s3:if-match`), which is exactly what the runtime's store sends. Deleting a
version or an audit record is denied too. Bucket versioning keeps the bytes of anything
replaced by other means (a policy change is itself recorded in CloudTrail).

Object Lock is not offered. The policy above already makes the keys readers use
create-only; Object Lock would add retention on every object version, which (in compliance
mode) nobody, not even the account root, can shorten: a model published by mistake, e.g.
trained on data that must be erased, could not be removed before the retention ends, and
the archive's lifecycle rule for noncurrent versions would be held off by it. Governance
mode can be bypassed by anyone granted `s3:BypassGovernanceRetention`, so it adds little
over the deny statements. A team under a WORM regulation would enable it as a deliberate,
separate decision.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.compliance import acknowledge, grant_under_prefix
from stacks.config import EnvironmentConfig
from stacks.retention import retained_key

__all__ = ["MODELS_PREFIX", "Archive", "ArchiveStack"]

MODELS_PREFIX = "models/"
_READ = ["s3:GetObject", "s3:GetObjectVersion"]
_WRITE = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"]
# The S3 condition keys for conditional writes, and the one that tells a whole-object write
# (PutObject, CompleteMultipartUpload: true) from multipart steps that cannot carry the
# headers (CreateMultipartUpload, UploadPart, UploadPartCopy: false).
_IF_NONE_MATCH = "s3:if-none-match"
_IF_MATCH = "s3:if-match"
_WHOLE_OBJECT = {"Bool": {"s3:ObjectCreationOperation": "true"}}


class Archive(Construct):
    """KMS key with rotation, versioned archive bucket and its server-access-log bucket."""

    def __init__(self, scope: Construct, id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, id)
        suffix = f"{config.account}-{config.region}"
        self.bucket_name = f"{config.name}-archive-{suffix}"
        self.uri = f"s3://{self.bucket_name}"

        self.key = retained_key(
            self,
            "Key",
            description=f"{config.name}: model archive and batch data",
            alias=f"alias/{config.name}-archive",
        )
        # Server access logs cannot go to an SSE-KMS bucket, hence SSE-S3 here.
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=f"{config.name}-logs-{suffix}",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # Versioned so that a log overwritten or deleted by mistake or on purpose can be
            # recovered; noncurrent copies expire with the logs themselves.
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=cdk.Duration.days(config.retention_days),
                    noncurrent_version_expiration=cdk.Duration.days(config.retention_days),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # Not logged itself: cdk-nag S1 below, checkov CKV_AWS_18 in docs/security.md.
        acknowledge(
            self.log_bucket,
            "AwsSolutions-S1",
            "This is the environment's access-log destination (archive bucket, load balancer, "
            "VPC flow logs); logging it into itself would loop.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=self.bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="s3/archive/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(config.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self._make_versions_create_only()

    def _make_versions_create_only(self) -> None:
        """Deny writes that could replace a published version, an audit record or an alias
        without a compare-and-swap (see the module docstring)."""
        models = self.bucket.arn_for_objects
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="VersionsAndAuditAreCreateOnly",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[models("models/*/audit/*"), models("models/*/versions/*")],
                conditions={"Null": {_IF_NONE_MATCH: "true"}, **_WHOLE_OBJECT},
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AliasesMoveByCompareAndSwap",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:PutObject"],
                resources=[models("models/*/aliases/*")],
                # Denied only when both headers are absent: a new alias carries If-None-Match,
                # a move carries If-Match with the ETag it read.
                conditions={"Null": {_IF_NONE_MATCH: "true", _IF_MATCH: "true"}, **_WHOLE_OBJECT},
            )
        )
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="VersionsAndAuditAreNeverDeleted",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=[models("models/*/audit/*"), models("models/*/versions/*")],
            )
        )

    def grant_read_models(self, role: iam.IRole) -> None:
        """Let `role` read the archive's models (serving, Lambda, batch scoring)."""
        self.grant_read_prefix(role, MODELS_PREFIX, purpose="Reads model artifacts")

    def grant_write_models(self, role: iam.IRole) -> None:
        """Let `role` publish models and move aliases (training jobs)."""
        self.grant_write_prefix(role, MODELS_PREFIX, purpose="Publishes model artifacts")

    def grant_read_prefix(self, role: iam.IRole, prefix: str, *, purpose: str) -> None:
        """Let `role` read objects under `prefix`, decrypting with the archive key."""
        grant_under_prefix(
            role, bucket_name=self.bucket_name, prefix=prefix, actions=_READ, purpose=purpose
        )
        self.key.grant(role, "kms:Decrypt")

    def grant_write_prefix(self, role: iam.IRole, prefix: str, *, purpose: str) -> None:
        """Let `role` read and write objects under `prefix` (no delete: versions are kept)."""
        grant_under_prefix(
            role, bucket_name=self.bucket_name, prefix=prefix, actions=_WRITE, purpose=purpose
        )
        self.key.grant(role, "kms:Decrypt", "kms:GenerateDataKey")

    def grant_replace_prefix(self, role: iam.IRole, prefix: str, *, purpose: str) -> None:
        """Like grant_write_prefix, plus delete: for outputs published by write-then-rename."""
        actions = [*_WRITE, "s3:DeleteObject", "s3:AbortMultipartUpload"]
        grant_under_prefix(
            role, bucket_name=self.bucket_name, prefix=prefix, actions=actions, purpose=purpose
        )
        self.key.grant(role, "kms:Decrypt", "kms:GenerateDataKey")


class ArchiveStack(cdk.Stack):
    """The environment's stateful storage: the archive and the access-log bucket."""

    def __init__(self, scope: Construct, id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, id, description=f"{config.name}: model archive (dscloud)")
        self.archive = Archive(self, "Archive", config=config)
        cdk.CfnOutput(self, "ArchiveBucketName", value=self.archive.bucket.bucket_name)
        cdk.CfnOutput(self, "ArchiveUri", value=self.archive.uri)
        cdk.CfnOutput(self, "ArchiveKeyArn", value=self.archive.key.key_arn)
