"""stacks/platform.py and app.py: one isolated, tagged Stage per team x stage, with outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.assets import BATCH_DOCKERFILE, SERVING_DOCKERFILE
from stacks.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
STACKS = ("Archive", "Network", "Online", "Batch", "Serving")  # deployment order
# Properties that give a resource a fixed physical name.
NAME_PROPERTIES = {
    "BucketName",
    "TableName",
    "Name",
    "QueueName",
    "FunctionName",
    "LogGroupName",
    "AliasName",
    "JobQueueName",
    "JobDefinitionName",
    "ClusterName",
    "ServiceName",
    "TopicName",
    "AlarmName",
    "RoleName",
    "ComputeEnvironmentName",
    "LoadBalancerName",
}


def test_one_stage_per_team_and_stage(platform: Any, repo_context: dict[str, Any]) -> None:
    expected = {f"dsc-{env.team}-{env.stage}" for env in load_config(repo_context).environments}

    assert set(platform.environments) == expected
    for name, env in platform.environments.items():
        assert [stack.stack_name for stack in env.stacks] == [f"{name}-{stack}" for stack in STACKS]
        assert {(stack.account, stack.region) for stack in env.stacks} == {
            (env.config.account, env.config.region)
        }


def test_every_taggable_resource_carries_team_and_stage(platform: Any, dev_env: str) -> None:
    env = platform.environments[dev_env].config
    tagged = 0
    for stack, template in platform.all_templates(dev_env).items():
        for logical_id, resource in template["Resources"].items():
            tags = resource.get("Properties", {}).get("Tags")
            if tags is None:
                continue
            as_dict = tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags}
            assert as_dict.get("team") == env.team, (stack, logical_id)
            assert as_dict.get("stage") == env.stage, (stack, logical_id)
            tagged += 1

    assert tagged > 30


def _physical_names(template: dict[str, Any]) -> set[str]:
    names = set()
    for resource in template["Resources"].values():
        for prop, value in resource.get("Properties", {}).items():
            if prop in NAME_PROPERTIES and isinstance(value, str):
                names.add(value)
    return names


def test_no_two_environments_share_a_named_resource(platform: Any) -> None:
    seen: dict[str, str] = {}
    for name in platform.environments:
        for template in platform.all_templates(name).values():
            for physical in _physical_names(template):
                assert physical not in seen, f"{physical} in {name} and {seen.get(physical)}"
                assert name in physical, physical
                seen[physical] = name

    assert len(seen) > 20


def test_roles_keys_and_buckets_are_never_shared_between_teams(platform: Any) -> None:
    # Roles get unique CloudFormation-generated names (none is named); every reference that
    # leaves a stack points at a stack of the same environment; every bucket, table, stream
    # or queue named in a template belongs to that environment.
    for name in platform.environments:
        for template in platform.all_templates(name).values():
            for resource in template["Resources"].values():
                if resource["Type"] == "AWS::IAM::Role":
                    assert "RoleName" not in resource["Properties"]
            text = json.dumps(template)
            for stack_name in re.findall(r'"StackName": "([^"]+)"', text):
                assert stack_name.startswith(f"{name}-"), stack_name
            for named in re.findall(r"dsc-[a-z0-9]+-[a-z0-9]+(?=-)", text):
                assert named == name, named


def test_outputs_name_what_users_need(platform: Any, dev_env: str) -> None:
    outputs = {
        stack: set(template.get("Outputs", {}))
        for stack, template in platform.all_templates(dev_env).items()
    }

    assert {"ArchiveBucketName", "ArchiveUri"} <= outputs["Archive"]
    assert {
        "StreamName",
        "PredictionsTableName",
        "RejectsQueueUrl",
        "StreamFailuresQueueUrl",
    } <= outputs["Online"]
    assert {"ServiceUrl"} <= outputs["Serving"]
    assert {"JobQueueName", "JobQueueArn", "ScoringJobDefinitionArn"} <= outputs["Batch"]


def test_availability_zones_are_pinned_for_every_account_and_region(
    repo_context: dict[str, Any],
) -> None:
    pinned = json.loads((REPO_ROOT / "cdk.context.json").read_text())

    for env in load_config(repo_context).environments:
        assert f"availability-zones:account={env.account}:region={env.region}" in pinned


def _run_app(context: dict[str, Any], outdir: Path) -> subprocess.CompletedProcess[str]:
    # What the CDK CLI does: context in CDK_CONTEXT_JSON, output directory in CDK_OUTDIR.
    environ = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(outdir)}
    return subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )


def test_app_refuses_a_bad_value_naming_the_key(tmp_path: Path) -> None:
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    first_team = next(iter(context["dscloud"]["teams"]))
    context["dscloud"]["teams"][first_team]["stages"]["dev"]["serving"] = {"cpu": 300}

    result = _run_app(context, tmp_path)

    assert result.returncode == 1
    assert f"dscloud.teams.{first_team}.stages.dev.serving.cpu" in result.stderr
    assert "256, 512, 1024" in result.stderr


@pytest.mark.skipif(
    not all((REPO_ROOT / f).is_file() for f in (SERVING_DOCKERFILE, BATCH_DOCKERFILE)),
    reason="docker/*.Dockerfile not written yet",
)
def test_app_synthesizes_every_environment(tmp_path: Path, platform: Any) -> None:
    context = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    context.update(json.loads((REPO_ROOT / "cdk.context.json").read_text()))
    context["aws:cdk:bundling-stacks"] = []
    context["aws:cdk:disable-asset-staging"] = True

    result = _run_app(context, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {a for a in manifest["artifacts"] if a.startswith("assembly-")} == {
        f"assembly-{name}" for name in platform.environments
    }


def test_reference_strength_and_the_default_sg_resource_follow_the_environment(
    synthesize_platform: Any, asset_sources: Any, tmp_path: Any, platform: Any, dev_env: str
) -> None:
    # given one environment with strong references and no default-SG custom resource
    raw = {
        "defaults": {"account": "123456789012", "region": "eu-west-1", "models": ["churn@prod"]},
        "teams": {
            "recs": {
                "stages": {
                    "dev": {
                        "cross_stack_references": "strong",
                        "restrict_default_security_group": False,
                        "serving": {"image": "dscloud-serving:local"},
                        "batch": {"image": "dscloud-batch:local"},
                    }
                }
            }
        },
    }

    local = synthesize_platform(raw, asset_sources, tmp_path / "cdk.out")

    batch = json.dumps(local.template_json("dsc-recs-dev", "Batch"))
    network = json.dumps(local.template_json("dsc-recs-dev", "Network"))
    assert "Fn::ImportValue" in batch and "Fn::GetStackOutput" not in batch
    assert "Custom::VpcRestrictDefaultSG" not in network
    # the repository's environments keep weak references and the custom resource
    shipped = json.dumps(platform.template_json(dev_env, "Batch"))
    assert "Fn::ImportValue" not in shipped
    assert "Custom::VpcRestrictDefaultSG" in json.dumps(platform.template_json(dev_env, "Network"))
