"""stacks/compliance.py: cdk-nag on every synth; specific acknowledgments where they apply."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

import stacks.serving
from stacks.assets import AssetSources
from stacks.compliance import _flatten

ACKNOWLEDGED = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY


def _acknowledgments(platform: Any) -> list[tuple[cdk.IConstruct, str, str]]:
    """(construct, rule, reason) of every cdk-nag acknowledgment in the app.

    CDK itself acknowledges a few of its own CloudFormation-Validate warnings on stacks;
    those are not ours and are left out.
    """
    found = []
    for construct in platform.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == ACKNOWLEDGED:
                found.extend(
                    (construct, rule, reason)
                    for rule, reason in entry.data.items()
                    if "AwsSolutions-" in rule
                )
    return found


def test_every_environment_synthesizes_with_no_unacknowledged_finding(platform: Any) -> None:
    # app.synth() raises on any unacknowledged cdk-nag finding; the fixture got this far.
    report_path = platform.outdir / "validation-report.json"
    reports = json.loads(report_path.read_text())["pluginReports"] if report_path.exists() else []

    assert all(report["conclusion"] == "success" for report in reports)
    assert len(platform.environments) >= 4


def test_acknowledgments_sit_on_the_construct_concerned_with_a_reason(platform: Any) -> None:
    acknowledgments = _acknowledgments(platform)

    assert acknowledgments
    for construct, rule, reason in acknowledgments:
        assert not isinstance(construct, cdk.Stack | cdk.Stage), (construct.node.path, rule)
        assert len(reason) > 60, (rule, reason)


def test_acknowledged_rules_are_the_expected_few(platform: Any, dev_env: str) -> None:
    rules = {
        rule.split("::", 1)[-1].split("[")[0]
        for construct, rule, _ in _acknowledgments(platform)
        if construct.node.path.startswith(f"{dev_env}/")
    }

    assert rules == {"AwsSolutions-S1", "AwsSolutions-L1", "AwsSolutions-ECS2", "AwsSolutions-IAM5"}


def test_a_public_endpoint_is_acknowledged_only_where_configured(
    variant: Any, platform: Any
) -> None:
    def ec23(synthesized: Any) -> list[str]:
        return [c.node.path for c, rule, _ in _acknowledgments(synthesized) if "EC23" in rule]

    assert ec23(platform) == []
    assert ec23(variant) == ["dsc-ops-live/Network/Network/LoadBalancer"]


def test_an_unacknowledged_finding_fails_synth(
    monkeypatch: pytest.MonkeyPatch,
    synthesize_platform: Callable[..., Any],
    stage_settings: Callable[..., dict[str, Any]],
    asset_sources: AssetSources,
    tmp_path: Path,
) -> None:
    # given the serving stack without its acknowledgment of plain environment variables
    original = stacks.serving.acknowledge

    def skip_ecs2(construct: Any, rule: str, reason: str) -> None:
        if rule != "AwsSolutions-ECS2":
            original(construct, rule, reason)

    monkeypatch.setattr(stacks.serving, "acknowledge", skip_ecs2)

    with pytest.raises(RuntimeError, match="AwsSolutions-ECS2"):
        synthesize_platform(stage_settings(), asset_sources, tmp_path)

    report = (tmp_path / "validation-report.json").read_text()
    assert "AwsSolutions-ECS2" in report
    assert "dsc-recs-dev/Serving/Serving/Service/TaskDef" in report


@pytest.mark.parametrize(
    ("resolved", "flat"),
    [
        ("arn:aws:s3:::b/models/*", "arn:aws:s3:::b/models/*"),
        (
            {"Fn::Join": ["", [{"Fn::GetAtt": ["Bucket1", "Arn"]}, "/models/*"]]},
            "<Bucket1.Arn>/models/*",
        ),
        ({"Fn::Join": [":", ["arn", {"Ref": "AWS::Partition"}, "s3"]]}, "arn:<AWS::Partition>:s3"),
        ({"Fn::Sub": "arn:${AWS::Partition}:s3:::x/*"}, "arn:<AWS::Partition>:s3:::x/*"),
        ({"Fn::ImportValue": "Stack:Output"}, "Stack:Output"),
        ({"Fn::Select": [0, ["a"]]}, '{"Fn::Select":[0,["a"]]}'),
    ],
)
def test_finding_names_are_flattened_like_cdk_nag(resolved: Any, flat: str) -> None:
    assert _flatten(resolved) == flat
