"""checkov on every synthesized template: each failure is excused by exactly the table of
docs/security.md, and each row of that table still excuses a failure.

The real checkov CLI (pinned, `.venv-checkov`) scans the templates of every environment of
cdk.json and of the variant configuration in one run, together with one deliberately weak
template (the canary) that proves a new failure would not slip through the table.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.stacks.checkov import Finding, Justification, Scan, justifications, reconcile, scan
from tests.stacks.conftest import SynthesizedPlatform

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CANARY = "canary"
# An S3 bucket with none of the settings the archive's buckets have.
CANARY_TEMPLATE: dict[str, Any] = {
    "Resources": {"Plain": {"Type": "AWS::S3::Bucket", "Properties": {}}},
}
DEFAULT_LISTENER = "AWS::ElasticLoadBalancingV2::Listener.ServingLoadBalancerPublicListener*"


def templates_of(platform: SynthesizedPlatform) -> dict[str, dict[str, Any]]:
    """Every stack template of every environment of `platform`, named `{env}-{stack}`."""
    return {
        f"{environment}-{stack}": template
        for environment in platform.environments
        for stack, template in platform.all_templates(environment).items()
    }


@pytest.fixture(scope="module")
def templates(
    platform: SynthesizedPlatform, variant: SynthesizedPlatform
) -> dict[str, dict[str, Any]]:
    """The configured environments' templates and the variant's."""
    return {**templates_of(platform), **templates_of(variant)}


@pytest.fixture(scope="module")
def checkov(templates: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Scan:
    """One checkov run over the platform's templates and the canary."""
    return scan({**templates, CANARY: CANARY_TEMPLATE}, tmp_path_factory.mktemp("checkov"))


@pytest.fixture(scope="module")
def platform_failures(checkov: Scan) -> list[Finding]:
    """The failed checks of the platform's templates (the canary's left out)."""
    return [f for f in checkov.failed if f.template != CANARY]


def test_checkov_checked_every_template(
    checkov: Scan, templates: dict[str, dict[str, Any]]
) -> None:
    assert checkov.checked_templates == {*templates, CANARY}


def test_every_failed_check_is_justified_in_the_security_page(
    platform_failures: list[Finding],
) -> None:
    unjustified = reconcile(platform_failures, justifications()).unjustified
    assert not unjustified, "checkov failures docs/security.md does not justify:\n" + "\n".join(
        f"  {f.check_id} {f.resource} in {f.template}: {f.check_name}" for f in unjustified
    )


def test_every_justification_still_matches_a_failed_check(
    platform_failures: list[Finding],
) -> None:
    stale = reconcile(platform_failures, justifications()).stale
    assert not stale, f"docs/security.md excuses checks that no longer fail (remove them): {stale}"


def test_a_new_failure_is_not_excused_by_the_table(checkov: Scan) -> None:
    # given the canary's bare bucket, which fails checks the archive's buckets pass
    canary = [f for f in checkov.failed if f.template == CANARY]
    assert {"CKV_AWS_18", "CKV_AWS_21"} <= {f.check_id for f in canary}
    # then no row of the table covers it
    assert reconcile(canary, justifications()).unjustified == canary


def test_a_row_that_excuses_nothing_is_reported_stale(platform_failures: list[Finding]) -> None:
    rows = [*justifications(), Justification("CKV_AWS_21", ("AWS::S3::Bucket.*",), "versioning")]
    assert reconcile(platform_failures, rows).stale == [("CKV_AWS_21", "AWS::S3::Bucket.*")]


def test_the_plain_http_listener_is_the_default_only(
    platform: SynthesizedPlatform, platform_failures: list[Finding]
) -> None:
    # The security page's claim: CKV_AWS_2/103 report the listener without a certificate,
    # in every configured environment, and not with one (the variant).
    row = Justification("CKV_AWS_2", (DEFAULT_LISTENER,), "")
    flagged = {f.template for f in platform_failures if row.covers(f)}
    assert flagged == {f"{environment}-Serving" for environment in platform.environments}
