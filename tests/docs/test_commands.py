"""Every `dsc` command and flag, and every `make` target, the manual mentions exists.

The CLI is asked through its public entry points (``dsc ... --help``, found through the
console script's entry point, and ``python -m dscloud.cli ... --help``), so the test holds
however the CLI's modules are laid out. A mention is any line of a shell block and any inline code span.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from tests.docs.pages import ROOT, all_pages

_MENTION = re.compile(r"(?<![\w/.$-])(dsc|python -m dscloud\.cli)((?:\s+[^\s#]\S*)*)")
_WORD = re.compile(r"^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$")
_SUBCOMMAND = re.compile(r"^    ([a-z][a-z0-9-]*)(?:\s|$)", re.M)
_GLOBAL_WITH_VALUE = {"--archive"}

Launcher = tuple[str, ...]
#: The installed ``dsc`` console script, called in this process (see :func:`help_of`).
DSC: Launcher = ("dsc",)
MODULE: Launcher = (sys.executable, "-m", "dscloud.cli")


@functools.cache
def help_of(launcher: Launcher, path: tuple[str, ...]) -> str:
    """The ``--help`` text of ``path`` (empty for the root); raises AssertionError naming
    the command when it does not exist.

    ``dsc`` is the function its console-script entry point names, looked up in the
    installed distribution's metadata and called in this process (a subprocess per
    command costs a second each); ``python -m dscloud.cli`` runs as a subprocess."""
    if launcher == DSC:
        (script,) = entry_points(group="console_scripts", name="dsc")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = script.load()([*path, "--help"])
            except SystemExit as exited:
                code = exited.code
        returncode, stdout, stderr = code, out.getvalue(), err.getvalue()
    else:
        done = subprocess.run(
            [*launcher, *path, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    usage = " ".join(["usage: dsc", *path])
    assert returncode == 0 and stdout.startswith(usage), (
        f"`dsc {' '.join(path)}` is not a command: {stderr.strip()[-300:]}"
    )
    return stdout


def subcommands(launcher: Launcher, path: tuple[str, ...]) -> set[str]:
    """The commands under ``path`` (empty for a leaf)."""
    text = help_of(launcher, path)
    positional = text.partition("positional arguments:")[2].partition("\noptions:")[0]
    return set(_SUBCOMMAND.findall(positional))


def mentions() -> list[tuple[str, Launcher, list[str]]]:
    """(page, launcher, tokens after it) for every mention, an alternation such as
    ``dsc stream create|put|show`` expanded into one mention per command."""
    found = []
    for page in all_pages():
        for snippet in page.snippets():
            for match in _MENTION.finditer(snippet):
                launcher = DSC if match.group(1) == "dsc" else MODULE
                rest = re.split(r"\s(?:&&|\|\||\||;|&)(?:\s|$)|\s#", match.group(2))[0]
                tokens = [t.strip("[](),") for t in rest.split()]
                tokens = [t for t in tokens if t]
                for expanded in _alternatives(tokens):
                    found.append((page.name, launcher, expanded))
    return found


def _alternatives(tokens: list[str]) -> list[list[str]]:
    for i, token in enumerate(tokens):
        if "|" in token and _WORD.match(token):
            return [
                alternative
                for choice in token.split("|")
                for alternative in _alternatives([*tokens[:i], choice, *tokens[i + 1 :]])
            ]
    return [tokens]


def _command_path(launcher: Launcher, tokens: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The command ``tokens`` name and the tokens after the global options; the path is
    empty when the first word is a placeholder (``dsc COMMAND --help``)."""
    rest = list(tokens)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in _GLOBAL_WITH_VALUE and rest:
            rest.pop(0)
    path: tuple[str, ...] = ()
    for token in rest:
        commands = subcommands(launcher, path)
        if not commands or not _WORD.match(token):
            break  # a leaf's arguments, or a placeholder
        assert token in commands, f"`dsc {' '.join([*path, token])}` is not a command of dsc"
        path = (*path, token)
    return path, rest


def test_the_manual_mentions_commands() -> None:
    # A parser that found nothing would make the test below vacuous.
    commands = {tuple(t[:2]) for _, _, t in mentions()}
    assert {("serve", "churn@production"), ("stream", "run"), ("team", "add")} <= commands


@pytest.mark.parametrize(
    ("name", "launcher", "tokens"),
    [pytest.param(*m, id=f"{m[0]}: dsc {' '.join(m[2])[:60]}") for m in mentions()],
)
def test_every_command_and_flag_mentioned_exists(
    name: str, launcher: Launcher, tokens: list[str]
) -> None:
    path, rest = _command_path(launcher, tokens)
    if not path:
        return  # a placeholder such as `dsc COMMAND --help`, or only global options
    text = help_of(launcher, path) + help_of(launcher, ())
    for flag in (t.partition("=")[0] for t in rest if t.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
            f"{name}: `dsc {' '.join(path)}` has no flag {flag}"
        )


def makefile_targets() -> set[str]:
    """The targets the Makefile defines (rules, not variables)."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


def test_every_make_target_mentioned_exists() -> None:
    mentioned: dict[str, str] = {}
    for page in all_pages():
        for snippet in page.snippets():
            for target in re.findall(r"(?<![\w-])make\s+([a-z][\w-]*)", snippet):
                mentioned.setdefault(target, page.name)
    assert {"demo", "test"} <= set(mentioned)
    missing = {t: where for t, where in mentioned.items() if t not in makefile_targets()}
    assert not missing, f"make targets the Makefile does not define: {missing}"


def _leaves(path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    commands = subcommands(DSC, path)
    if not commands:
        return [path]
    return [leaf for command in sorted(commands) for leaf in _leaves((*path, command))]


def test_every_command_of_the_cli_is_in_the_manual() -> None:
    mentioned = set()
    for _, launcher, tokens in mentions():
        path, _ = _command_path(launcher, tokens)
        mentioned |= {path[:i] for i in range(1, len(path) + 1)}
    leaves = _leaves()
    assert ("stream", "run") in leaves  # the walk reaches the nested commands
    undocumented = [" ".join(leaf) for leaf in leaves if leaf not in mentioned]
    assert not undocumented, f"dsc commands no page mentions: {undocumented}"
