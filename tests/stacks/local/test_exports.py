"""`python -m stacks.local env`: export lines from a `cdk deploy --outputs-file` file.

The local deploy's own file is read in test_local.py against the running deploy; here, the
shapes a deploy to AWS writes, and what happens when the file does not fit.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dscloud.settings import Settings
from stacks.local.__main__ import environment_exports, main
from stacks.local.exports import EXPORTS, OutputsError, exports, read_outputs


def outputs_of(environment: str, key: Any) -> dict[str, dict[str, str]]:
    """What `cdk deploy --outputs-file` writes for one environment, its stacks keyed by `key`."""
    return {
        key(environment, "Archive"): {
            "ArchiveBucketName": f"{environment}-archive",
            "ArchiveUri": f"s3://{environment}-archive/archive",
            "ArchiveKeyArn": "arn:aws:kms:eu-west-1:111111111111:key/1",
        },
        key(environment, "Online"): {
            "StreamName": f"{environment}-events",
            "PredictionsTableName": f"{environment}-predictions",
            "RejectsQueueUrl": f"https://sqs.eu-west-1.amazonaws.com/111111111111/{environment}-rejects",
        },
        key(environment, "Batch"): {
            "JobQueueName": f"{environment}-queue",
            "ScoringInputUri": f"s3://{environment}-archive/input/",
            "ScoringOutputUri": f"s3://{environment}-archive/output/",
        },
        key(environment, "Network"): {"VpcId": "vpc-1"},
    }


def by_stack_name(environment: str, stack: str) -> str:
    return f"{environment}-{stack}"


def by_artifact_id(environment: str, stack: str) -> str:
    # a stack inside a stage: its path with the dashes dropped and a hash appended
    return environment.replace("-", "") + stack + "1A2B3C4D".lower()


def parsed(lines: str) -> dict[str, str]:
    return {
        name: shlex.split(value, comments=True)[0]
        for name, _, value in (
            line.removeprefix("export ").partition("=") for line in lines.splitlines()
        )
    }


@pytest.mark.parametrize("key", [by_stack_name, by_artifact_id])
def test_an_aws_outputs_file_becomes_exports_settings_reads(tmp_path: Path, key: Any) -> None:
    # given the outputs file of two environments deployed to AWS
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs_of("dsc-recs-dev", key) | outputs_of("dsc-recs-prod", key)))

    # when the exports of one are printed
    env = parsed(environment_exports("dsc-recs-prod", path))

    # then they name that environment's resources, and no AWS_* line overrides the caller's
    assert env["DSC_STREAM"] == "dsc-recs-prod-events"
    assert env["DSC_SCORING_OUTPUT"] == "s3://dsc-recs-prod-archive/output/"
    assert not any(name.startswith("AWS_") for name in env)
    settings = Settings.from_env(env)
    assert settings.archive == "s3://dsc-recs-prod-archive/archive"
    assert settings.predictions_table == "dsc-recs-prod-predictions"
    assert settings.rejects_queue_url is not None
    assert settings.rejects_queue_url.endswith("/dsc-recs-prod-rejects")
    assert list(env) == [variable for variable, *_ in EXPORTS]


def test_an_environment_name_must_be_given_when_the_file_holds_several() -> None:
    both = outputs_of("dsc-recs-dev", by_stack_name) | outputs_of("dsc-recs-prod", by_stack_name)
    with pytest.raises(OutputsError, match="2 environments"):
        exports(both, None)
    assert exports(outputs_of("dsc-recs-dev", by_stack_name), None)["DSC_STREAM"] == (
        "dsc-recs-dev-events"
    )
    with pytest.raises(OutputsError, match="no stacks of dsc-ads-dev"):
        exports(both, "dsc-ads-dev")


def test_a_missing_output_is_named() -> None:
    outputs = outputs_of("dsc-recs-dev", by_stack_name)
    del outputs["dsc-recs-dev-Online"]["RejectsQueueUrl"]
    with pytest.raises(OutputsError, match="RejectsQueueUrl of the Online stack"):
        exports(outputs, "dsc-recs-dev")


def test_a_value_with_shell_characters_stays_one_word(tmp_path: Path) -> None:
    outputs = outputs_of("dsc-recs-dev", by_stack_name)
    outputs["dsc-recs-dev-Batch"]["ScoringInputUri"] = "s3://b/in put/$(x)"
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    lines = environment_exports(None, path)
    shell = subprocess.run(
        ["bash", "-c", f'{lines}\nprintf %s "$DSC_SCORING_INPUT"'],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert shell.stdout == "s3://b/in put/$(x)"


def test_without_a_deploy_the_command_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(OutputsError, match="deploy first"):
        read_outputs(tmp_path / "none.json")
    assert main(["env", "--outputs-file", str(tmp_path / "none.json")]) == 1
    assert "deploy first" in capsys.readouterr().err
