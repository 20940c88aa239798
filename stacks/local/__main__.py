"""`python -m stacks.local up ENV` (make local) and `python -m stacks.local down` (make local-down).

`up` starts a fresh moto server on 127.0.0.1, deploys environment ENV (default
dsc-recs-dev) with the real CDK CLI, checks every resource through the service APIs, runs
the lifecycle from the deployed definitions, prints what it checked and where everything
is, and leaves the server running. Exit status 1 when any check fails. See docs/local.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from stacks.config import ConfigError, load_config_file, local_environment
from stacks.local import server
from stacks.local.deploy import CdkError, Deployment, deploy
from stacks.local.lifecycle import LifecycleError, run_lifecycle
from stacks.local.verify import Report, verify

__all__ = ["main", "up"]

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = REPO_ROOT / ".dsc" / "local"
DEFAULT_ENVIRONMENT = "dsc-recs-dev"


def clients(endpoint: str, region: str) -> Any:
    """A `client(service)` factory of boto3 clients for the moto server at `endpoint`."""
    import boto3

    def make(service: str) -> Any:
        factory: Any = boto3.client
        return factory(
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id="dsc-local",
            aws_secret_access_key="dsc-local",
        )

    return make


def up(
    environment: str,
    *,
    repo_root: Path = REPO_ROOT,
    state_dir: Path = STATE_DIR,
    outdir: Path | None = None,
    log: Any = print,
) -> tuple[Deployment, Report, Report]:
    """Deploy `environment` into a fresh moto server, verify it and run the lifecycle; returns
    (deployment, resource report, lifecycle report). Raises ConfigError, CdkError or
    LifecycleError; the server keeps running either way (stop it with `down`)."""
    config = local_environment(load_config_file(repo_root / "cdk.json"), environment)
    started = time.monotonic()
    moto = server.start(state_dir)
    log(f"moto server: {moto.endpoint} (pid {moto.pid}, log {moto.log})")
    deployment = deploy(
        repo_root=repo_root,
        environment=environment,
        region=config.region,
        server=moto,
        state_dir=state_dir,
        outdir=outdir,
    )
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in deployment.seconds.items())
    log(f"deployed {environment}: 5 stacks with the cdk CLI ({steps})")
    for template, fixes in deployment.patches.items():
        log(f"  moto workarounds on the local {template}: {', '.join(fixes)}")
    client = clients(moto.endpoint, config.region)
    resources = verify(deployment, config, client)
    _print_report("resources, read back through the service APIs", resources, log)
    log("lifecycle, from the deployed definitions:")
    lifecycle = run_lifecycle(deployment, config, moto, client, repo_root=repo_root, log=log)
    _print_report("lifecycle checks", lifecycle, log)
    log(f"\nwhere everything is (AWS_ENDPOINT_URL={moto.endpoint}, region {config.region}):")
    for stack, outputs in sorted(deployment.outputs.items()):
        for name, value in sorted(outputs.items()):
            if not name.startswith("ExportsOutput"):
                log(f"  {stack}.{name} = {value}")
    log(f"done in {time.monotonic() - started:.0f}s; stop the server with `make local-down`")
    return deployment, resources, lifecycle


def _print_report(title: str, report: Report, log: Any) -> None:
    passed = len(report.checks) - len(report.failures)
    log(f"{title}: {passed}/{len(report.checks)} checks passed")
    for check in report.failures:
        log(f"  FAILED {check.resource}: {check.what}: {check.detail}")
    for dropped in report.dropped:
        log(f"  dropped by moto (checked in the template only): {dropped}")
    if report.not_modelled:
        log(
            "  not modelled by moto's CloudFormation (nothing created; checked in the template "
            f"only): {', '.join(report.not_modelled)}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run `up` or `down`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m stacks.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser(
        "up", help="deploy into a fresh moto server and run the lifecycle"
    )
    up_parser.add_argument("environment", nargs="?", default=DEFAULT_ENVIRONMENT)
    commands.add_parser("down", help="stop the moto server")
    args = parser.parse_args(argv)
    if args.command == "down":
        stopped = server.stop(STATE_DIR)
        print("moto server stopped" if stopped else "no moto server was running")
        return 0
    try:
        _, resources, lifecycle = up(args.environment)
    except (ConfigError, CdkError, LifecycleError) as error:
        print(f"make local: {error}", file=sys.stderr)
        return 1
    return 1 if resources.failures or lifecycle.failures else 0


if __name__ == "__main__":
    sys.exit(main())
