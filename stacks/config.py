"""Platform configuration: the `dscloud` context of cdk.json as frozen, validated dataclasses.

The context is read once (by app.py) and handed to the stacks; no stack reads context.
Shape of the context block:

    "dscloud": {
      "defaults": { <stage settings> },
      "teams": {
        "recs": {"stages": {"dev": { <overrides> }, "prod": { <overrides> }}}
      }
    }

Stage settings are the defaults deep-merged with the stage's overrides. Every value is
checked here; a bad one raises `ConfigError` naming its key (e.g.
`dscloud.teams.recs.stages.dev.serving.cpu`) and the valid values. This module imports
nothing from CDK so that `stacks.team_add` can validate a cdk.json without jsii.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.context import (
    ConfigError,
    deep_merge,
    mapping,
    only_keys,
    read_bool,
    read_choice,
    read_cidr,
    read_int,
    read_optional_text,
    read_text,
)

__all__ = [
    "CONTEXT_KEY",
    "FARGATE_SIZES",
    "LOG_RETENTION_DAYS",
    "BatchSettings",
    "ConfigError",
    "EnvironmentConfig",
    "ModelRef",
    "PlatformConfig",
    "ServingSettings",
    "StreamSettings",
    "load_config",
    "load_config_file",
]

CONTEXT_KEY = "dscloud"

TEAM_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,11}$")
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,7}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_MODEL_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_MODEL_REF = re.compile(rf"^({_MODEL_PART})@({_MODEL_PART})$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_CERTIFICATE_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$")
# A DNS name (lower case, at least two labels), e.g. models.recs.example.com.
_DOMAIN_NAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SCHEDULE = re.compile(r"^(cron\(\S+( \S+){5}\)|rate\(\d+ (minute|minutes|hour|hours|day|days)\))$")
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*/$")
_TIMEZONE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$")

# The values CloudWatch Logs accepts for a log group's retention.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)  # fmt: skip

# Fargate task sizes: CPU units -> the memory sizes (MiB) allowed with it.
FARGATE_SIZES: Mapping[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}

# Longest name built from an environment: the archive's access-log bucket,
# "dsc-{team}-{stage}-logs-{account}-{region}" must fit S3's 63 characters.
_BUCKET_NAME_LIMIT = 63


@dataclass(frozen=True)
class ModelRef:
    """A model the environment serves, and the alias it follows (`churn@production`)."""

    name: str
    alias: str

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}"


@dataclass(frozen=True)
class StreamSettings:
    """The online path: Kinesis stream and the scorer Lambda's event source."""

    shards: int = 1
    batch_size: int = 100
    parallelization_factor: int = 1
    retry_attempts: int = 3
    max_record_age_seconds: int = 3600
    lambda_memory_mib: int = 1024
    lambda_timeout_seconds: int = 60
    iterator_age_alarm_seconds: int = 300


@dataclass(frozen=True)
class ServingSettings:
    """The Fargate service behind the load balancer."""

    min_tasks: int = 1
    max_tasks: int = 2
    cpu: int = 512
    memory_mib: int = 1024
    certificate_arn: str | None = None
    # The name the certificate covers: the endpoint's custom domain (with certificate_arn).
    domain_name: str | None = None
    internet_facing: bool = False
    # Who may reach the load balancer directly, bypassing the signed endpoint (unauthenticated);
    # empty (the default) means only the endpoint's VPC link.
    ingress_cidrs: tuple[str, ...] = ()
    target_cpu_percent: int = 60
    target_requests_per_task: int = 1000


@dataclass(frozen=True)
class BatchSettings:
    """The batch cluster: compute environments, jobs and the nightly scoring schedule."""

    max_vcpus: int = 16
    spot: bool = False
    schedule: str = "cron(0 2 * * ? *)"
    schedule_timezone: str = "UTC"
    shard_count: int = 4
    job_cpu: int = 1024
    job_memory_mib: int = 4096
    job_timeout_minutes: int = 240
    # Prefixes of the archive bucket: scoring reads input, writes output.
    input_prefix: str = "scoring/input/"
    output_prefix: str = "scoring/output/"
    # The model the nightly job scores; None means the environment's first model.
    nightly_model: ModelRef | None = None


@dataclass(frozen=True)
class EnvironmentConfig:
    """Everything one team environment (one CDK Stage, `dsc-{team}-{stage}`) needs."""

    team: str
    stage: str
    account: str
    region: str
    models: tuple[ModelRef, ...]
    vpc_id: str | None = None
    retention_days: int = 30
    noncurrent_version_days: int = 90
    refresh_seconds: int = 300
    stream: StreamSettings = field(default_factory=StreamSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)

    @property
    def name(self) -> str:
        """The environment's name, also the Stage id and the prefix of every named resource."""
        return f"dsc-{self.team}-{self.stage}"

    @property
    def nightly_model(self) -> ModelRef:
        """The model the nightly batch job scores."""
        return self.batch.nightly_model or self.models[0]


