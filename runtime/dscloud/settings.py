"""Runtime settings: declared once in :data:`SETTINGS`, read once at the edge.

Each :class:`Setting` row names a field of :class:`Settings`, the environment variables it
is read from, its type and range, its default, the CLI flags that override it and what it
is for. Everything that touches a setting's rules goes through that row:

- :meth:`Settings.from_env` parses the environment with it (errors name the variable);
- :class:`Settings` checks every value against it on construction, so flags and values
  handed in by code obey the same ranges as the environment;
- :func:`cli_argument` gives a CLI flag its argparse type and help text from it (errors
  name the flag);
- ``docs/settings.md`` is this table rendered by :func:`markdown` (``python -m
  dscloud.settings``), and a test keeps the two equal.

Everything deeper receives a :class:`Settings`; nothing else reads ``os.environ`` except
for the few variables in :data:`OTHER_VARIABLES`, which belong to the code that reads them
(an identity stamp, a library's own configuration) rather than to a runtime's settings.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dscloud.archive import DEFAULT_ARCHIVE
from dscloud.errors import ConfigError

__all__ = [
    "OTHER_VARIABLES",
    "SETTINGS",
    "Setting",
    "Settings",
    "cli_argument",
    "markdown",
]

Kind = Literal["text", "refs", "int", "float"]
Value = str | int | float | tuple[str, ...] | None


@dataclass(frozen=True)
class Setting:
    """One runtime setting: where it is read from, what it may be, and what it is for.

    ``env`` lists the environment variables in order of precedence (the first one set and
    non-empty wins); ``flags`` names where the CLI overrides it (``"dsc serve --port"``).
    A numeric setting is checked against ``minimum``/``maximum`` (inclusive) wherever its
    value comes from.
    """

    name: str
    env: tuple[str, ...]
    kind: Kind
    default: Value
    doc: str
    flags: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def expected(self) -> str:
        """What a valid value is, in words (``"an integer in 0..65535"``)."""
        what = {
            "text": "text (not empty)",
            "refs": "model references separated by spaces or commas",
            "int": "an integer",
            "float": "a number",
        }[self.kind]
        if self.minimum is not None and self.maximum is not None:
            return f"{what} in {self.minimum:g}..{self.maximum:g}"
        if self.minimum is not None:
            return f"{what} >= {self.minimum:g}"
        return what

    @property
    def sources(self) -> str:
        """Where the value can come from, for error messages (``"--port / DSC_PORT"``)."""
        flags = [f.split()[-1] for f in self.flags if f.split()[-1].startswith("--")]
        return " / ".join(dict.fromkeys([*flags, *self.env]))

    def parse(self, raw: str, source: str) -> Value:
        """The value of the text ``raw`` read from ``source`` (a variable or a flag).

        Raises :class:`ConfigError` naming ``source``, the text and what was expected.
        """
        if self.kind == "text":
            return raw
        if self.kind == "refs":
            return tuple(ref for ref in raw.replace(",", " ").split() if ref)
        number: float
        try:
            number = int(raw) if self.kind == "int" else float(raw)
        except ValueError:
            raise ConfigError(f"{source}={raw!r}: expected {self.expected}") from None
        if not self._in_range(number):
            raise ConfigError(f"{source}={raw!r}: expected {self.expected}")
        return number

    def read(self, env: Mapping[str, str]) -> Value:
        """The value from the first of :attr:`env` set and non-empty, else the default.

        Raises :class:`ConfigError` naming the variable when its text is not valid.
        """
        for variable in self.env:
            raw = env.get(variable)
            if raw:
                return self.parse(raw, variable)
        return self.default

    def check(self, value: Any) -> Value:
        """``value`` as this setting holds it (a list of refs becomes a tuple, an int a
        float for a float setting); raises :class:`ConfigError` naming the setting, its
        sources and what was expected when the value's type or range is wrong."""
        if value is None and self.default is None:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind == "text" and isinstance(value, str) and value:
            return value
        refs = isinstance(value, (list, tuple)) and all(isinstance(r, str) and r for r in value)
        if self.kind == "refs" and refs:
            return tuple(value)
        if self.kind == "int" and number and isinstance(value, int) and self._in_range(value):
            return value
        if self.kind == "float" and number and self._in_range(value):
            return float(value)
        raise ConfigError(f"{self.name}={value!r} ({self.sources}): expected {self.expected}")

    def _in_range(self, number: float) -> bool:
        # NaN fails every comparison; infinity is no number of seconds or bytes either.
        return (
            math.isfinite(number)
            and (self.minimum is None or number >= self.minimum)
            and (self.maximum is None or number <= self.maximum)
        )


