"""stacks/config.py: context -> frozen, validated dataclasses; bad values name key and fix."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from stacks.config import (
    LOCAL_ACCOUNT,
    LOCAL_BATCH_IMAGE,
    LOCAL_SERVING_IMAGE,
    LOG_RETENTION_DAYS,
    BatchSettings,
    ConfigError,
    EnvironmentConfig,
    ModelRef,
    ServingSettings,
    StreamSettings,
    load_config,
    load_config_file,
    local_environment,
)

MakeContext = Callable[..., dict[str, Any]]


def test_repository_config_has_two_teams_with_two_stages_each(repo_context: dict[str, Any]) -> None:
    config = load_config(repo_context)

    assert len(config.teams) >= 2
    for team in config.teams:
        stages = {env.stage for env in config.environments if env.team == team}
        assert {"dev", "prod"} <= stages


def test_stage_overrides_are_deep_merged_over_defaults(stage_settings: MakeContext) -> None:
    # given defaults for the whole serving section and one override inside it
    raw = stage_settings(serving={"max_tasks": 5})
    raw["defaults"]["serving"] = {"min_tasks": 2, "cpu": 1024, "memory_mib": 4096}

    env = load_config(raw).environment("recs", "dev")

    assert (env.serving.min_tasks, env.serving.max_tasks) == (2, 5)
    assert (env.serving.cpu, env.serving.memory_mib) == (1024, 4096)


def test_unset_values_take_secure_defaults(stage_settings: MakeContext) -> None:
    env = load_config(stage_settings()).environment("recs", "dev")

    assert env.name == "dsc-recs-dev"
    assert env.models == (ModelRef("churn", "prod"),)
    assert env.vpc_id is None
    assert env.serving.internet_facing is False
    assert env.serving.certificate_arn is None
    assert env.batch.spot is False
    assert env.nightly_model == ModelRef("churn", "prod")


def test_config_objects_are_frozen(stage_settings: MakeContext) -> None:
    env = load_config(stage_settings()).environment("recs", "dev")

    with pytest.raises(dataclasses.FrozenInstanceError):
        env.stream.shards = 4  # type: ignore[misc]


def test_nightly_model_can_differ_from_the_served_ones(stage_settings: MakeContext) -> None:
    raw = stage_settings(batch={"nightly_model": "upsell@champion"})

    env = load_config(raw).environment("recs", "dev")

    assert str(env.nightly_model) == "upsell@champion"


@pytest.mark.parametrize(
    ("overrides", "key", "hint"),
    [
        ({"serving": {"cpu": 300}}, "serving.cpu", "256, 512, 1024"),
        ({"serving": {"cpu": 256, "memory_mib": 4096}}, "serving.memory_mib", "512, 1024, 2048"),
        ({"serving": {"min_tasks": 3, "max_tasks": 2}}, "serving.max_tasks", "min_tasks"),
        ({"serving": {"ingress_cidrs": ["10.0.0.1/8"]}}, "serving.ingress_cidrs[0]", "IPv4 CIDR"),
        ({"serving": {"internet_facing": "yes"}}, "serving.internet_facing", "true or false"),
        ({"serving": {"certificate_arn": "my-cert"}}, "serving.certificate_arn", "ACM"),
        ({"serving": {"domain_name": "Models_Example"}}, "serving.domain_name", "DNS name"),
        ({"serving": {"domain_name": "models.example.com"}}, "serving.domain_name", "together"),
        (
            {
                "serving": {
                    "certificate_arn": "arn:aws:acm:eu-west-1:111111111111:certificate/"
                    "12345678-1234-1234-1234-123456789012"
                }
            },
            "serving.domain_name",
            "a name the certificate covers",
        ),
        ({"stream": {"shards": 0}}, "stream.shards", "from 1 to 500"),
        ({"stream": {"parallelization_factor": 11}}, "stream.parallelization_factor", "1 to 10"),
        ({"stream": {"batch_size": True}}, "stream.batch_size", "integer"),
        ({"stream": {"drift_psi_alarm": 0}}, "stream.drift_psi_alarm", "number from 0.01 to 10"),
        ({"stream": {"drift_psi_alarm": "high"}}, "stream.drift_psi_alarm", "number"),
        ({"stream": {"drift_window_seconds": 30}}, "stream.drift_window_seconds", "60 to 86400"),
        ({"stream": {"shard": 1}}, "stream.shard", "valid keys: batch_size"),
        ({"batch": {"drift_psi_alarm": 11}}, "batch.drift_psi_alarm", "number from 0.01 to 10"),
        ({"batch": {"drift_psi_alarm": True}}, "batch.drift_psi_alarm", "number"),
        ({"batch": {"schedule": "nightly"}}, "batch.schedule", "cron("),
        ({"batch": {"shard_count": 10001}}, "batch.shard_count", "1 to 10000"),
        ({"batch": {"output_prefix": "models/out/"}}, "batch.output_prefix", "models/"),
        (
            {"batch": {"input_prefix": "data/", "output_prefix": "data/out/"}},
            "batch.output_prefix",
            "nest",
        ),
        ({"batch": {"nightly_model": "churn"}}, "batch.nightly_model", "name@alias"),
        ({"retention_days": 10}, "retention_days", "7, 14, 30"),
        ({"vpc_id": "vpc-xyz"}, "vpc_id", "vpc-0123456789abcdef0"),
        ({"models": []}, "models", "name@alias"),
        ({"models": ["churn@prod", "fraud"]}, "models[1]", "name@alias"),
        ({"account": "12345"}, "account", "12 digits"),
        ({"region": "Europe"}, "region", "eu-west-1"),
        ({"colour": "blue"}, "colour", "valid keys: account"),
    ],
)
def test_an_invalid_value_names_its_key_and_the_valid_values(
    stage_settings: MakeContext, overrides: dict[str, Any], key: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(stage_settings(**overrides))

    assert raised.value.key == f"dscloud.teams.recs.stages.dev.{key}"
    assert str(raised.value).startswith(f"dscloud.teams.recs.stages.dev.{key}: ")
    assert hint in str(raised.value)


def test_retention_days_lists_every_cloudwatch_value(stage_settings: MakeContext) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(stage_settings(retention_days=2))

    assert ", ".join(map(str, LOG_RETENTION_DAYS)) in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (None, "dscloud"),
        ({"teams": {}}, "dscloud.teams"),
        ({"teams": {"Recs": {"stages": {"dev": {}}}}}, "dscloud.teams.Recs"),
        ({"teams": {"recs": {"stages": {}}}}, "dscloud.teams.recs.stages"),
        ({"teams": {"recs": {"stages": {"Dev-1": {}}}}}, "dscloud.teams.recs.stages.Dev-1"),
        ({"teams": {"recs": {"stages": {"dev": {}}, "owner": "x"}}}, "dscloud.teams.recs.owner"),
        ({"teams": {"recs": {"stages": {"dev": {}}}}}, "dscloud.teams.recs.stages.dev.account"),
    ],
)
def test_structural_errors_name_their_key(raw: Any, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(raw)

    assert raised.value.key == key


def test_the_longest_names_still_fit_an_s3_bucket_name() -> None:
    raw = {
        "defaults": {"account": "111111111111", "region": "ap-southeast-4", "models": ["m@a"]},
        "teams": {"recommender1": {"stages": {"staging1": {}}}},
    }

    env = load_config(raw).environments[0]

    assert len(f"{env.name}-archive-{env.account}-{env.region}") <= 63


def test_a_cdk_json_file_is_read_from_its_context(cdk_json_copy: Any) -> None:
    config = load_config_file(cdk_json_copy)

    assert config.environments


def test_every_unset_value_is_its_dataclass_default(stage_settings: MakeContext) -> None:
    # The defaults are declared once, on the dataclass fields; the readers take them there.
    env = load_config(stage_settings()).environment("recs", "dev")

    for settings, cls in (
        (env.stream, StreamSettings),
        (env.serving, ServingSettings),
        (env.batch, BatchSettings),
    ):
        assert settings == cls()
    defaults = EnvironmentConfig(
        team="recs", stage="dev", account="111111111111", region="eu-west-1", models=env.models
    )
    assert env == defaults


@pytest.mark.parametrize(
    ("overrides", "key", "hint"),
    [
        ({"serving": {"image": "Not An Image"}}, "serving.image", "image reference"),
        ({"batch": {"image": 7}}, "batch.image", "image reference"),
        (
            {"restrict_default_security_group": "no"},
            "restrict_default_security_group",
            "true or false",
        ),
        ({"cross_stack_references": "medium"}, "cross_stack_references", "weak, strong"),
    ],
)
def test_the_deploy_options_are_validated(
    stage_settings: MakeContext, overrides: dict[str, Any], key: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(stage_settings(**overrides))

    assert raised.value.key == f"dscloud.teams.recs.stages.dev.{key}"
    assert hint in str(raised.value)


def test_prebuilt_images_accept_tags_digests_and_registries(stage_settings: MakeContext) -> None:
    digest = "sha256:" + "0f" * 32
    image = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/dsc/serving@{digest}"
    raw = stage_settings(serving={"image": image}, batch={"image": "ghcr.io/acme/batch:1.4"})

    env = load_config(raw).environment("recs", "dev")

    assert (env.serving.image, env.batch.image) == (image, "ghcr.io/acme/batch:1.4")


def test_the_local_target_is_one_environment_adapted_for_moto(repo_context: dict[str, Any]) -> None:
    config = load_config(repo_context)

    local = local_environment(config, "dsc-recs-dev")

    configured = config.environment("recs", "dev")
    assert local.account == LOCAL_ACCOUNT
    assert (local.serving.image, local.batch.image) == (LOCAL_SERVING_IMAGE, LOCAL_BATCH_IMAGE)
    assert local.restrict_default_security_group is False
    assert local.cross_stack_references == "strong"
    # everything else is the environment as configured
    assert (
        dataclasses.replace(
            local,
            account=configured.account,
            restrict_default_security_group=True,
            cross_stack_references="weak",
            serving=configured.serving,
            batch=configured.batch,
        )
        == configured
    )
    with pytest.raises(ConfigError, match="dsc-recs-dev"):
        local_environment(config, "dsc-nope-dev")