@dataclass(frozen=True)
class PlatformConfig:
    """All environments of the platform, in the order of cdk.json."""

    environments: tuple[EnvironmentConfig, ...]

    def environment(self, team: str, stage: str) -> EnvironmentConfig:
        """Return the environment of `team` x `stage`; raises KeyError if there is none."""
        for env in self.environments:
            if (env.team, env.stage) == (team, stage):
                return env
        raise KeyError(f"no environment dsc-{team}-{stage}")

    @property
    def teams(self) -> tuple[str, ...]:
        """The team names, each once."""
        return tuple(dict.fromkeys(env.team for env in self.environments))


_FIELDS = set(EnvironmentConfig.__dataclass_fields__)


def load_config_file(cdk_json: Path) -> PlatformConfig:
    """Read cdk.json and validate its `dscloud` context; raises ConfigError."""
    document = json.loads(cdk_json.read_text())
    return load_config(document.get("context", {}).get(CONTEXT_KEY))


def load_config(raw: Any) -> PlatformConfig:
    """Validate the `dscloud` context value into a PlatformConfig; raises ConfigError."""
    root = mapping(raw, CONTEXT_KEY, required=True)
    only_keys(root, CONTEXT_KEY, {"defaults", "teams"})
    defaults = mapping(root.get("defaults", {}), f"{CONTEXT_KEY}.defaults")
    teams = mapping(root.get("teams"), f"{CONTEXT_KEY}.teams", required=True)
    if not teams:
        raise ConfigError(
            f"{CONTEXT_KEY}.teams", "no teams configured; add one with `dsc team add NAME`"
        )
    environments = []
    for team, team_raw in teams.items():
        team_key = f"{CONTEXT_KEY}.teams.{team}"
        if not isinstance(team, str) or not TEAM_PATTERN.match(team):
            raise ConfigError(team_key, f"invalid team name; valid: {TEAM_PATTERN.pattern}")
        team_map = mapping(team_raw, team_key, required=True)
        only_keys(team_map, team_key, {"stages"})
        stages = mapping(team_map.get("stages"), f"{team_key}.stages", required=True)
        if not stages:
            raise ConfigError(f"{team_key}.stages", "a team needs at least one stage")
        for stage, stage_raw in stages.items():
            stage_key = f"{team_key}.stages.{stage}"
            if not STAGE_PATTERN.match(stage):
                raise ConfigError(stage_key, f"invalid stage name; valid: {STAGE_PATTERN.pattern}")
            overrides = mapping(stage_raw, stage_key, required=True)
            merged = deep_merge(defaults, overrides)
            environments.append(_environment(team, stage, merged, stage_key))
    return PlatformConfig(environments=tuple(environments))


def _environment(team: str, stage: str, raw: Mapping[str, Any], key: str) -> EnvironmentConfig:
    only_keys(raw, key, {f for f in _FIELDS if f not in ("team", "stage")})
    account = read_text(raw, "account", key, pattern=_ACCOUNT, hint="12 digits")
    region = read_text(raw, "region", key, pattern=_REGION, hint="e.g. eu-west-1")
    models_raw = raw.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError(f"{key}.models", 'a non-empty list of "name@alias" is required')
    models = tuple(_model_ref(m, f"{key}.models[{i}]") for i, m in enumerate(models_raw))
    longest = f"dsc-{team}-{stage}-archive-{account}-{region}"
    if len(longest) > _BUCKET_NAME_LIMIT:
        raise ConfigError(key, f"team + stage + region too long for bucket name {longest!r}")
    return EnvironmentConfig(
        team=team,
        stage=stage,
        account=account,
        region=region,
        models=models,
        vpc_id=read_optional_text(
            raw, "vpc_id", key, pattern=_VPC_ID, hint="vpc-0123456789abcdef0"
        ),
        retention_days=read_choice(raw, "retention_days", key, LOG_RETENTION_DAYS, 30),
        noncurrent_version_days=read_int(raw, "noncurrent_version_days", key, 1, 3650, 90),
        refresh_seconds=read_int(raw, "refresh_seconds", key, 10, 86400, 300),
        stream=_stream(mapping(raw.get("stream", {}), f"{key}.stream"), f"{key}.stream"),
        serving=_serving(mapping(raw.get("serving", {}), f"{key}.serving"), f"{key}.serving"),
        batch=_batch(mapping(raw.get("batch", {}), f"{key}.batch"), f"{key}.batch"),
    )


def _stream(raw: Mapping[str, Any], key: str) -> StreamSettings:
    only_keys(raw, key, set(StreamSettings.__dataclass_fields__))
    return StreamSettings(
        shards=read_int(raw, "shards", key, 1, 500, 1),
        batch_size=read_int(raw, "batch_size", key, 1, 10000, 100),
        parallelization_factor=read_int(raw, "parallelization_factor", key, 1, 10, 1),
        retry_attempts=read_int(raw, "retry_attempts", key, 0, 10000, 3),
        max_record_age_seconds=read_int(raw, "max_record_age_seconds", key, 60, 604800, 3600),
        lambda_memory_mib=read_int(raw, "lambda_memory_mib", key, 128, 10240, 1024),
        lambda_timeout_seconds=read_int(raw, "lambda_timeout_seconds", key, 1, 900, 60),
        iterator_age_alarm_seconds=read_int(raw, "iterator_age_alarm_seconds", key, 1, 604800, 300),
    )


