"""`python -m stacks.local up ENV` (make local), `... down` (make local-down) and `... env`.

`up` starts a fresh moto server on 127.0.0.1, deploys environment ENV (default
dsc-recs-dev) with the real CDK CLI, checks every resource through the service APIs, runs
the lifecycle from the deployed definitions, prints what it checked and where everything
is, and leaves the server running. Exit status 1 when any check fails. `env` prints
`export` lines naming the deployed archive, table, queue, stream and scoring prefixes (and
the moto server), for `eval "$(python -m stacks.local env)"`; with `--outputs-file FILE`
from `cdk deploy --outputs-file FILE`, the same for an environment deployed to AWS. See
docs/local.md.
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
from stacks.local.exports import OutputsError, exports, read_outputs, render
from stacks.local.lifecycle import LifecycleError, run_lifecycle
from stacks.local.verify import Report, verify

__all__ = ["environment_exports", "main", "up"]

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


def environment_exports(
    environment: str | None,
    outputs_file: Path | None,
    *,
    repo_root: Path = REPO_ROOT,
    state_dir: Path = STATE_DIR,
) -> str:
    """The `export` lines for `environment`'s outputs: from `outputs_file` (a deploy to AWS,
    no AWS_* lines: the caller's own credentials and region apply), else from the local
    deploy in `state_dir` with the running moto server's endpoint. Raises OutputsError, or
    ConfigError for an environment cdk.json does not define."""
    if outputs_file is not None:
        return render(exports(read_outputs(outputs_file), environment))
    moto = server.running(state_dir)
    if moto is None:
        raise OutputsError(f"no moto server runs (state in {state_dir}); run `make local` first")
    name = environment or DEFAULT_ENVIRONMENT
    region = local_environment(load_config_file(repo_root / "cdk.json"), name).region
    variables = exports(read_outputs(state_dir / "outputs.json"), name)
    return render(variables, aws=moto.environ(region))


def main(argv: list[str] | None = None) -> int:
    """Run `up` or `down`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m stacks.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser(
        "up", help="deploy into a fresh moto server and run the lifecycle"
    )
    up_parser.add_argument("environment", nargs="?", default=DEFAULT_ENVIRONMENT)
    commands.add_parser("down", help="stop the moto server")
    env_parser = commands.add_parser(
        "env", help="print export lines for a deployed environment, read from its outputs"
    )
    env_parser.add_argument("environment", nargs="?", help="default: the only one deployed")
    env_parser.add_argument(
        "--outputs-file",
        type=Path,
        help="the file of `cdk deploy --outputs-file` (default: the local deploy's)",
    )
    args = parser.parse_args(argv)
    if args.command == "env":
        try:
            print(environment_exports(args.environment, args.outputs_file), end="")
        except (ConfigError, OutputsError) as error:
            print(f"python -m stacks.local env: {error}", file=sys.stderr)
            return 1
        return 0
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