#: Every runtime setting, in the order the docs list them.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "archive", ("DSC_ARCHIVE",), "text", DEFAULT_ARCHIVE,
        "the archive: a directory, file:///PATH or s3://BUCKET/PREFIX",
        flags=("dsc --archive",),
    ),
    Setting(
        "models", ("DSC_MODELS",), "refs", (),
        "the models to score: NAME@ALIAS, NAME@VERSION, NAME (latest) or an artifact "
        "directory",
        flags=("dsc serve NAME@REF", "dsc stream run --model"),
    ),
    Setting(
        "host", ("DSC_HOST",), "text", "127.0.0.1",
        "the address the server binds; 0.0.0.0 in the serving image",
        flags=("dsc serve --host",),
    ),
    Setting(
        "port", ("DSC_PORT",), "int", 8080,
        "the port the server listens on",
        flags=("dsc serve --port",), minimum=0, maximum=65535,
    ),
    Setting(
        "workers", ("DSC_WORKERS",), "int", 1,
        "processes: server workers sharing the port, or shards `dsc score` runs at once",
        flags=("dsc serve --workers", "dsc score --workers"), minimum=1,
    ),
    Setting(
        "threads", ("DSC_THREADS",), "int", 1,
        "ONNX Runtime intra-op threads per loaded model, in the server and in batch",
        flags=("dsc serve --threads",), minimum=1,
    ),
    Setting(
        "refresh_seconds", ("DSC_REFRESH_SECONDS",), "float", 30.0,
        "how often a NAME@ALIAS is re-resolved and a new version swapped in; 0 never",
        flags=("dsc serve --refresh-seconds",), minimum=0,
    ),
    Setting(
        "max_body_bytes", ("DSC_MAX_BODY_BYTES",), "int", 16 * 1024 * 1024,
        "the largest request body the server reads (a larger one is a 413)",
        flags=("dsc serve --max-body-bytes",), minimum=1,
    ),
    Setting(
        "header_seconds", ("DSC_HEADER_SECONDS",), "float", 10.0,
        "seconds a connection has to send its request headers, else it is closed (0: no "
        "limit). Idle kept-alive connections get 75 s instead, longer than the ALB's 60 s "
        "idle timeout on purpose: the balancer must close idle connections first, or it may "
        "send a request on one the task just closed (a 502)",
        minimum=0,
    ),
    Setting(
        "body_seconds", ("DSC_BODY_SECONDS",), "float", 30.0,
        "seconds a request body has to arrive once its headers have, else a 408 (0: no limit)",
        minimum=0,
    ),
    Setting(
        "max_concurrent", ("DSC_MAX_CONCURRENT",), "int", 16,
        "scoring requests a server process takes at once; more get 503 with Retry-After "
        "(health checks never count; 0: no cap)",
        minimum=0,
    ),
    Setting(
        "memory_budget_bytes", ("DSC_MEMORY_BUDGET_BYTES",), "int", 0,
        "request memory a server process may use at once, charged as body size times its "
        "measured cost (bench/memory.md); more gets 503 with Retry-After. The serving stack "
        "sets it from the task size (0: no budget)",
        minimum=0,
    ),
    Setting(
        "predictions_table", ("DSC_PREDICTIONS_TABLE",), "text", None,
        "the DynamoDB table the stream handler writes the latest prediction per entity to",
        flags=("dsc stream run --table",),
    ),
    Setting(
        "output_stream", ("DSC_OUTPUT_STREAM",), "text", None,
        "a Kinesis stream the stream handler also puts every prediction on (optional)",
        flags=("dsc stream run --output-stream",),
    ),
    Setting(
        "rejects_queue_url", ("DSC_REJECTS_QUEUE_URL",), "text", None,
        "the SQS queue the stream handler sends records it can never score to",
        flags=("dsc stream run --rejects-queue-url",),
    ),
    Setting(
        "drift", ("DSC_DRIFT",), "int", 1,
        "1 counts drift against the training baseline in the server and the stream "
        "(docs/monitoring.md); 0 turns it off (`dsc score --no-drift` for batch)",
        minimum=0, maximum=1,
    ),
    Setting(
        "drift_window_seconds", ("DSC_DRIFT_WINDOW_SECONDS",), "float", 300.0,
        "the server's rolling drift window; the stream publishes drift metrics once per "
        "window",
        minimum=1,
    ),
    Setting(
        "drift_min_rows", ("DSC_DRIFT_MIN_ROWS",), "int", 500,
        "the rows a stream window needs before its drift is published (fewer: it keeps "
        "counting, since PSI of a few rows is noise)",
        minimum=1,
    ),
    Setting(
        "rollout_window_seconds", ("DSC_ROLLOUT_WINDOW_SECONDS",), "float", 60.0,
        "how often a runtime following a rollout records its comparison in the archive (a "
        "`rollout-compare` audit record): a server process on its alias poller's thread (so "
        "at most as often as DSC_REFRESH_SECONDS), then judging the guard rails; the stream "
        "also publishes it as metrics and judges the guard rails after every batch "
        "(docs/rollout.md)",
        minimum=1,
    ),
    Setting(
        "rollout_compare_share", ("DSC_ROLLOUT_COMPARE_SHARE",), "float", 0.005,
        "the share of a server process's time a canary's comparisons may take (every cost "
        "counted); a busier process compares a sample and counts the rest in "
        "dsc_rollout_skipped_total. 0 compares no canary request (a shadow is always "
        "compared in full; docs/rollout.md)",
        minimum=0, maximum=1,
    ),
    Setting(
        "metrics_namespace", ("DSC_METRICS_NAMESPACE",), "text", None,
        "the CloudWatch namespace a completed `dsc score` run publishes its drift figures "
        "to (PutMetricData; the batch stack sets `dscloud`); unset: nothing is published, "
        "as in local runs",
    ),
    Setting(
        "metrics_service", ("DSC_METRICS_SERVICE",), "text", "dscloud-score",
        "the `service` dimension of those metrics, beside `model` (the batch stack sets "
        "ENV-score, as the stream's POWERTOOLS_SERVICE_NAME is ENV-scorer)",
    ),
    Setting(
        "shard_index", ("AWS_BATCH_JOB_ARRAY_INDEX",), "int", 0,
        "the shard this `dsc score` runs (AWS Batch sets it in each child of an array job)",
        flags=("dsc score --shard-index",), minimum=0,
    ),
    Setting(
        "shard_count", ("DSC_SHARD_COUNT",), "int", 1,
        "the shards of a `dsc score` run (the array size of the batch job)",
        flags=("dsc score --shard-count",), minimum=1,
    ),
    Setting(
        "s3_endpoint", ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), "text", None,
        "the S3 endpoint for batch input and output (e.g. a moto server); boto3 reads the "
        "same variables for the archive and the stream",
    ),
    Setting(
        "max_rejected_share", ("DSC_MAX_REJECTED_SHARE",), "float", 0.5,
        "the share of its rows a `dsc score` run may reject; more fails the run (_FAILED "
        "instead of _SUCCESS, non-zero exit; 1: never fails)",
        flags=("dsc score --max-rejected-share",), minimum=0, maximum=1,
    ),
)  # fmt: skip

