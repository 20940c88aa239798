"""`make local` end to end: one environment deployed into a fresh moto server with the real
cdk CLI, read back, and its lifecycle run from the deployed definitions.

Slow (a synth with the scorer bundle, a deploy, five compute steps), so it runs once per
session; every check the run makes must pass, and each part of the environment must have
been checked.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from dscloud.settings import Settings
from stacks.local import server
from stacks.local.__main__ import environment_exports, up
from stacks.local.deploy import Deployment
from stacks.local.verify import Report

REPO_ROOT = Path(__file__).resolve().parents[3]
ENVIRONMENT = "dsc-recs-dev"


@pytest.fixture(scope="module")
def local_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the local run keeps its server state and outputs file."""
    return tmp_path_factory.mktemp("local-state")


@pytest.fixture(scope="module")
def local_run(
    local_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, Report, Report, list[str]]]:
    state = local_state
    lines: list[str] = []
    try:
        deployment, resources, lifecycle = up(
            ENVIRONMENT,
            repo_root=REPO_ROOT,
            state_dir=state,
            outdir=tmp_path_factory.mktemp("cdk.out.local"),
            log=lines.append,
        )
        yield deployment, resources, lifecycle, lines
    finally:
        server.stop(state)


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_all_five_stacks_deploy_with_the_cdk_cli(
    local_run: tuple[Deployment, Report, Report, list[str]],
) -> None:
    deployment = local_run[0]

    assert sorted(deployment.outputs) == [
        f"{ENVIRONMENT}-{stack}" for stack in ("Archive", "Batch", "Network", "Online", "Serving")
    ]
    assert deployment.patches, "the moto workarounds were applied to the local assembly"


def test_every_resource_is_there_and_wired(
    local_run: tuple[Deployment, Report, Report, list[str]],
) -> None:
    resources = local_run[1]

    assert resources.failures == []
    checked = {check.resource for check in resources.checks}
    for resource in (
        "archive bucket",
        "vpc",
        "job queue",
        f"{ENVIRONMENT}-train",
        f"{ENVIRONMENT}-score",
        "stream",
        "scorer function",
        "event source mapping",
        "predictions table",
        "rejects queue",
        "serving task",
        "load balancer",
    ):
        assert resource in checked
    # what moto cannot show is reported, not passed over
    assert any("AWS::Scheduler::Schedule" in kind for kind in resources.not_modelled)


def test_the_lifecycle_runs_from_the_deployed_definitions(
    local_run: tuple[Deployment, Report, Report, list[str]],
) -> None:
    lifecycle, lines = local_run[2], local_run[3]

    assert lifecycle.failures == []
    checked = {(check.resource, check.what) for check in lifecycle.checks}
    assert ("serving", "ready (golden examples replayed)") in checked
    assert ("predictions table", "one item per scored entity") in checked
    assert ("rejects queue", "one message per poison record") in checked
    assert ("scoring output", "_SUCCESS: every row scored or rejected") in checked
    assert any(
        line.startswith("where everything is") or "where everything is" in line for line in lines
    )


def _exported(lines: str) -> dict[str, str]:
    variables = {}
    for line in lines.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        variables[name] = shlex.split(value, comments=True)[0]
    return variables


def test_the_deployed_environment_is_driven_from_its_outputs(
    local_run: tuple[Deployment, Report, Report, list[str]], local_state: Path
) -> None:
    deployment = local_run[0]
    # given the export lines `make local-env` prints for the running deploy
    env = _exported(environment_exports(ENVIRONMENT, None, state_dir=local_state))

    # then they name the deployed resources, and the runtime's Settings reads them
    assert env["DSC_ARCHIVE"] == deployment.output("Archive", "ArchiveUri")
    assert env["DSC_STREAM"] == deployment.output("Online", "StreamName")
    settings = Settings.from_env(env)
    assert settings.archive == env["DSC_ARCHIVE"]
    assert settings.predictions_table == deployment.output("Online", "PredictionsTableName")
    assert settings.rejects_queue_url == deployment.output("Online", "RejectsQueueUrl")
    assert settings.s3_endpoint == env["AWS_ENDPOINT_URL"]
    aws: Any = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    endpoint = env["AWS_ENDPOINT_URL"]
    aws.client("s3", endpoint_url=endpoint).head_bucket(Bucket=env["DSC_ARCHIVE_BUCKET"])
    aws.client("kinesis", endpoint_url=endpoint).describe_stream(StreamName=env["DSC_STREAM"])
    aws.client("dynamodb", endpoint_url=endpoint).describe_table(
        TableName=env["DSC_PREDICTIONS_TABLE"]
    )
    # and `dsc` with nothing but those variables finds what the lifecycle published
    listed = subprocess.run(
        [sys.executable, "-m", "dscloud.cli", "list"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "churn" in listed.stdout
