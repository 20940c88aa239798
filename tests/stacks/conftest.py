"""Factories for the CDK tests: a synthesized platform, once per session.

jsii makes synthesis slow, so the environments of the repository's cdk.json are built and
synthesized once (`platform`), and one variant configuration exercising the optional paths
(existing VPC, HTTPS, public endpoint, no Spot, single shard) once more (`variant`).
Bundling is skipped (`aws:cdk:bundling-stacks` = []) and assets are not staged, so no
test runs `dsc bundle lambda` or copies the repository.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `stacks` is not installed; tests import it from the repo
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from stacks.assets import BATCH_DOCKERFILE, SERVING_DOCKERFILE, AssetSources  # noqa: E402
from stacks.config import CONTEXT_KEY, load_config  # noqa: E402
from stacks.platform import TeamEnvironment, build_platform  # noqa: E402

CDK_JSON = REPO_ROOT / "cdk.json"
STACK_IDS = ("Archive", "Network", "Batch", "Online", "Serving")

VARIANT_VPC_ID = "vpc-0123456789abcdef0"
VARIANT_CERTIFICATE = (
    "arn:aws:acm:eu-west-1:333333333333:certificate/12345678-1234-1234-1234-123456789012"
)
VARIANT_DOMAIN = "models.ops.example.com"
# What the CDK CLI would cache in cdk.context.json after looking the VPC up.
VARIANT_VPC_LOOKUP = {
    f"vpc-provider:account=333333333333:filter.vpc-id={VARIANT_VPC_ID}:region=eu-west-1"
    ":returnAsymmetricSubnets=true": {
        "vpcId": VARIANT_VPC_ID,
        "vpcCidrBlock": "10.42.0.0/16",
        "ownerAccountId": "333333333333",
        "availabilityZones": [],
        "subnetGroups": [
            {
                "name": "Public",
                "type": "Public",
                "subnets": [
                    {
                        "subnetId": "subnet-0aaa0000000000001",
                        "cidr": "10.42.0.0/24",
                        "availabilityZone": "eu-west-1a",
                        "routeTableId": "rtb-0aaa0000000000001",
                    },
                    {
                        "subnetId": "subnet-0aaa0000000000002",
                        "cidr": "10.42.1.0/24",
                        "availabilityZone": "eu-west-1b",
                        "routeTableId": "rtb-0aaa0000000000002",
                    },
                ],
            },
            {
                "name": "Private",
                "type": "Private",
                "subnets": [
                    {
                        "subnetId": "subnet-0bbb0000000000001",
                        "cidr": "10.42.10.0/24",
                        "availabilityZone": "eu-west-1a",
                        "routeTableId": "rtb-0bbb0000000000001",
                    },
                    {
                        "subnetId": "subnet-0bbb0000000000002",
                        "cidr": "10.42.11.0/24",
                        "availabilityZone": "eu-west-1b",
                        "routeTableId": "rtb-0bbb0000000000002",
                    },
                ],
            },
        ],
    },
    "availability-zones:account=333333333333:region=eu-west-1": ["eu-west-1a", "eu-west-1b"],
}

VARIANT_CONFIG: dict[str, Any] = {
    "defaults": {"account": "333333333333", "region": "eu-west-1", "models": ["churn@production"]},
    "teams": {
        "ops": {
            "stages": {
                "live": {
                    "vpc_id": VARIANT_VPC_ID,
                    "models": ["churn@production", "upsell@champion"],
                    "serving": {
                        "certificate_arn": VARIANT_CERTIFICATE,
                        "domain_name": VARIANT_DOMAIN,
                        "internet_facing": True,
                        "ingress_cidrs": ["0.0.0.0/0"],
                    },
                    "batch": {
                        "spot": False,
                        "shard_count": 1,
                        "nightly_model": "upsell@champion",
                        "drift_psi_alarm": 0.4,
                    },
                }
            }
        }
    },
}


@dataclass
class SynthesizedPlatform:
    """An app synthesized once: its environments, and a Template per (environment, stack)."""

    app: cdk.App
    outdir: Path
    environments: dict[str, TeamEnvironment]

    def template(self, environment: str, stack: str) -> Template:
        """The Template of stack `stack` (e.g. "Online") of environment `environment`."""
        return Template.from_json(self.template_json(environment, stack))

    def template_json(self, environment: str, stack: str) -> dict[str, Any]:
        """The raw CloudFormation template, as a dict."""
        env = self.environments[environment]
        artifact = env.synth().get_stack_artifact(getattr(env, stack.lower()).artifact_id)
        return dict(artifact.template)

    def all_templates(self, environment: str) -> dict[str, dict[str, Any]]:
        """Every stack's raw template of `environment`, by stack id."""
        return {stack: self.template_json(environment, stack) for stack in STACK_IDS}

    @staticmethod
    def grants(template: dict[str, Any]) -> Iterator[tuple[str, list[str], list[Any]]]:
        """(role logical id, actions, resources) for each Allow statement of each IAM policy."""
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::IAM::Policy":
                continue
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Effect"] != "Allow":
                    continue
                actions, resources = statement["Action"], statement["Resource"]
                for role in resource["Properties"].get("Roles", []):
                    yield (
                        role["Ref"],
                        actions if isinstance(actions, list) else [actions],
                        resources if isinstance(resources, list) else [resources],
                    )


