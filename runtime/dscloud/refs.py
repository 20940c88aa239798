"""The one rule for model names, versions, aliases and ``NAME@VERSION|ALIAS`` references.

Every path that turns text into an archive key goes through these checks: the CLI's
arguments, ``DSC_MODELS``, :meth:`dscloud.archive.Ref.parse`, and the ``identity`` of every
envelope read. A name becomes a directory (``models/{name}/``) and an alias a file name
(``aliases/{alias}.json``), so the rule admits no ``/`` and no leading ``.``: no name can
be, or climb out through, a path component such as ``..``. The stacks validate ``cdk.json`` against a copy of
this rule (they may not import the runtime); a test holds the two together.
"""

from __future__ import annotations

import re

from dscloud.errors import ConfigError

__all__ = [
    "ALIAS_RE",
    "NAME_RE",
    "check_alias",
    "check_name",
    "check_version",
    "split_ref",
]

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def check_name(name: object) -> str:
    """``name`` unchanged when it is a valid model name; raises :class:`ConfigError`."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"model name {name!r}: expected a letter, then letters, digits, '_', '-' or '.' "
            "(at most 64 characters)"
        )
    return name


def check_alias(alias: object) -> str:
    """``alias`` unchanged when it is a valid alias; raises :class:`ConfigError`."""
    if not isinstance(alias, str) or not ALIAS_RE.match(alias):
        raise ConfigError(
            f"alias {alias!r}: expected a letter, then letters, digits, '_' or '-' "
            "(at most 64 characters; a number would be read as a version)"
        )
    return alias


def check_version(version: object) -> int:
    """``version`` when it is a positive integer (not a bool); raises :class:`ConfigError`."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"version {version!r}: expected a positive whole number")
    return version


def split_ref(text: str) -> tuple[str, int | None, str | None]:
    """``(name, version, alias)`` of ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS``.

    Raises :class:`ConfigError` naming the accepted forms when any part breaks the rule.
    """
    name, sep, tail = text.partition("@")
    check_name(name)
    if not sep:
        return name, None, None
    if tail.isascii() and tail.isdigit():
        return name, check_version(int(tail)), None
    if not tail or not ALIAS_RE.match(tail):
        raise ConfigError(
            f"reference {text!r}: expected NAME, NAME@VERSION or NAME@ALIAS "
            "(an alias is a letter, then letters, digits, '_' or '-')"
        )
    return name, None, tail