def _serving(raw: Mapping[str, Any], key: str) -> ServingSettings:
    only_keys(raw, key, set(ServingSettings.__dataclass_fields__))
    min_tasks = read_int(raw, "min_tasks", key, 1, 100, 1)
    max_tasks = read_int(raw, "max_tasks", key, 1, 100, max(2, min_tasks))
    if max_tasks < min_tasks:
        raise ConfigError(f"{key}.max_tasks", f"{max_tasks} is below min_tasks ({min_tasks})")
    cpu, memory = _fargate_size(raw, key, "cpu", "memory_mib", 512, 1024)
    cidrs = raw.get("ingress_cidrs", [])
    if not isinstance(cidrs, list):
        raise ConfigError(f"{key}.ingress_cidrs", "expected a list of IPv4 CIDRs")
    certificate_arn = read_optional_text(
        raw, "certificate_arn", key, pattern=_CERTIFICATE_ARN, hint="an ACM certificate ARN"
    )
    domain_name = read_optional_text(
        raw, "domain_name", key, pattern=_DOMAIN_NAME, hint="a DNS name like models.example.com"
    )
    if (certificate_arn is None) != (domain_name is None):
        raise ConfigError(
            f"{key}.domain_name",
            "set together with certificate_arn: the custom domain of the endpoint, a name the "
            "certificate covers (leave both null for the execute-api default endpoint)",
        )
    return ServingSettings(
        min_tasks=min_tasks,
        max_tasks=max_tasks,
        cpu=cpu,
        memory_mib=memory,
        certificate_arn=certificate_arn,
        domain_name=domain_name,
        internet_facing=read_bool(raw, "internet_facing", key, False),
        ingress_cidrs=tuple(read_cidr(c, f"{key}.ingress_cidrs[{i}]") for i, c in enumerate(cidrs)),
        target_cpu_percent=read_int(raw, "target_cpu_percent", key, 10, 95, 60),
        target_requests_per_task=read_int(raw, "target_requests_per_task", key, 1, 1_000_000, 1000),
    )


def _batch(raw: Mapping[str, Any], key: str) -> BatchSettings:
    only_keys(raw, key, set(BatchSettings.__dataclass_fields__))
    cpu, memory = _fargate_size(raw, key, "job_cpu", "job_memory_mib", 1024, 4096)
    schedule = read_text(
        raw,
        "schedule",
        key,
        pattern=_SCHEDULE,
        default="cron(0 2 * * ? *)",
        hint="cron(minutes hours day-of-month month day-of-week year) or rate(N unit)",
    )
    prefixes = {}
    for name, default in (("input_prefix", "scoring/input/"), ("output_prefix", "scoring/output/")):
        value = read_text(
            raw, name, key, pattern=_PREFIX, default=default, hint="like scoring/input/"
        )
        if value.startswith("models/"):
            raise ConfigError(
                f"{key}.{name}", "must not lie under models/, the archive's own prefix"
            )
        prefixes[name] = value
    if prefixes["input_prefix"].startswith(prefixes["output_prefix"]) or prefixes[
        "output_prefix"
    ].startswith(prefixes["input_prefix"]):
        raise ConfigError(f"{key}.output_prefix", "input and output prefixes must not nest")
    nightly = raw.get("nightly_model")
    return BatchSettings(
        max_vcpus=read_int(raw, "max_vcpus", key, 1, 4096, 16),
        spot=read_bool(raw, "spot", key, False),
        schedule=schedule,
        schedule_timezone=read_text(
            raw,
            "schedule_timezone",
            key,
            pattern=_TIMEZONE,
            default="UTC",
            hint="an IANA zone like Europe/Paris",
        ),
        shard_count=read_int(raw, "shard_count", key, 1, 10000, 4),
        job_cpu=cpu,
        job_memory_mib=memory,
        job_timeout_minutes=read_int(raw, "job_timeout_minutes", key, 1, 14 * 24 * 60, 240),
        input_prefix=prefixes["input_prefix"],
        output_prefix=prefixes["output_prefix"],
        nightly_model=None if nightly is None else _model_ref(nightly, f"{key}.nightly_model"),
    )


def _model_ref(value: Any, key: str) -> ModelRef:
    match = _MODEL_REF.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            key, f'{json.dumps(value)} is invalid; expected "name@alias" like "churn@production"'
        )
    return ModelRef(name=match.group(1), alias=match.group(2))


def _fargate_size(
    raw: Mapping[str, Any], key: str, cpu_name: str, memory_name: str, cpu: int, memory: int
) -> tuple[int, int]:
    cpu = read_choice(raw, cpu_name, key, tuple(FARGATE_SIZES), cpu)
    allowed = FARGATE_SIZES[cpu]
    default = memory if memory in allowed else allowed[0]
    return cpu, read_choice(raw, memory_name, key, allowed, default)
