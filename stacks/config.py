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

Every default is declared once, on its dataclass field; the readers take it from there.

The local target (`make local`, docs/local.md): `local_environment` turns one configured
environment into the same environment for a local AWS emulator (moto's account, prebuilt
local image names, no default-security-group custom resource, strong cross-stack
references). app.py applies it when the `dscloud:local` context key names the environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
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
    read_float,
    read_int,
    read_optional_text,
    read_text,
)

__all__ = [
    "CONTEXT_KEY",
    "CROSS_STACK_REFERENCES",
    "FARGATE_SIZES",
    "LOCAL_ACCOUNT",
    "LOCAL_BATCH_IMAGE",
    "LOCAL_CONTEXT_KEY",
    "LOCAL_SERVING_IMAGE",
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
    "local_environment",
]

CONTEXT_KEY = "dscloud"
# `cdk synth -c dscloud:local=dsc-recs-dev`: synthesize that one environment for moto.
LOCAL_CONTEXT_KEY = "dscloud:local"
# The account a moto server answers for (any access key that is not 12 digits).
LOCAL_ACCOUNT = "123456789012"
LOCAL_SERVING_IMAGE = "dscloud-serving:local"
LOCAL_BATCH_IMAGE = "dscloud-batch:local"
# The values of CDK's `@aws-cdk/core:defaultCrossStackReferences`: "weak" references
# (Fn::GetStackOutput) let a producer stack change an output in use; "strong" ones are
# exports and Fn::ImportValue, which every CloudFormation implementation resolves.
CROSS_STACK_REFERENCES = ("weak", "strong")

TEAM_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,11}$")
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,7}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
# The runtime's rule for NAME@ALIAS (dscloud.archive.Ref): the stacks may not import the
# runtime (they must synth without it), so the rule is restated here and
# tests/stacks/test_contract.py checks both agree on the same cases.
_MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_MODEL_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
# An image reference: [registry[:port]/]repository[:tag][@sha256:digest], lower-case path.
_IMAGE = re.compile(
    r"^([a-z0-9.-]+(:\d+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(@sha256:[0-9a-f]{64})?$"
)
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
    # Drift: the scorer publishes PSI per window of at least min_rows rows (docs/monitoring.md);
    # an alarm fires when the prediction's or the worst feature's PSI is above the threshold.
    drift_window_seconds: int = 300
    drift_min_rows: int = 500
    drift_psi_alarm: float = 0.25


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
    # A prebuilt image (CI builds once and promotes by digest); None builds
    # docker/serving.Dockerfile at deploy time, which needs a container engine.
    image: str | None = None


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
    # A prebuilt batch image; None builds docker/batch.Dockerfile at deploy time.
    image: str | None = None
    # A completed nightly run publishes its drift (docs/monitoring.md); an alarm fires when
    # the prediction's or the worst feature's PSI is above the threshold.
    drift_psi_alarm: float = 0.25


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
    # CDK's custom resource (a Lambda) that strips the default security group's rules.
    restrict_default_security_group: bool = True
    cross_stack_references: str = "weak"
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


