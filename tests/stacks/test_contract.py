"""The contract between the stacks and the runtime, checked on both sides' real code.

- every environment variable a stack sets is read by the runtime's `Settings` (changing
  it changes the settings), and each role gets the variables its runtime needs;
- every job command names only parameters the job definition has, and parses with the
  real parser of the program it runs (`dsc`, or the example training script's own);
- a model reference is valid in cdk.json exactly when the runtime reads it as the same
  NAME@ALIAS. The stacks may not import the runtime (they synthesize without it
  installed), so `stacks.config` restates the rule and this test holds the two equal.

The deployed commands are run for real, with the real CLI, by tests/stacks/local/; the
nightly job's drift metrics are published (moto) and compared with the alarms that watch
them here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from dscloud import cli, example
from dscloud.archive import Archive, Ref
from dscloud.errors import ConfigError as RuntimeConfigError
from dscloud.settings import Settings
from stacks.config import ConfigError, load_config

# Read by AWS Lambda Powertools in the handler, not by Settings.
POWERTOOLS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
# What each role's runtime cannot work without.
REQUIRED = {
    "scorer function": {
        "DSC_ARCHIVE",
        "DSC_MODELS",
        "DSC_PREDICTIONS_TABLE",
        "DSC_REJECTS_QUEUE_URL",
    },
    "serving task": {"DSC_ARCHIVE", "DSC_MODELS"},
    "dsc-recs-dev-train": {"DSC_ARCHIVE"},
    "dsc-recs-dev-score": {
        "DSC_ARCHIVE",
        "DSC_SHARD_COUNT",
        "DSC_METRICS_NAMESPACE",
        "DSC_METRICS_SERVICE",
    },
}


def _text(value: Any) -> str:
    # A token (Ref, Fn::Join...) stands for a name resolved at deploy time.
    return value if isinstance(value, str) else "resolved-at-deploy"


def environments(platform: Any, env: str) -> dict[str, dict[str, str]]:
    """The environment variables set per role, from the synthesized templates."""
    found: dict[str, dict[str, str]] = {}
    online = platform.template_json(env, "Online")["Resources"].values()
    for resource in online:
        if resource["Type"] == "AWS::Lambda::Function" and "Environment" in resource["Properties"]:
            variables = resource["Properties"]["Environment"]["Variables"]
            found["scorer function"] = {k: _text(v) for k, v in variables.items()}
    for resource in platform.template_json(env, "Serving")["Resources"].values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            (container,) = resource["Properties"]["ContainerDefinitions"]
            found["serving task"] = {e["Name"]: _text(e["Value"]) for e in container["Environment"]}
    for resource in platform.template_json(env, "Batch")["Resources"].values():
        if resource["Type"] == "AWS::Batch::JobDefinition":
            properties = resource["Properties"]
            container = properties["ContainerProperties"]
            found[properties["JobDefinitionName"]] = {
                e["Name"]: _text(e["Value"]) for e in container.get("Environment", [])
            }
    return found


def test_every_variable_a_stack_sets_is_read_by_settings(platform: Any, dev_env: str) -> None:
    roles = environments(platform, dev_env)
    assert set(roles) == set(REQUIRED)
    for role, variables in roles.items():
        # given the role's environment as deployed, with valid values where tokens stand
        env = {
            k: ("7" if k.endswith(("_COUNT", "_SECONDS", "_ROWS")) else v)
            for k, v in variables.items()
        }
        settings = Settings.from_env(env)
        for name in set(env) - POWERTOOLS:
            # when one variable is left out, then the settings differ: Settings read it
            without = Settings.from_env({k: v for k, v in env.items() if k != name})
            assert without != settings, f"{role} sets {name}, which Settings never reads"


def test_every_role_gets_what_its_runtime_needs(platform: Any, dev_env: str) -> None:
    for role, variables in environments(platform, dev_env).items():
        assert REQUIRED[role] <= set(variables), f"{role} lacks {REQUIRED[role] - set(variables)}"


def test_job_commands_use_only_their_own_parameters(platform: Any, dev_env: str) -> None:
    for resource in platform.template_json(dev_env, "Batch")["Resources"].values():
        if resource["Type"] != "AWS::Batch::JobDefinition":
            continue
        command = resource["Properties"]["ContainerProperties"]["Command"]
        refs = {word[len("Ref::") :] for word in command if word.startswith("Ref::")}
        assert refs == set(resource["Properties"].get("Parameters", {})), command


REPO = Path(__file__).resolve().parents[2]
# docker/batch.Dockerfile copies the training script here.
TRAINING_SCRIPT = ("python", "/opt/dsc/examples/train_churn.py")


def job_definitions(platform: Any, env: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each job definition's (command, parameter defaults), the command as AWS Batch would
    run it with no parameters submitted: every ``Ref::name`` word replaced by its default."""
    found = {}
    for resource in platform.template_json(env, "Batch")["Resources"].values():
        if resource["Type"] != "AWS::Batch::JobDefinition":
            continue
        properties = resource["Properties"]
        defaults = {k: _text(v) for k, v in properties.get("Parameters", {}).items()}
        command = [
            defaults[word[len("Ref::") :]] if word.startswith("Ref::") else word
            for word in properties["ContainerProperties"]["Command"]
        ]
        found[properties["JobDefinitionName"]] = (command, defaults)
    return found


