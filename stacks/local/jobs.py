"""AWS Batch, emulated for the local target: job definitions run as processes here.

moto keeps job definitions but runs no job. These functions run one as AWS Batch would:
its command with each `Ref::name` replaced by the submitted (or default) parameter, its
environment, and for an array job one child per index with AWS_BATCH_JOB_ARRAY_INDEX. The
image's paths are mapped to this checkout (`/opt/dsc/examples/` -> `examples/`, `python`
-> this interpreter, `dsc` -> the venv's), since no container engine is assumed. The
nightly schedule, which moto does not model, is read from the synthesized template.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stacks.local.deploy import Deployment
from stacks.local.verify import Clients

__all__ = [
    "LifecycleError",
    "job_definition",
    "job_environment",
    "local_command",
    "run",
    "schedule_request",
    "substitute",
]

_JOB_TIMEOUT = 600.0


class LifecycleError(RuntimeError):
    """A step of the lifecycle failed; the message says which and shows its output."""


def substitute(command: Sequence[str], parameters: Mapping[str, str]) -> list[str]:
    """`command` with each `Ref::name` replaced by parameter `name`, as AWS Batch does.
    Raises LifecycleError for a Ref with no parameter."""
    out = []
    for word in command:
        if word.startswith("Ref::"):
            name = word[len("Ref::") :]
            if name not in parameters:
                raise LifecycleError(
                    f"{word} in {list(command)} has no parameter; have {dict(parameters)}"
                )
            word = parameters[name]
        out.append(word)
    return out


def local_command(command: Sequence[str], repo_root: Path) -> list[str]:
    """`command` as it runs from this checkout instead of the image (see the module doc)."""
    bin_dir = Path(sys.executable).parent
    mapped = []
    for word in command:
        if word.startswith("/opt/dsc/examples/"):
            word = str(repo_root / "examples" / word[len("/opt/dsc/examples/") :])
        mapped.append(word)
    if mapped and mapped[0] == "python":
        mapped[0] = sys.executable
    elif mapped and mapped[0] == "dsc":
        mapped[0] = str(bin_dir / "dsc")
    return mapped


def run(what: str, command: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run `command` with exactly `env`; returns its stdout. Raises LifecycleError naming
    `what` with the output's tail when it fails or outlives the job timeout."""
    try:
        result = subprocess.run(
            list(command),
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_JOB_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise LifecycleError(f"{what}: timed out after {_JOB_TIMEOUT:.0f}s") from error
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise LifecycleError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{tail}"
        )
    return result.stdout


def job_definition(batch: Any, name: str) -> dict[str, Any]:
    """The latest active revision of job definition `name`; raises LifecycleError if none."""
    found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")[
        "jobDefinitions"
    ]
    if not found:
        raise LifecycleError(f"no active job definition {name}")
    return dict(max(found, key=lambda j: j["revision"]))


def job_environment(job: Mapping[str, Any]) -> dict[str, str]:
    """A job definition's container environment as a dict."""
    return {e["name"]: e["value"] for e in job["containerProperties"].get("environment", [])}


def schedule_request(d: Deployment, client: Clients) -> tuple[str, dict[str, Any]]:
    """The nightly schedule's target ARN and SubmitJob request, read from the synthesized
    template (moto has no Scheduler model), its Refs resolved to the deployed resources."""
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in client("cloudformation").describe_stack_resources(
            StackName=f"{d.environment}-Batch"
        )["StackResources"]
        if "LogicalResourceId" in r  # moto lists what it has no model for without one
    }

    def resolve(node: Any) -> str:
        if isinstance(node, str):
            return node
        if "Fn::Join" in node:
            separator, parts = node["Fn::Join"]
            return str(separator).join(resolve(part) for part in parts)
        if node.get("Ref") == "AWS::Partition":
            return "aws"
        if "Ref" in node:
            return str(physical[node["Ref"]])
        raise LifecycleError(f"cannot resolve {node} in the schedule's target")

    for path in Path(d.assembly).rglob("*.template.json"):
        for resource in json.loads(path.read_text()).get("Resources", {}).values():
            if resource["Type"] == "AWS::Scheduler::Schedule":
                target = resource["Properties"]["Target"]
                return resolve(target["Arn"]), dict(json.loads(resolve(target["Input"])))
    raise LifecycleError("no AWS::Scheduler::Schedule in the synthesized templates")
