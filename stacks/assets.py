"""Where the code that runs in the cloud comes from: the Lambda bundle and the image assets.

The stacks never import the runtime; they refer to its files. The scorer Lambda's code is
the docker-free bundle made by `dsc bundle lambda --dir OUT` (pip with platform targeting,
no Docker, no Amazon Linux box), run through CDK local bundling; or, when the environment
variable DSC_LAMBDA_BUNDLE_DIR names a directory, that pre-built bundle as it is. The
serving and batch images are built by the CDK CLI at deploy time from docker/*.Dockerfile
with the repository root as context; synth only fingerprints the files.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_

__all__ = [
    "LAMBDA_PYTHON_VERSION",
    "AssetSources",
    "LambdaBundleError",
    "LambdaBundler",
]

# The scorer Lambda's runtime; the bundle's wheels are fetched for this interpreter.
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12

LAMBDA_ARCH = "x86_64"
LAMBDA_REQUIREMENTS = "docker/requirements-lambda.txt"
BUNDLE_DIR_VARIABLE = "DSC_LAMBDA_BUNDLE_DIR"
SERVING_DOCKERFILE = "docker/serving.Dockerfile"
BATCH_DOCKERFILE = "docker/batch.Dockerfile"

# Never part of an image build context or of the runtime's source fingerprint.
_NOT_SOURCE = [
    ".git",
    "**/.venv*",
    "node_modules",
    "cdk.out*",
    ".dsc",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.egg-info",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "**/.pytest_cache",
    # setuptools leaves runtime/build behind when `dsc bundle lambda` installs the runtime
    "**/build",
    "**/dist",
]
# Without an image's own ignore file: neither the CDK app nor the tooling goes into it.
_NOT_IMAGE = [
    *_NOT_SOURCE,
    "stacks",
    "app.py",
    "Makefile",
    "README.md",
    "pyproject.toml",
    "requirements-dev.txt",
    "cdk.json",
    "cdk.context.json",
    "package.json",
    "package-lock.json",
    "tests",
    "docs",
    "bench",
    ".ci",
]


class LambdaBundleError(RuntimeError):
    """`dsc bundle lambda` failed or is unavailable; the message says how to proceed."""


@jsii.implements(cdk.ILocalBundling)
class LambdaBundler:
    """CDK local bundling that runs `python -m dscloud.cli bundle lambda --dir OUTPUT_DIR`."""

    def __init__(self, *, repo_root: Path, command: Sequence[str] | None = None) -> None:
        self.repo_root = repo_root
        self.command = list(command or self.default_command(repo_root))

    @staticmethod
    def default_command(repo_root: Path) -> list[str]:
        """`dsc bundle lambda` for the scorer's runtime, with this interpreter (the venv's)."""
        return [
            sys.executable,
            "-m",
            "dscloud.cli",
            "bundle",
            "lambda",
            "--python-version",
            LAMBDA_PYTHON_VERSION,
            "--arch",
            LAMBDA_ARCH,
            "--runtime",
            str(repo_root / "runtime"),
            "--requirements",
            str(repo_root / LAMBDA_REQUIREMENTS),
        ]

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        """Fill `output_dir` with the bundle; returns True, or raises LambdaBundleError."""
        command = [*self.command, "--dir", output_dir]
        try:
            result = subprocess.run(
                command, cwd=self.repo_root, capture_output=True, text=True, check=False
            )
        except OSError as error:
            raise LambdaBundleError(self._advice(command, str(error))) from error
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-20:])
            raise LambdaBundleError(
                self._advice(command, f"exit status {result.returncode}\n{tail}")
            )
        return True

    @staticmethod
    def _advice(command: Sequence[str], detail: str) -> str:
        return (
            f"building the scorer Lambda bundle failed: {' '.join(command)}: {detail}\n"
            "Install the runtime (`make` installs it into .venv), or build the bundle once with "
            f"`dsc bundle lambda --dir DIR` and set {BUNDLE_DIR_VARIABLE}=DIR, or skip bundling "
            "with `cdk synth -c aws:cdk:bundling-stacks=[]` when only the templates matter."
        )


@dataclass(frozen=True)
class AssetSources:
    """The files the stacks turn into assets; built once by app.py (or a test) and passed down."""

    repo_root: Path
    lambda_bundle_dir: Path | None = None
    bundle_command: tuple[str, ...] | None = field(default=None)

    @classmethod
    def from_environ(cls, repo_root: Path, environ: Mapping[str, str]) -> AssetSources:
        """Read DSC_LAMBDA_BUNDLE_DIR; raises LambdaBundleError if it names no directory."""
        bundle_dir = environ.get(BUNDLE_DIR_VARIABLE)
        if not bundle_dir:
            return cls(repo_root=repo_root)
        path = Path(bundle_dir).resolve()
        if not path.is_dir():
            raise LambdaBundleError(f"{BUNDLE_DIR_VARIABLE}={bundle_dir} is not a directory")
        return cls(repo_root=repo_root, lambda_bundle_dir=path)

    def scorer_code(self) -> lambda_.Code:
        """The scorer Lambda's code: the pre-built bundle, or `dsc bundle lambda` at synth."""
        if self.lambda_bundle_dir is not None:
            return lambda_.Code.from_asset(str(self.lambda_bundle_dir))
        bundler = LambdaBundler(repo_root=self.repo_root, command=self.bundle_command)
        # The fingerprint (which decides whether to bundle again) covers exactly what the
        # bundle is made of: the runtime's sources and the pinned requirements.
        return lambda_.Code.from_asset(
            str(self.repo_root),
            ignore_mode=cdk.IgnoreMode.DOCKER,
            exclude=["*", "!runtime/", f"!{LAMBDA_REQUIREMENTS}", *_NOT_SOURCE, "runtime/tests"],
            bundling=cdk.BundlingOptions(
                # Never pulled: local bundling either succeeds or raises.
                image=LAMBDA_RUNTIME.bundling_image,
                local=bundler,
                command=["echo", "local bundling only: dsc bundle lambda"],
            ),
        )

    def serving_image(self) -> ecs.ContainerImage:
        """The serving container, built from docker/serving.Dockerfile at deploy time."""
        return self._image(SERVING_DOCKERFILE)

    def batch_image(self) -> ecs.ContainerImage:
        """The batch scoring and training container, from docker/batch.Dockerfile."""
        return self._image(BATCH_DOCKERFILE)

    def _image(self, dockerfile: str) -> ecs.ContainerImage:
        return ecs.ContainerImage.from_asset(
            str(self.repo_root),
            file=dockerfile,
            ignore_mode=cdk.IgnoreMode.DOCKER,
            exclude=self._build_context_exclusions(dockerfile),
            platform=cdk.aws_ecr_assets.Platform.LINUX_AMD64,
        )

    def _build_context_exclusions(self, dockerfile: str) -> list[str]:
        # An image's own ignore file (`docker/X.Dockerfile.dockerignore`, as BuildKit and
        # buildah read it) decides its build context; CDK fingerprints and stages only that,
        # never caches, virtualenvs or build leftovers.
        ignore_file = self.repo_root / f"{dockerfile}.dockerignore"
        if not ignore_file.is_file():
            return [*_NOT_IMAGE, f"!{dockerfile}"]
        lines = (line.strip() for line in ignore_file.read_text().splitlines())
        patterns = [line for line in lines if line and not line.startswith("#")]
        return [*patterns, *_NOT_SOURCE, f"!{dockerfile}"]