class _Parsed(Exception):
    """Raised instead of running the training once its parser has accepted the command."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def parse_training(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Parse `argv` with examples/train_churn.py's own parser (its main builds it inline),
    stopping before any training; argparse's SystemExit(2) on a flag it does not know."""
    spec = importlib.util.spec_from_file_location("train_churn", REPO / "examples/train_churn.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(parse_args(self, *args, **kwargs))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(_Parsed) as parsed:
            module.main(argv)
    return parsed.value.namespace


def parse_job_command(command: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The namespace the job's program makes of `command`; SystemExit when it refuses it."""
    if command[0] == "dsc":
        return cli.parser().parse_args(command[1:])
    if tuple(command[:2]) == TRAINING_SCRIPT:
        return parse_training(command[2:], monkeypatch)
    raise AssertionError(f"no parser known for the program of {command}")


def test_every_job_command_parses_with_its_programs_real_parser(
    platform: Any, dev_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = job_definitions(platform, dev_env)
    assert set(jobs) == {f"{dev_env}-train", f"{dev_env}-score"}
    # the training job trains on its data parameter and promotes to staging
    command, defaults = jobs[f"{dev_env}-train"]
    training = parse_job_command(command, monkeypatch)
    assert training.data == defaults["data"] and training.data.startswith("s3://")
    assert training.promote == "staging"
    # the scoring job runs `dsc score` on its model, input and output parameters
    command, defaults = jobs[f"{dev_env}-score"]
    scoring = parse_job_command(command, monkeypatch)
    assert scoring.run.__name__ == "cmd_score"
    assert (scoring.model, scoring.input, scoring.output) == (
        defaults["model"],
        defaults["input"],
        defaults["output"],
    )


@pytest.mark.parametrize("job", ["train", "score"])
def test_a_flag_the_program_does_not_know_fails_the_parse(
    platform: Any, dev_env: str, monkeypatch: pytest.MonkeyPatch, job: str
) -> None:
    # given a job command as a stack might drift into writing it
    command = [*job_definitions(platform, dev_env)[f"{dev_env}-{job}"][0], "--no-such-flag", "x"]
    # then the real parser refuses it, so the contract test above would fail
    with pytest.raises(SystemExit) as refused:
        parse_job_command(command, monkeypatch)
    assert refused.value.code == 2


# Each case: the reference, and whether cdk.json may name it (an alias).
REFERENCES = [
    ("churn@production", True),
    ("churn@staging", True),
    ("Churn.v2@prod_1", True),
    ("m@a", True),
    ("churn@prod.v2", False),  # '.' is a name character, not an alias one
    ("9churn@production", False),  # a name starts with a letter
    ("churn@2024", False),  # a number is a version, not an alias
    ("churn@9prod", False),
    ("churn", False),
    ("churn@", False),
    ("@prod", False),
    ("a/b@prod", False),
    ("churn@prod@x", False),
    ("x" * 65 + "@prod", False),
    ("churn@" + "p" * 64, True),
    ("churn@" + "p" * 65, False),
]


def stacks_accept(reference: str) -> tuple[str, str] | None:
    context = {
        "defaults": {"account": "111111111111", "region": "eu-west-1", "models": [reference]},
        "teams": {"recs": {"stages": {"dev": {}}}},
    }
    try:
        (env,) = load_config(context).environments
    except ConfigError:
        return None
    return env.models[0].name, env.models[0].alias


def runtime_reads(reference: str) -> tuple[str, str] | None:
    try:
        ref = Ref.parse(reference)
    except RuntimeConfigError:
        return None
    if ref.path is not None or ref.alias is None:
        return None
    return ref.name, ref.alias


@pytest.mark.parametrize(("reference", "alias"), REFERENCES)
def test_a_model_reference_means_the_same_to_the_stacks_and_the_runtime(
    reference: str, alias: bool
) -> None:
    assert (stacks_accept(reference) is not None) == alias
    assert stacks_accept(reference) == runtime_reads(reference)


def test_the_nightly_job_publishes_exactly_what_its_drift_alarms_watch(
    platform: Any,
    dev_env: str,
    archive: Archive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both sides on the same input: the synthesized alarms, and the scoring job run as
    AWS Batch runs it (its command, its environment, every child of its array) against
    moto's CloudWatch. (moto creates no alarm from a template: they are read from it.)"""
    # given the synthesized batch stack: its drift alarms and its scoring job
    template = platform.template_json(dev_env, "Batch")
    alarms = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    command, defaults = job_definitions(platform, dev_env)[f"{dev_env}-score"]
    variables = environments(platform, dev_env)[f"{dev_env}-score"]
    # and its model alias, input and output made local (only CloudWatch is AWS here)
    model = Ref.parse(defaults["model"])
    assert model.alias is not None
    if model.alias != "production":
        archive.promote(model.name, 1, model.alias, by="tests")
    data = tmp_path / "input" / "users.parquet"
    data.parent.mkdir()
    frame = example.churn_data(2000, seed=5)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data, row_group_size=250)
    local = {defaults["input"]: str(data.parent), defaults["output"]: str(tmp_path / "out")}
    argv = [local.get(word, word) for word in command[1:]]
    for name, value in variables.items():
        monkeypatch.setenv(name, archive.uri if name == "DSC_ARCHIVE" else value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_CLOUDWATCH"):
        monkeypatch.delenv(name, raising=False)

    with mock_aws():
        # when every child of the array job runs (the last one completes the run)
        for index in range(int(variables["DSC_SHARD_COUNT"])):
            monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", str(index))
            assert cli.main(argv) == 0

        # then each alarm's namespace, metric and dimensions name a published metric
        success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
        expected = {
            "DriftPredictionPsi": success["drift"]["prediction"]["psi"],
            "DriftWorstFeaturePsi": success["drift"]["worst_feature_psi"],
        }
        client = boto3.client("cloudwatch", region_name="us-east-1")
        assert sorted(alarm["MetricName"] for alarm in alarms) == sorted(expected)
        for alarm in alarms:
            watched = sorted((d["Name"], d["Value"]) for d in alarm["Dimensions"])
            found = [
                m
                for m in client.list_metrics(
                    Namespace=alarm["Namespace"], MetricName=alarm["MetricName"]
                )["Metrics"]
                if sorted((d["Name"], d["Value"]) for d in m["Dimensions"]) == watched
            ]
            assert len(found) == 1, (alarm["MetricName"], watched)
            now = datetime.now(UTC)
            (point,) = client.get_metric_statistics(
                Namespace=alarm["Namespace"],
                MetricName=alarm["MetricName"],
                Dimensions=alarm["Dimensions"],
                StartTime=now - timedelta(seconds=alarm["Period"]),
                EndTime=now + timedelta(minutes=5),
                Period=alarm["Period"],
                Statistics=[alarm["Statistic"]],
            )["Datapoints"]
            assert point[alarm["Statistic"]] == pytest.approx(expected[alarm["MetricName"]])