def _default(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls`: the one place each default is declared."""
    for f in fields(cls):
        if f.name == name:
            if f.default is MISSING and f.default_factory is not MISSING:
                return f.default_factory()
            return f.default
    raise KeyError(f"{cls.__name__} has no field {name!r}")


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


def local_environment(config: PlatformConfig, name: str) -> EnvironmentConfig:
    """Environment `name` (e.g. `dsc-recs-dev`) as deployed into a local AWS emulator.

    Same stacks and settings, except: moto's account (LOCAL_ACCOUNT); the prebuilt local
    image names (nothing is built or pushed; moto's ECR has no registry); no
    default-security-group custom resource (its Lambda would need Docker inside moto);
    strong cross-stack references (moto does not resolve Fn::GetStackOutput). Raises
    ConfigError naming the configured environments when `name` is none of them.
    """
    for env in config.environments:
        if env.name == name:
            return replace(
                env,
                account=LOCAL_ACCOUNT,
                restrict_default_security_group=False,
                cross_stack_references="strong",
                serving=replace(env.serving, image=LOCAL_SERVING_IMAGE),
                batch=replace(env.batch, image=LOCAL_BATCH_IMAGE),
            )
    names = ", ".join(env.name for env in config.environments)
    raise ConfigError(LOCAL_CONTEXT_KEY, f"{name!r} is not an environment; valid: {names}")


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

    def default(name: str) -> Any:
        return _default(EnvironmentConfig, name)

    references = raw.get("cross_stack_references", default("cross_stack_references"))
    if references not in CROSS_STACK_REFERENCES:
        raise ConfigError(
            f"{key}.cross_stack_references",
            f"{json.dumps(references)} is invalid; expected one of {', '.join(CROSS_STACK_REFERENCES)}",
        )
    return EnvironmentConfig(
        team=team,
        stage=stage,
        account=account,
        region=region,
        models=models,
        vpc_id=read_optional_text(
            raw, "vpc_id", key, pattern=_VPC_ID, hint="vpc-0123456789abcdef0"
        ),
        retention_days=read_choice(
            raw, "retention_days", key, LOG_RETENTION_DAYS, default("retention_days")
        ),
        noncurrent_version_days=read_int(
            raw, "noncurrent_version_days", key, 1, 3650, default("noncurrent_version_days")
        ),
        refresh_seconds=read_int(
            raw, "refresh_seconds", key, 10, 86400, default("refresh_seconds")
        ),
        restrict_default_security_group=read_bool(
            raw, "restrict_default_security_group", key, default("restrict_default_security_group")
        ),
        cross_stack_references=references,
        stream=_stream(mapping(raw.get("stream", {}), f"{key}.stream"), f"{key}.stream"),
        serving=_serving(mapping(raw.get("serving", {}), f"{key}.serving"), f"{key}.serving"),
        batch=_batch(mapping(raw.get("batch", {}), f"{key}.batch"), f"{key}.batch"),
    )


def _stream(raw: Mapping[str, Any], key: str) -> StreamSettings:
    only_keys(raw, key, set(StreamSettings.__dataclass_fields__))
    limits = {
        "shards": (1, 500),
        "batch_size": (1, 10000),
        "parallelization_factor": (1, 10),
        "retry_attempts": (0, 10000),
        "max_record_age_seconds": (60, 604800),
        "lambda_memory_mib": (128, 10240),
        "lambda_timeout_seconds": (1, 900),
        "iterator_age_alarm_seconds": (1, 604800),
        "drift_window_seconds": (60, 86400),
        "drift_min_rows": (1, 10_000_000),
    }
    return StreamSettings(
        **{
            name: read_int(raw, name, key, low, high, _default(StreamSettings, name))
            for name, (low, high) in limits.items()
        },
        drift_psi_alarm=read_float(
            raw, "drift_psi_alarm", key, 0.01, 10.0, _default(StreamSettings, "drift_psi_alarm")
        ),
    )


def _serving(raw: Mapping[str, Any], key: str) -> ServingSettings:
    only_keys(raw, key, set(ServingSettings.__dataclass_fields__))

    def default(name: str) -> Any:
        return _default(ServingSettings, name)

    min_tasks = read_int(raw, "min_tasks", key, 1, 100, default("min_tasks"))
    # Unset, max_tasks follows min_tasks up so that a larger minimum alone stays valid.
    max_tasks = read_int(raw, "max_tasks", key, 1, 100, max(default("max_tasks"), min_tasks))
    if max_tasks < min_tasks:
        raise ConfigError(f"{key}.max_tasks", f"{max_tasks} is below min_tasks ({min_tasks})")
    cpu, memory = _fargate_size(
        raw, key, "cpu", "memory_mib", default("cpu"), default("memory_mib")
    )
    cidrs = raw.get("ingress_cidrs", list(default("ingress_cidrs")))
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
        internet_facing=read_bool(raw, "internet_facing", key, default("internet_facing")),
        ingress_cidrs=tuple(read_cidr(c, f"{key}.ingress_cidrs[{i}]") for i, c in enumerate(cidrs)),
        target_cpu_percent=read_int(
            raw, "target_cpu_percent", key, 10, 95, default("target_cpu_percent")
        ),
        target_requests_per_task=read_int(
            raw, "target_requests_per_task", key, 1, 1_000_000, default("target_requests_per_task")
        ),
        image=_image(raw, key),
    )


def _batch(raw: Mapping[str, Any], key: str) -> BatchSettings:
    only_keys(raw, key, set(BatchSettings.__dataclass_fields__))

    def default(name: str) -> Any:
        return _default(BatchSettings, name)

    cpu, memory = _fargate_size(
        raw, key, "job_cpu", "job_memory_mib", default("job_cpu"), default("job_memory_mib")
    )
    schedule = read_text(
        raw,
        "schedule",
        key,
        pattern=_SCHEDULE,
        default=default("schedule"),
        hint="cron(minutes hours day-of-month month day-of-week year) or rate(N unit)",
    )
    prefixes = {}
    for name in ("input_prefix", "output_prefix"):
        value = read_text(
            raw, name, key, pattern=_PREFIX, default=default(name), hint="like scoring/input/"
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
        max_vcpus=read_int(raw, "max_vcpus", key, 1, 4096, default("max_vcpus")),
        spot=read_bool(raw, "spot", key, default("spot")),
        schedule=schedule,
        schedule_timezone=read_text(
            raw,
            "schedule_timezone",
            key,
            pattern=_TIMEZONE,
            default=default("schedule_timezone"),
            hint="an IANA zone like Europe/Paris",
        ),
        shard_count=read_int(raw, "shard_count", key, 1, 10000, default("shard_count")),
        job_cpu=cpu,
        job_memory_mib=memory,
        job_timeout_minutes=read_int(
            raw, "job_timeout_minutes", key, 1, 14 * 24 * 60, default("job_timeout_minutes")
        ),
        input_prefix=prefixes["input_prefix"],
        output_prefix=prefixes["output_prefix"],
        nightly_model=None if nightly is None else _model_ref(nightly, f"{key}.nightly_model"),
        image=_image(raw, key),
        drift_psi_alarm=read_float(
            raw, "drift_psi_alarm", key, 0.01, 10.0, default("drift_psi_alarm")
        ),
    )


def _image(raw: Mapping[str, Any], key: str) -> str | None:
    return read_optional_text(
        raw,
        "image",
        key,
        pattern=_IMAGE,
        hint="an image reference like 123456789012.dkr.ecr.eu-west-1.amazonaws.com/serving@sha256:...",
    )


def _model_ref(value: Any, key: str) -> ModelRef:
    """NAME@ALIAS by the runtime's rule; a version number is refused (an environment follows
    an alias, which is how a version is promoted into it)."""
    name, sep, alias = value.partition("@") if isinstance(value, str) else ("", "", "")
    if not (sep and _MODEL_NAME.match(name) and _MODEL_ALIAS.match(alias)) or alias.isdigit():
        raise ConfigError(
            key,
            f'{json.dumps(value)} is invalid; expected "name@alias" like "churn@production": '
            "each starts with a letter; a name then has letters, digits, '_', '-' or '.', an "
            "alias letters, digits, '_' or '-' (a number would be a version: promote it to an "
            "alias instead)",
        )
    return ModelRef(name=name, alias=alias)


def _fargate_size(
    raw: Mapping[str, Any], key: str, cpu_name: str, memory_name: str, cpu: int, memory: int
) -> tuple[int, int]:
    cpu = read_choice(raw, cpu_name, key, tuple(FARGATE_SIZES), cpu)
    allowed = FARGATE_SIZES[cpu]
    default = memory if memory in allowed else allowed[0]
    return cpu, read_choice(raw, memory_name, key, allowed, default)