#: Environment variables read outside :class:`Settings`, by the code they belong to.
OTHER_VARIABLES: Mapping[str, str] = {
    "DSC_USER": "who publishes and promotes, recorded in the envelope and the audit "
    "(default: the login name)",
    "DSC_GIT_COMMIT": "the code commit `dscloud.package` records when there is no git "
    "checkout (stamped into the batch image at build)",
    "DSC_GIT_REMOTE": "the code remote recorded beside DSC_GIT_COMMIT",
    "POWERTOOLS_SERVICE_NAME": "the service name in the stream handler's logs and metrics "
    "(default: dscloud-stream)",
    "POWERTOOLS_METRICS_NAMESPACE": "the CloudWatch namespace of the stream handler's "
    "metrics (default: dscloud)",
}

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _default(name: str) -> Any:
    return _BY_NAME[name].default


@dataclass(frozen=True)
class Settings:
    """Every runtime setting, checked against :data:`SETTINGS` when constructed.

    Raises :class:`ConfigError` naming the setting and what was expected when a value
    has the wrong type or is out of range, or when ``shard_index`` is not below
    ``shard_count``.
    """

    # Defaults come from the table: each is declared once, in its row.
    archive: str = _default("archive")
    models: tuple[str, ...] = _default("models")
    host: str = _default("host")
    port: int = _default("port")
    workers: int = _default("workers")
    threads: int = _default("threads")
    refresh_seconds: float = _default("refresh_seconds")
    max_body_bytes: int = _default("max_body_bytes")
    header_seconds: float = _default("header_seconds")
    body_seconds: float = _default("body_seconds")
    max_concurrent: int = _default("max_concurrent")
    memory_budget_bytes: int = _default("memory_budget_bytes")
    predictions_table: str | None = _default("predictions_table")
    output_stream: str | None = _default("output_stream")
    rejects_queue_url: str | None = _default("rejects_queue_url")
    drift: int = _default("drift")
    drift_window_seconds: float = _default("drift_window_seconds")
    drift_min_rows: int = _default("drift_min_rows")
    rollout_window_seconds: float = _default("rollout_window_seconds")
    rollout_compare_share: float = _default("rollout_compare_share")
    metrics_namespace: str | None = _default("metrics_namespace")
    metrics_service: str = _default("metrics_service")
    shard_index: int = _default("shard_index")
    shard_count: int = _default("shard_count")
    s3_endpoint: str | None = _default("s3_endpoint")
    max_rejected_share: float = _default("max_rejected_share")

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            # Normalising (list -> tuple, int -> float) on a frozen instance.
            object.__setattr__(self, setting.name, setting.check(getattr(self, setting.name)))
        if not 0 <= self.shard_index < self.shard_count:
            raise ConfigError(
                f"shard index {self.shard_index} is outside 0..{self.shard_count - 1} "
                "(AWS_BATCH_JOB_ARRAY_INDEX / --shard-index against DSC_SHARD_COUNT / --shard-count)"
            )

    def environ(self, names: Sequence[str]) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` in another process see
        this instance's values of the settings ``names`` (unset values are left out).

        Raises :class:`KeyError` for a name not in :data:`SETTINGS`."""
        variables = {}
        for name in names:
            setting, value = _BY_NAME[name], getattr(self, name)
            if value is not None:
                variables[setting.env[0]] = _shown(value)
        return variables

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then non-None ``overrides`` (flags).

        Raises :class:`ConfigError` naming the variable or setting and what was expected,
        or listing the known settings when an override names none of them.
        """
        env = os.environ if env is None else env
        unknown = set(overrides) - set(_BY_NAME)
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}; known: {sorted(_BY_NAME)}")
        values: dict[str, Any] = {setting.name: setting.read(env) for setting in SETTINGS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def cli_argument(name: str, *, help: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``parser.add_argument`` of the flag that overrides ``name``:
    its argparse ``type`` (the setting's parsing and range check) and a help text that
    names the environment variable and the default.

    ``help`` replaces the setting's own description for a command that uses it in its
    own words. Raises :class:`KeyError` for a name not in :data:`SETTINGS`.
    """
    setting = _BY_NAME[name]
    default = _shown(setting.default) if setting.default not in (None, ()) else "none"
    text = f"{help or setting.doc} (default: ${setting.env[0]} or {default})"
    # argparse reports "%" formatting errors for a literal % in help text.
    arguments: dict[str, Any] = {"help": text.replace("%", "%%")}
    if setting.kind in ("int", "float"):
        arguments["type"] = _argparse_type(setting)
    return arguments


def _argparse_type(setting: Setting) -> Callable[[str], Value]:
    def parse(raw: str) -> Value:
        try:
            return setting.parse(raw, "value")
        except ConfigError:
            # argparse prefixes "argument --port: "; the flag is already named.
            raise argparse.ArgumentTypeError(f"expected {setting.expected}, got {raw!r}") from None

    parse.__name__ = setting.kind
    return parse


def _shown(value: Value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value)


def markdown() -> dict[str, str]:
    """The tables ``docs/settings.md`` holds, as Markdown: ``"settings"`` (one row per
    :data:`SETTINGS` entry) and ``"other variables"`` (:data:`OTHER_VARIABLES`)."""
    rows = [
        "| setting | environment | flags | value | default | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = "none" if s.default in (None, ()) else f"`{_shown(s.default)}`"
        flags = ", ".join(f"`{flag}`" for flag in s.flags) or "none"
        env = " then ".join(f"`{variable}`" for variable in s.env)
        rows.append(f"| `{s.name}` | {env} | {flags} | {s.expected} | {default} | {s.doc} |")
    other = ["| variable | meaning |", "|---|---|"]
    other += [f"| `{name}` | {doc} |" for name, doc in OTHER_VARIABLES.items()]
    return {"settings": "\n".join(rows) + "\n", "other variables": "\n".join(other) + "\n"}


if __name__ == "__main__":
    for title, table in markdown().items():
        print(f"<!-- {title} table: generated by `python -m dscloud.settings` -->")
        print(table, end="")
        print(f"<!-- end of {title} table -->")
