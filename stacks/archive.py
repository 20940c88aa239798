"""The model archive: a KMS key, a versioned S3 bucket, and its access-log bucket.

The bucket holds `models/{name}/...` (see DESIGN.md) and, under separate prefixes, the
batch scoring input and output. Both buckets are retained when the stack is deleted, and
have fixed names (`dsc-{team}-{stage}-archive-{account}-{region}`) so that the other
stacks can address them and scope grants to a prefix without cross-stack references.
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
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(config.retention_days))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
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
