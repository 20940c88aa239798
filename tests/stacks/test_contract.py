"""The contract between the stacks and the runtime, checked on both sides' real code.

- every environment variable a stack sets is read by the runtime's `Settings` (changing
  it changes the settings), and each role gets the variables its runtime needs;
- every job command names only parameters the job definition has;
- a model reference is valid in cdk.json exactly when the runtime reads it as the same
  NAME@ALIAS. The stacks may not import the runtime (they synthesize without it
  installed), so `stacks.config` restates the rule and this test holds the two equal.

The deployed commands are run for real, with the real CLI, by tests/stacks/local/.
"""

from __future__ import annotations

from typing import Any

import pytest

from dscloud.archive import Ref
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
    "dsc-recs-dev-score": {"DSC_ARCHIVE", "DSC_SHARD_COUNT"},
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
