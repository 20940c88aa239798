"""checkov on the synthesized templates, held against the justification table of
docs/security.md.

`scan` runs the pinned checkov CLI (`.venv-checkov`, from requirements-checkov.txt; its own
venv because its pins contradict requirements-dev.txt) over CloudFormation templates and
returns every failed check (check id x resource). `justifications` reads the table of
docs/security.md (the one place a failure is excused), and `reconcile` tells the failures
no row covers from the row patterns no failure matches any more. `make checkov`
(`python -m tests.stacks.checkov`) prints that report for every environment of cdk.json and
the variant configuration of tests/stacks/conftest.py; tests/stacks/test_checkov.py fails on
either list.

checkov runs with `--skip-download`: without it, it asks the Prisma Cloud API for guideline
links, which are unreachable here and not needed for the verdicts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from tests.docs.pages import page

__all__ = [
    "CHECKOV",
    "TABLE_HEADER",
    "Finding",
    "Justification",
    "Reconciled",
    "Scan",
    "justifications",
    "reconcile",
    "scan",
]

CHECKOV = Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov"
SECURITY_PAGE = "docs/security.md"
TABLE_HEADER = "| Check | Resources |"
_SUFFIX = ".template.json"


@dataclass(frozen=True, order=True)
class Finding:
    """One failed check: `resource` is checkov's `Type.LogicalId`, `template` the template's
    name (e.g. `dsc-recs-dev-Serving`)."""

    check_id: str
    resource: str
    template: str
    check_name: str


@dataclass(frozen=True)
class Scan:
    """What checkov reported: the failures, and the templates it ran at least one check on."""

    failed: list[Finding]
    checked_templates: set[str]


@dataclass(frozen=True)
class Justification:
    """One row of the table: a check id, the resource patterns (shell-style, matched against
    `Type.LogicalId`) it excuses, and why."""

    check_id: str
    patterns: tuple[str, ...]
    reason: str

    def covers(self, finding: Finding, pattern: str | None = None) -> bool:
        """Whether this row (or only its `pattern`) excuses `finding`."""
        patterns = self.patterns if pattern is None else (pattern,)
        return finding.check_id == self.check_id and any(
            fnmatchcase(finding.resource, p) for p in patterns
        )


@dataclass(frozen=True)
class Reconciled:
    """Failures no row excuses, and (check id, pattern) pairs of rows that excuse nothing."""

    unjustified: list[Finding]
    stale: list[tuple[str, str]]


def scan(templates: Mapping[str, Mapping[str, Any]], workdir: Path) -> Scan:
    """Run checkov (`--framework cloudformation`, JSON) over `templates` (name -> template),
    written into `workdir`.

    Returns every failed check and the templates checked. Raises FileNotFoundError when the
    pinned checkov is not installed (`make checkov` installs it), RuntimeError when checkov
    errs, cannot parse a template, or reports nothing."""
    if not CHECKOV.is_file():
        raise FileNotFoundError(f"{CHECKOV} is missing: `make checkov` installs it")
    for name, template in templates.items():
        (workdir / f"{name}{_SUFFIX}").write_text(json.dumps(template), encoding="utf-8")
    command = [str(CHECKOV), "--directory", str(workdir), "--framework", "cloudformation"]
    command += ["--output", "json", "--compact", "--skip-download"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    # checkov exits 1 when a check failed; anything else is checkov itself failing.
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise RuntimeError(f"checkov exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    reports = json.loads(done.stdout)
    failed: list[Finding] = []
    checked: set[str] = set()
    for report in reports if isinstance(reports, list) else [reports]:
        if report["summary"]["parsing_errors"]:
            raise RuntimeError(f"checkov could not parse: {report['results']['parsing_errors']}")
        results = report["results"]
        for result in results["passed_checks"] + results["failed_checks"]:
            checked.add(_template_name(result["file_path"]))
        failed += [
            Finding(
                check_id=result["check_id"],
                resource=result["resource"],
                template=_template_name(result["file_path"]),
                check_name=result["check_name"],
            )
            for result in results["failed_checks"]
        ]
    if not checked:
        raise RuntimeError("checkov ran no check on any template")
    return Scan(failed=sorted(failed), checked_templates=checked)


def justifications() -> list[Justification]:
    """The rows of the table under `TABLE_HEADER` in docs/security.md.

    Raises LookupError when there is no such table, ValueError for a row without a check id,
    a resource pattern or a reason."""
    found = []
    for row in page(SECURITY_PAGE).table(TABLE_HEADER):
        check, resources, *rest = row
        check_ids = re.findall(r"`(CKV2?_[A-Z0-9_]+)`", check)
        patterns = tuple(re.findall(r"`([^`]+)`", resources))
        reason = rest[-1] if rest else ""
        if len(check_ids) != 1 or not patterns or not reason:
            raise ValueError(f"{SECURITY_PAGE}: row {row} needs one check id, patterns, a reason")
        found.append(Justification(check_ids[0], patterns, reason))
    return found


def reconcile(failed: Iterable[Finding], rows: Iterable[Justification]) -> Reconciled:
    """The failures no row covers, and each row pattern that covers no failure."""
    failed, rows = list(failed), list(rows)
    unjustified = [f for f in failed if not any(row.covers(f) for row in rows)]
    stale = [
        (row.check_id, pattern)
        for row in rows
        for pattern in row.patterns
        if not any(row.covers(f, pattern) for f in failed)
    ]
    return Reconciled(unjustified=unjustified, stale=stale)


def _template_name(file_path: str) -> str:
    return Path(file_path).name.removesuffix(_SUFFIX)


def _report(result: Scan, rows: list[Justification]) -> tuple[str, bool]:
    """The printed report and whether it is clean (nothing unjustified, nothing stale)."""
    lines = [f"checkov on {len(result.checked_templates)} templates: {len(result.failed)} failed"]
    by_check: dict[tuple[str, str], list[str]] = {}
    for finding in result.failed:
        by_check.setdefault((finding.check_id, finding.resource), []).append(finding.template)
    for (check_id, resource), where in sorted(by_check.items()):
        probe = Finding(check_id, resource, where[0], "")
        row = next((r for r in rows if r.covers(probe)), None)
        verdict = f"justified: {row.reason}" if row else "UNJUSTIFIED"
        lines.append(f"{check_id} {resource} ({len(where)} templates)\n    {verdict}")
    outcome = reconcile(result.failed, rows)
    lines += [f"STALE row in {SECURITY_PAGE}: {c} {p}" for c, p in outcome.stale]
    clean = not outcome.unjustified and not outcome.stale
    return "\n".join(lines), clean


def main() -> int:
    """Synthesize every environment and the variant, scan them, print the report; 0 when
    every failure is justified and no row is stale."""
    from stacks.assets import AssetSources
    from stacks.config import CONTEXT_KEY
    from tests.stacks.conftest import (
        CDK_JSON,
        REPO_ROOT,
        VARIANT_CONFIG,
        VARIANT_VPC_LOOKUP,
        synthesize,
    )

    assets = AssetSources(repo_root=REPO_ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        platforms = [
            synthesize(
                json.loads(CDK_JSON.read_text())["context"][CONTEXT_KEY], assets, root / "a"
            ),
            synthesize(VARIANT_CONFIG, assets, root / "v", extra_context=VARIANT_VPC_LOOKUP),
        ]
        templates = {
            f"{name}-{stack}": template
            for platform in platforms
            for name in platform.environments
            for stack, template in platform.all_templates(name).items()
        }
        (root / "templates").mkdir()
        text, clean = _report(scan(templates, root / "templates"), justifications())
    print(text)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