def base_context() -> dict[str, Any]:
    """cdk.json context (feature flags, teams) plus the pinned cdk.context.json, no bundling."""
    context = dict(json.loads(CDK_JSON.read_text())["context"])
    context.update(json.loads((REPO_ROOT / "cdk.context.json").read_text()))
    context["aws:cdk:bundling-stacks"] = []
    context["aws:cdk:disable-asset-staging"] = True
    return context


def synthesize(
    raw_config: Mapping[str, Any],
    assets: AssetSources,
    outdir: Path,
    extra_context: Mapping[str, Any] | None = None,
) -> SynthesizedPlatform:
    """Build the platform for `raw_config` into a fresh App and synthesize it (with cdk-nag)."""
    context = {**base_context(), **(extra_context or {}), CONTEXT_KEY: raw_config}
    app = cdk.App(outdir=str(outdir), context=context)
    environments = build_platform(app, load_config(raw_config), assets)
    app.synth()
    return SynthesizedPlatform(
        app=app, outdir=outdir, environments={env.config.name: env for env in environments}
    )


@pytest.fixture(scope="session")
def repo_context() -> dict[str, Any]:
    """The `dscloud` block of the repository's cdk.json."""
    return dict(json.loads(CDK_JSON.read_text())["context"][CONTEXT_KEY])


@pytest.fixture(scope="session")
def asset_sources(tmp_path_factory: pytest.TempPathFactory) -> AssetSources:
    """The repository as asset source; placeholders only while docker/ has no Dockerfiles yet."""
    if all((REPO_ROOT / name).is_file() for name in (SERVING_DOCKERFILE, BATCH_DOCKERFILE)):
        return AssetSources(repo_root=REPO_ROOT)
    warnings.warn("docker/*.Dockerfile missing: synthesizing against placeholders", stacklevel=1)
    root = tmp_path_factory.mktemp("repo")
    for name in (SERVING_DOCKERFILE, BATCH_DOCKERFILE):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("FROM python:3.11-slim\n")
    (root / "runtime").mkdir()
    (root / "runtime" / "pyproject.toml").write_text("[project]\nname = 'placeholder'\n")
    return AssetSources(repo_root=root)


@pytest.fixture(scope="session")
def platform(
    repo_context: dict[str, Any],
    asset_sources: AssetSources,
    tmp_path_factory: pytest.TempPathFactory,
) -> SynthesizedPlatform:
    """Every environment of the repository's cdk.json, synthesized once with cdk-nag on."""
    return synthesize(repo_context, asset_sources, tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def variant(
    asset_sources: AssetSources, tmp_path_factory: pytest.TempPathFactory
) -> SynthesizedPlatform:
    """One environment, dsc-ops-live, with every optional path switched on."""
    return synthesize(
        VARIANT_CONFIG,
        asset_sources,
        tmp_path_factory.mktemp("cdk.out.variant"),
        extra_context=VARIANT_VPC_LOOKUP,
    )


@pytest.fixture(scope="session")
def dev_env(platform: SynthesizedPlatform) -> str:
    """The name of the first environment in cdk.json (a dev stage)."""
    return next(iter(platform.environments))


@pytest.fixture
def template_of(platform: SynthesizedPlatform, dev_env: str) -> Callable[[str], Template]:
    """`template_of("Online")`: a stack Template of the first environment."""
    cache: dict[str, Template] = {}

    def get(stack: str) -> Template:
        if stack not in cache:
            cache[stack] = platform.template(dev_env, stack)
        return cache[stack]

    return get


@pytest.fixture(scope="session")
def synthesize_platform() -> Callable[..., SynthesizedPlatform]:
    """The `synthesize(raw_config, assets, outdir, extra_context=None)` factory, for one-off apps."""
    return synthesize


@pytest.fixture
def cdk_json_copy(tmp_path: Path) -> Path:
    """A copy of the repository's cdk.json in a temporary directory."""
    copy = tmp_path / "cdk.json"
    copy.write_text(CDK_JSON.read_text())
    return copy


@pytest.fixture
def stage_settings() -> Callable[..., dict[str, Any]]:
    """`stage_settings(**overrides)`: a valid one-team `dscloud` context with stage overrides."""

    def make(**overrides: Any) -> dict[str, Any]:
        return {
            "defaults": {
                "account": "111111111111",
                "region": "eu-west-1",
                "models": ["churn@prod"],
            },
            "teams": {"recs": {"stages": {"dev": overrides}}},
        }

    return make


@pytest.fixture(scope="session")
def read_assets(platform: SynthesizedPlatform) -> Callable[[str, str], dict[str, Any]]:
    """`read_assets(environment, stack)`: the stack's asset manifest (files and docker images)."""

    def read(environment: str, stack: str) -> dict[str, Any]:
        env = platform.environments[environment]
        stack_obj = getattr(env, stack.lower())
        assembly = env.synth()
        manifest = Path(assembly.directory) / f"{stack_obj.artifact_id}.assets.json"
        return dict(json.loads(manifest.read_text()))

    return read
