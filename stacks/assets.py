"""Where the code that runs in the cloud comes from: the Lambda bundle and the image assets.

The stacks never import the runtime; they refer to its files. The scorer Lambda's code is
the docker-free bundle made by `dsc bundle lambda --dir OUT` (pip with platform targeting,
no Docker, no Amazon Linux box), run through CDK local bundling; or, when the environment
variable DSC_LAMBDA_BUNDLE_DIR names a directory, that pre-built bundle as it is. The
serving and batch images are either prebuilt (`serving.image` / `batch.image` in cdk.json:
CI builds once and promotes by digest; ECR images get pull grants) or built by the CDK CLI
at deploy time from docker/*.Dockerfile with the repository root as context.

When the CLI skips bundling for a stack (`cdk deploy --exclusively` of another stack, or
`aws:cdk:bundling-stacks`), CDK would stage the bundling *source*, the repository root, as
the function's code. Here the scorer's code is then a one-file placeholder instead, with
its own asset hash and a synth warning: deployed by mistake, the function fails at import
with a message saying why, and the repository is never uploaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

__all__ = [
    "LAMBDA_PYTHON_VERSION",
    "UNBUNDLED_NOTE",
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
UNBUNDLED_NOTE = "NOT_BUNDLED.txt"
# account.dkr.ecr.region.amazonaws.com/repository[:tag|@sha256:digest]
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repository>[^:@]+)(:(?P<tag>[^@]+))?(@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
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

    def scorer_code(self, scope: Construct) -> lambda_.Code:
        """The scorer Lambda's code for a function in `scope`: the pre-built bundle, or
        `dsc bundle lambda` at synth; when bundling is skipped for the stack, a placeholder
        (see the module docstring), never the repository."""
        if self.lambda_bundle_dir is not None:
            return lambda_.Code.from_asset(str(self.lambda_bundle_dir))
        stack = cdk.Stack.of(scope)
        source = str(self.repo_root)
        # The fingerprint (which decides whether to bundle again) covers exactly what the
        # bundle is made of: the runtime's sources and the pinned requirements.
        exclude = ["*", "!runtime/", f"!{LAMBDA_REQUIREMENTS}", *_NOT_SOURCE, "runtime/tests"]
        if not stack.bundling_required:
            cdk.Annotations.of(scope).add_warning_v2(
                "dscloud:unbundled-scorer",
                f"bundling skipped for {stack.stack_name}: its scorer code is a placeholder "
                f"that fails at import; deploy this stack itself (not --exclusively another "
                f"one) or set {BUNDLE_DIR_VARIABLE}",
            )
            fingerprint = cdk.FileSystem.fingerprint(
                source, exclude=exclude, ignore_mode=cdk.IgnoreMode.DOCKER
            )
            return lambda_.Code.from_asset(
                str(_placeholder(stack.stack_name)),
                asset_hash=f"unbundled-{fingerprint}",
                asset_hash_type=cdk.AssetHashType.CUSTOM,
            )
        bundler = LambdaBundler(repo_root=self.repo_root, command=self.bundle_command)
        return lambda_.Code.from_asset(
            source,
            ignore_mode=cdk.IgnoreMode.DOCKER,
            exclude=exclude,
            bundling=cdk.BundlingOptions(
                # Never pulled: local bundling either succeeds or raises.
                image=LAMBDA_RUNTIME.bundling_image,
                local=bundler,
                command=["echo", "local bundling only: dsc bundle lambda"],
            ),
        )

    def serving_image(self, scope: Construct, uri: str | None) -> ecs.ContainerImage:
        """The serving container: prebuilt `uri`, else built from docker/serving.Dockerfile."""
        return (
            prebuilt_image(scope, "ServingImage", uri) if uri else self._image(SERVING_DOCKERFILE)
        )

    def batch_image(self, scope: Construct, uri: str | None) -> ecs.ContainerImage:
        """The batch scoring and training container: prebuilt `uri`, else docker/batch.Dockerfile."""
        return prebuilt_image(scope, "BatchImage", uri) if uri else self._image(BATCH_DOCKERFILE)

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


def prebuilt_image(scope: Construct, id: str, uri: str) -> ecs.ContainerImage:
    """An image built elsewhere. An ECR image (tag or digest) goes through its repository, so
    the execution role gets pull permission on exactly that repository; any other
    reference is pulled as it is (a public registry, or a local name for an emulator)."""
    match = _ECR_IMAGE.match(uri)
    if match is None:
        return ecs.ContainerImage.from_registry(uri)
    stack = cdk.Stack.of(scope)
    repository = ecr.Repository.from_repository_attributes(
        scope,
        id,
        repository_name=match["repository"],
        repository_arn=f"arn:{stack.partition}:ecr:{match['region']}:{match['account']}:"
        f"repository/{match['repository']}",
    )
    return ecs.ContainerImage.from_ecr_repository(
        repository, match["digest"] or match["tag"] or "latest"
    )


def _placeholder(stack_name: str) -> Path:
    """A directory holding only a note: what a stack synthesized without bundling deploys."""
    directory = Path(tempfile.mkdtemp(prefix="dsc-unbundled-"))
    (directory / UNBUNDLED_NOTE).write_text(
        f"The scorer code of {stack_name} was not bundled in this synth (the CDK CLI skipped\n"
        "bundling for it). Deploy the stack itself so `dsc bundle lambda` runs.\n"
    )
    return directory
