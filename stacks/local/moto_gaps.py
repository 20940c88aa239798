"""moto's gaps as a deploy target, each worked around by one named function.

Every function takes a CloudFormation template (a dict) and changes it in place, returning
how many resources it changed. They are applied only to the local copy of a synthesized
cloud assembly (`patch_assembly`), never to what `cdk synth` writes for AWS. Each states the
moto behaviour it works around; tests/stacks/local/test_moto_gaps.py deploys the unpatched
resource to a moto server and expects it to fail, so the test fails (and the workaround can
go) the day moto no longer needs it. Measured with moto 5.2.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "WORKAROUNDS",
    "batch_arns_by_ref",
    "batch_compute_environment_type_upper_case",
    "batch_service_role_given",
    "flow_log_destination_without_prefix",
    "kms_key_policy_as_text",
    "kms_key_without_tags",
    "patch_assembly",
]

Template = dict[str, Any]
_BATCH_SERVICE_ROLE = "LocalBatchServiceRole"


def _resources(template: Template, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") == kind:
            yield logical_id, resource.setdefault("Properties", {})


def kms_key_without_tags(template: Template) -> int:
    """moto's CloudFormation fails to create an AWS::KMS::Key that has Tags (it passes them to
    CreateKey in a shape its own KMS refuses). The tags are dropped locally."""
    changed = 0
    for _, properties in _resources(template, "AWS::KMS::Key"):
        if properties.pop("Tags", None) is not None:
            changed += 1
    return changed


def kms_key_policy_as_text(template: Template) -> int:
    """moto's CloudFormation stores an AWS::KMS::Key's KeyPolicy object as it is, and then every
    DescribeKey of that key fails (a 500: its KMS expects the policy as JSON text). The policy
    is given as JSON text locally, which CloudFormation accepts too."""
    changed = 0
    for _, properties in _resources(template, "AWS::KMS::Key"):
        policy = properties.get("KeyPolicy")
        if isinstance(policy, dict) and not _has_intrinsic(policy):
            properties["KeyPolicy"] = json.dumps(policy)
            changed += 1
    return changed


def _has_intrinsic(node: Any) -> bool:
    if isinstance(node, dict):
        return any(k == "Ref" or k.startswith("Fn::") or _has_intrinsic(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_intrinsic(item) for item in node)
    return False


def flow_log_destination_without_prefix(template: Template) -> int:
    """moto checks an S3 flow-log destination by looking up a bucket named after the whole ARN
    tail, so `arn:aws:s3:::bucket/vpc-flow-logs/` is "no such bucket". The prefix is dropped
    locally; the flow log then writes to the bucket's root."""
    changed = 0
    for _, properties in _resources(template, "AWS::EC2::FlowLog"):
        if properties.get("LogDestinationType") != "s3":
            continue
        destination = properties.get("LogDestination")
        join = destination.get("Fn::Join") if isinstance(destination, dict) else None
        if join and isinstance(join[1][-1], str) and "/" in join[1][-1]:
            join[1][-1] = join[1][-1].split("/", 1)[0]
            changed += 1
    return changed


def batch_service_role_given(template: Template) -> int:
    """moto's AWS Batch fails (a 500) on a compute environment without a ServiceRole, where AWS
    uses its service-linked role (as CDK synthesizes it), and refuses a role that does not
    exist. A role for batch.amazonaws.com is added to the template and used locally."""
    environments = [p for _, p in _resources(template, "AWS::Batch::ComputeEnvironment")]
    missing = [p for p in environments if "ServiceRole" not in p]
    if not missing:
        return 0
    template["Resources"][_BATCH_SERVICE_ROLE] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "batch.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        },
    }
    for properties in missing:
        properties["ServiceRole"] = {"Fn::GetAtt": [_BATCH_SERVICE_ROLE, "Arn"]}
    return len(missing)


def batch_compute_environment_type_upper_case(template: Template) -> int:
    """moto's AWS Batch accepts only "MANAGED"/"UNMANAGED" as a compute environment's Type;
    CDK writes "managed", which AWS accepts in any case."""
    changed = 0
    for _, properties in _resources(template, "AWS::Batch::ComputeEnvironment"):
        kind = properties.get("Type")
        if isinstance(kind, str) and kind != kind.upper():
            properties["Type"] = kind.upper()
            changed += 1
    return changed


def batch_arns_by_ref(template: Template) -> int:
    """moto's CloudFormation has no Fn::GetAtt for AWS Batch compute environments and job
    queues (`ComputeEnvironmentArn`, `JobQueueArn`: a 500 or a failed stack); their Ref is
    the same ARN, on AWS as in moto, so each such GetAtt becomes a Ref."""
    batch = {
        logical_id
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") in ("AWS::Batch::ComputeEnvironment", "AWS::Batch::JobQueue")
    }
    changed = 0

    def walk(node: Any) -> Any:
        nonlocal changed
        if isinstance(node, dict):
            target = node.get("Fn::GetAtt")
            if (
                len(node) == 1
                and isinstance(target, list)
                and target[0] in batch
                and target[1] in ("ComputeEnvironmentArn", "JobQueueArn")
            ):
                changed += 1
                return {"Ref": target[0]}
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    for section in ("Resources", "Outputs"):
        if section in template:
            template[section] = walk(template[section])
    return changed


WORKAROUNDS: tuple[Callable[[Template], int], ...] = (
    kms_key_without_tags,
    kms_key_policy_as_text,
    flow_log_destination_without_prefix,
    batch_service_role_given,
    batch_compute_environment_type_upper_case,
    batch_arns_by_ref,
)


def patch_assembly(directory: Path) -> dict[str, dict[str, int]]:
    """Apply every workaround to each template of the cloud assembly in `directory` (nested
    stage assemblies included), rewriting the files; returns {template file: {workaround:
    resources changed}} for the workarounds that changed something."""
    applied: dict[str, dict[str, int]] = {}
    for path in sorted(directory.rglob("*.template.json")):
        template = json.loads(path.read_text())
        counts = {fix.__name__: fix(template) for fix in WORKAROUNDS}
        counts = {name: n for name, n in counts.items() if n}
        if counts:
            path.write_text(json.dumps(template, indent=1))
            applied[path.name] = counts
    return applied
