"""Reading typed values out of the raw cdk.json context; every refusal names its key.

`stacks.config` builds the platform's dataclasses with these. Each reader takes the raw
mapping, the value's name and the dotted key of the mapping, and raises ConfigError with
`{key}.{name}` and what would have been valid.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "deep_merge",
    "mapping",
    "only_keys",
    "read_bool",
    "read_choice",
    "read_cidr",
    "read_int",
    "read_optional_text",
    "read_text",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A value in the `dscloud` context is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def mapping(value: Any, key: str, *, required: bool = False) -> Mapping[str, Any]:
    """Return `value` as an object ({} when absent and optional); raises ConfigError."""
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected an object, got {json.dumps(value)}")
    return value


def only_keys(raw: Mapping[str, Any], key: str, allowed: set[str]) -> None:
    """Refuse the first key of `raw` not in `allowed`, listing the allowed ones."""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}", f"unknown key; valid keys: {', '.join(sorted(allowed))}"
        )


def _get(
    raw: Mapping[str, Any],
    name: str,
    key: str,
    default: T | None,
    check: Callable[[Any], bool],
    expected: str,
) -> T:
    value = raw.get(name, default)
    if value is None:
        raise ConfigError(f"{key}.{name}", f"required; expected {expected}")
    if not check(value):
        raise ConfigError(f"{key}.{name}", f"{json.dumps(value)} is invalid; expected {expected}")
    return value  # type: ignore[no-any-return]


def read_int(raw: Mapping[str, Any], name: str, key: str, low: int, high: int, default: int) -> int:
    """An integer from `low` to `high` (booleans refused), or `default` when absent."""

    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    return _get(raw, name, key, default, ok, f"an integer from {low} to {high}")


def read_float(
    raw: Mapping[str, Any], name: str, key: str, low: float, high: float, default: float
) -> float:
    """A number from `low` to `high` (booleans refused), or `default` when absent."""

    def ok(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high

    return float(_get(raw, name, key, default, ok, f"a number from {low} to {high}"))


def read_bool(raw: Mapping[str, Any], name: str, key: str, default: bool) -> bool:
    """A JSON boolean (not the string "true"), or `default` when absent."""
    return _get(raw, name, key, default, lambda v: isinstance(v, bool), "true or false")


def read_choice(
    raw: Mapping[str, Any], name: str, key: str, valid: Sequence[int], default: int
) -> int:
    """One of the integers `valid`, or `default` when absent."""

    def ok(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v in valid

    return _get(raw, name, key, default, ok, f"one of {', '.join(map(str, valid))}")


def read_text(
    raw: Mapping[str, Any],
    name: str,
    key: str,
    *,
    pattern: re.Pattern[str],
    hint: str,
    default: str | None = None,
) -> str:
    """A string matching `pattern` (`hint` says what would); `default` when absent."""

    def ok(v: Any) -> bool:
        return isinstance(v, str) and bool(pattern.match(v))

    return _get(raw, name, key, default, ok, hint)


def read_optional_text(
    raw: Mapping[str, Any], name: str, key: str, *, pattern: re.Pattern[str], hint: str
) -> str | None:
    """Like read_text, but absent or null is None."""
    if raw.get(name) is None:
        return None
    return read_text(raw, name, key, pattern=pattern, hint=f"null or {hint}")


def read_cidr(value: Any, key: str) -> str:
    """`value` as a canonical IPv4 network (host bits must be zero)."""
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except (ValueError, TypeError):
        raise ConfigError(key, f"{json.dumps(value)} is not an IPv4 CIDR like 10.0.0.0/8") from None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, merging nested objects key by key."""
    merged = dict(base)
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), Mapping):
            merged[name] = deep_merge(merged[name], value)
        else:
            merged[name] = value
    return merged
