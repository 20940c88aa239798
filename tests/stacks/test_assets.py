"""stacks/assets.py: the scorer bundle (local bundling or a pre-built directory) and images."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Match, Template

from stacks.assets import (
    BATCH_DOCKERFILE,
    BUNDLE_DIR_VARIABLE,
    LAMBDA_PYTHON_VERSION,
    SERVING_DOCKERFILE,
    UNBUNDLED_NOTE,
    AssetSources,
    LambdaBundleError,
    LambdaBundler,
)

WRITE_MARKER = (
    "import sys, pathlib; out = pathlib.Path(sys.argv[sys.argv.index('--dir') + 1]); "
    "(out / 'marker.txt').write_text(' '.join(sys.argv[1:]))"
)


def test_default_command_is_dsc_bundle_lambda_for_the_lambda_python(tmp_path: Path) -> None:
    bundler = LambdaBundler(repo_root=tmp_path)

    assert bundler.command[:5] == [sys.executable, "-m", "dscloud.cli", "bundle", "lambda"]
    assert bundler.command[5:9] == ["--python-version", LAMBDA_PYTHON_VERSION, "--arch", "x86_64"]
    assert bundler.command[9:] == [
        "--runtime",
        f"{tmp_path}/runtime",
        "--requirements",
        f"{tmp_path}/docker/requirements-lambda.txt",
    ]


def test_bundler_fills_the_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    bundler = LambdaBundler(repo_root=tmp_path, command=[sys.executable, "-c", WRITE_MARKER])

    assert bundler.try_bundle(str(out), None) is True
    assert (out / "marker.txt").read_text() == f"--dir {out}"


def test_a_failing_bundle_command_raises_with_its_output_and_a_way_out(tmp_path: Path) -> None:
    fail = "import sys; print('No module named dscloud.cli', file=sys.stderr); sys.exit(3)"
    bundler = LambdaBundler(repo_root=tmp_path, command=[sys.executable, "-c", fail])

    with pytest.raises(LambdaBundleError) as raised:
        bundler.try_bundle(str(tmp_path), None)

    message = str(raised.value)
    assert "exit status 3" in message
    assert "No module named dscloud.cli" in message
    assert BUNDLE_DIR_VARIABLE in message


def test_a_missing_bundle_program_raises(tmp_path: Path) -> None:
    bundler = LambdaBundler(repo_root=tmp_path, command=[str(tmp_path / "no-such-python")])

    with pytest.raises(LambdaBundleError, match="no-such-python"):
        bundler.try_bundle(str(tmp_path), None)


def test_prebuilt_bundle_directory_comes_from_the_environment(tmp_path: Path) -> None:
    sources = AssetSources.from_environ(tmp_path, {BUNDLE_DIR_VARIABLE: str(tmp_path)})

    assert sources.lambda_bundle_dir == tmp_path.resolve()
    assert AssetSources.from_environ(tmp_path, {}).lambda_bundle_dir is None
    with pytest.raises(LambdaBundleError, match="not a directory"):
        AssetSources.from_environ(tmp_path, {BUNDLE_DIR_VARIABLE: str(tmp_path / "missing")})


def _function_template(sources: AssetSources, outdir: Path, **context: Any) -> Template:
    app = cdk.App(outdir=str(outdir), context=context)
    stack = cdk.Stack(app, "Stack")
    lambda_.Function(
        stack,
        "Scorer",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="h.h",
        code=sources.scorer_code(stack),
    )
    app.synth()
    return Template.from_stack(stack)


def test_local_bundling_runs_the_bundle_command_at_synth(tmp_path: Path) -> None:
    # given a runtime folder and a stand-in for `dsc bundle lambda`
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    sources = AssetSources(repo_root=tmp_path, bundle_command=(sys.executable, "-c", WRITE_MARKER))

    _function_template(sources, tmp_path / "cdk.out")

    bundled = list((tmp_path / "cdk.out").glob("asset.*/marker.txt"))
    assert len(bundled) == 1


def test_bundling_is_skipped_when_no_stack_is_bundled(tmp_path: Path) -> None:
    (tmp_path / "runtime").mkdir()
    fail = (sys.executable, "-c", "raise SystemExit(9)")
    sources = AssetSources(repo_root=tmp_path, bundle_command=fail)

    template = _function_template(sources, tmp_path / "cdk.out", **{"aws:cdk:bundling-stacks": []})

    template.resource_count_is("AWS::Lambda::Function", 1)


def test_a_skipped_bundle_is_a_placeholder_never_the_repository(tmp_path: Path) -> None:
    # given a repository whose bundling is skipped for the stack (as `cdk deploy
    # --exclusively` of another stack does)
    repo = _fake_repo(tmp_path / "repo")
    sources = AssetSources(repo_root=repo, bundle_command=(sys.executable, "-c", WRITE_MARKER))
    outdir = tmp_path / "cdk.out"

    # when it is synthesized
    _function_template(sources, outdir, **{"aws:cdk:bundling-stacks": []})

    # then the staged code is the note alone, under a hash of its own
    (code_hash, asset), *_ = _zip_assets(outdir).items()
    staged = outdir / asset["source"]["path"]
    assert staged.resolve() != repo.resolve()
    assert [p.name for p in staged.iterdir()] == [UNBUNDLED_NOTE]
    bundled = tmp_path / "bundled"
    _function_template(sources, bundled)
    assert code_hash not in _zip_assets(bundled)


def _zip_assets(outdir: Path) -> dict[str, Any]:
    files = json.loads((outdir / "Stack.assets.json").read_text())["files"]
    return {h: a for h, a in files.items() if a["source"].get("packaging") == "zip"}


def test_prebuilt_images_are_used_as_given_and_ecr_ones_get_a_pull_grant(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    ecr_image = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/dsc/serving@{digest}"
    sources = AssetSources(repo_root=tmp_path)
    app = cdk.App(outdir=str(tmp_path / "cdk.out"))
    stack = cdk.Stack(app, "Stack")
    task = cdk.aws_ecs.FargateTaskDefinition(stack, "Task")
    task.add_container("serving", image=sources.serving_image(stack, ecr_image))
    task.add_container("batch", image=sources.batch_image(stack, "dscloud-batch:local"))

    template = Template.from_stack(stack)

    images = [
        json.dumps(c["Image"])
        for c in template.find_resources("AWS::ECS::TaskDefinition").popitem()[1]["Properties"][
            "ContainerDefinitions"
        ]
    ]
    assert "dsc/serving@" + digest in images[0]
    assert images[1] == '"dscloud-batch:local"'
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Action": Match.array_with(["ecr:BatchGetImage"])})]
                )
            }
        },
    )
    assert not list((tmp_path / "cdk.out").glob("*.assets.json")) or not json.loads(
        next((tmp_path / "cdk.out").glob("*.assets.json")).read_text()
    ).get("dockerImages")


def test_prebuilt_bundle_is_used_as_it_is(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "dscloud").mkdir(parents=True)
    (bundle / "dscloud" / "__init__.py").write_text("")
    sources = AssetSources(repo_root=tmp_path, lambda_bundle_dir=bundle)

    template = _function_template(sources, tmp_path / "cdk.out")

    template.has_resource_properties(
        "AWS::Lambda::Function", {"Code": {"S3Key": Match.string_like_regexp(r"\.zip$")}}
    )
    staged = list((tmp_path / "cdk.out").glob("asset.*/dscloud/__init__.py"))
    assert len(staged) == 1


@pytest.mark.parametrize("dockerfile", [SERVING_DOCKERFILE, BATCH_DOCKERFILE])
def test_images_are_built_from_the_repository_dockerfiles(
    platform: Any, dev_env: str, dockerfile: str, read_assets: Callable[[str, str], dict[str, Any]]
) -> None:
    stack = "Serving" if dockerfile == SERVING_DOCKERFILE else "Batch"

    images = read_assets(dev_env, stack)["dockerImages"].values()

    assert [image["source"]["dockerFile"] for image in images] == [dockerfile]
    assert all(image["source"]["platform"] == "linux/amd64" for image in images)


def _fake_repo(root: Path) -> Path:
    for name, text in {
        "runtime/pyproject.toml": "[project]\nname = 'dscloud'\n",
        "runtime/dscloud/__init__.py": "",
        "docker/requirements-lambda.txt": "numpy==2.0.0\n",
        "docker/requirements-serving.txt": "numpy==2.0.0\n",
        "docker/serving.Dockerfile": "FROM python:3.11-slim\nCOPY runtime/ runtime/\n",
        "docker/serving.Dockerfile.dockerignore": "*\n!runtime/\n!docker/requirements-serving.txt\n",
        "docker/batch.Dockerfile": "FROM python:3.11-slim\n",
        "stacks/app.py": "",
        "README.md": "",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _asset_hashes(repo: Path) -> tuple[str, str, str]:
    """(scorer code, serving image, batch image) hashes as built over `repo`; no synth needed."""
    sources = AssetSources(repo_root=repo)
    app = cdk.App(context={"aws:cdk:bundling-stacks": [], "aws:cdk:disable-asset-staging": True})
    stack = cdk.Stack(app, "Stack")
    lambda_.Function(
        stack,
        "Scorer",
        runtime=lambda_.Runtime.PYTHON_3_12,
        handler="h.h",
        code=sources.scorer_code(stack),
    )
    task = cdk.aws_ecs.FargateTaskDefinition(stack, "Task")
    task.add_container("serving", image=sources.serving_image(stack, None))
    task.add_container("batch", image=sources.batch_image(stack, None))
    constructs = stack.node.find_all()
    code = next(c for c in constructs if isinstance(c, cdk.aws_s3_assets.Asset))
    serving, batch = (c for c in constructs if isinstance(c, cdk.aws_ecr_assets.DockerImageAsset))
    return code.asset_hash, serving.asset_hash, batch.asset_hash


@pytest.mark.parametrize(
    ("changed", "changes"),
    [
        ("README.md", (False, False, False)),
        ("stacks/app.py", (False, False, False)),
        ("runtime/build/lib/dscloud/x.py", (False, False, False)),
        ("runtime/dscloud/__pycache__/x.pyc", (False, False, False)),
        ("runtime/dscloud/__init__.py", (True, True, True)),
        ("docker/requirements-lambda.txt", (True, False, True)),
        ("docker/requirements-serving.txt", (False, True, True)),
    ],
)
def test_assets_are_fingerprinted_on_what_they_are_built_from(
    tmp_path: Path, changed: str, changes: tuple[bool, bool, bool]
) -> None:
    # (scorer code, serving image with its own .dockerignore, batch image without one)
    repo = _fake_repo(tmp_path / "repo")
    before = _asset_hashes(repo)

    path = repo / changed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + "# changed\n")
    after = _asset_hashes(repo)

    assert tuple(b != a for b, a in zip(before, after, strict=True)) == changes
