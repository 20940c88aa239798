"""`make local` end to end: one environment deployed into a fresh moto server with the real
cdk CLI, read back, and its lifecycle run from the deployed definitions.

Slow (a synth with the scorer bundle, a deploy, five compute steps), so it runs once per
session; every check the run makes must pass, and each part of the environment must have
been checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks.local import server
from stacks.local.__main__ import up
from stacks.local.deploy import Deployment
from stacks.local.verify import Report

REPO_ROOT = Path(__file__).resolve().parents[3]
ENVIRONMENT = "dsc-recs-dev"


@pytest.fixture(scope="module")
def local_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Deployment, Report, Report, list[str]]]:
    state = tmp_path_factory.mktemp("local-state")
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
