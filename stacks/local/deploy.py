"""Synthesize one environment for the local target and deploy it with the real CDK CLI.

The steps of `make local` up to a deployed environment: `cdk synth` with
`-c dscloud:local=ENV` into `cdk.out.local` (the scorer bundle is cached there by its
fingerprint), the moto workarounds on that local assembly only, `cdk bootstrap`, and
`cdk deploy --method=direct` of the environment's five stacks (a change set would hide
moto's resource errors and report success). Every CLI call is bounded in time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.config import LOCAL_ACCOUNT, LOCAL_CONTEXT_KEY
from stacks.local.moto_gaps import patch_assembly
from stacks.local.server import MotoServer

__all__ = ["CdkError", "Deployment", "deploy"]

_CLI_TIMEOUT = 900.0


class CdkError(RuntimeError):
    """A CDK CLI call failed; the message holds the command and its output's tail."""


@dataclass
class Deployment:
    """What was deployed: the environment, its stacks' outputs, and how long each step took."""

    environment: str
    region: str
    assembly: Path
    outputs: dict[str, dict[str, str]]
    patches: dict[str, dict[str, int]]
    seconds: dict[str, float] = field(default_factory=dict)

    def output(self, stack: str, name: str) -> str:
        """Output `name` of stack `stack` ("Online"); raises KeyError naming what there is."""
        key = f"{self.environment}-{stack}"
        try:
            return self.outputs[key][name]
        except KeyError:
            raise KeyError(f"no output {name} of {key}; have {self.outputs.get(key)}") from None


def _run(command: Sequence[str], *, cwd: Path, env: Mapping[str, str], what: str) -> str:
    try:
        result = subprocess.run(
            list(command),
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CdkError(
            f"{what} timed out after {_CLI_TIMEOUT:.0f}s: {' '.join(command)}"
        ) from error
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise CdkError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{tail}")
    return result.stdout


def deploy(
    *,
    repo_root: Path,
    environment: str,
    region: str,
    server: MotoServer,
    state_dir: Path,
    outdir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Deployment:
    """Synthesize, patch, bootstrap and deploy `environment` into `server`; returns the
    Deployment. Raises CdkError when a CLI step fails."""
    cdk = str(repo_root / "node_modules" / ".bin" / "cdk")
    assembly = outdir or repo_root / "cdk.out.local"
    env = {
        **os.environ,
        **server.environ(region),
        # moto_gaps: the CLI builds TemplateURL from its endpoint's host.
        "AWS_ENDPOINT_URL": server.cli_endpoint,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_VERSION_CHECK": "1",
        # `python3 app.py` (cdk.json) must be this interpreter, with aws-cdk-lib.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }
    seconds: dict[str, float] = {}
    started = time.monotonic()
    _run(
        [cdk, "synth", "--quiet", "-c", f"{LOCAL_CONTEXT_KEY}={environment}", "-o", str(assembly)],
        cwd=repo_root,
        env=env,
        what="cdk synth",
    )
    seconds["synth"] = time.monotonic() - started
    patches = patch_assembly(assembly)
    started = time.monotonic()
    _run(
        [cdk, "bootstrap", f"aws://{LOCAL_ACCOUNT}/{region}", "--app", str(assembly)],
        cwd=repo_root,
        env=env,
        what="cdk bootstrap",
    )
    seconds["bootstrap"] = time.monotonic() - started
    outputs_file = state_dir / "outputs.json"
    started = time.monotonic()
    _run(
        [
            cdk,
            "deploy",
            "--app",
            str(assembly),
            f"{environment}/*",
            "--method=direct",
            "--require-approval",
            "never",
            "--outputs-file",
            str(outputs_file),
        ],
        cwd=repo_root,
        env=env,
        what="cdk deploy",
    )
    seconds["deploy"] = time.monotonic() - started
    raw: dict[str, Any] = json.loads(outputs_file.read_text())
    # The outputs file names stacks by artifact id; the stack names are ENV-Stack.
    return Deployment(
        environment=environment,
        region=region,
        assembly=assembly,
        outputs=_by_stack_name(assembly, raw),
        patches=patches,
        seconds=seconds,
    )


def _by_stack_name(assembly: Path, raw: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    names: dict[str, str] = {}
    for manifest in assembly.rglob("manifest.json"):
        for artifact_id, artifact in json.loads(manifest.read_text()).get("artifacts", {}).items():
            stack_name = artifact.get("properties", {}).get("stackName")
            if stack_name:
                names[artifact_id] = stack_name
    return {names.get(key, key): dict(values) for key, values in raw.items()}
