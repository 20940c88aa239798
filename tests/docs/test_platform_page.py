"""docs/platform.md states the `cdk.json` keys, their defaults and the stack outputs the
stacks really have.

Read-only use of the stacks: the keys and defaults come from the frozen dataclasses of
``stacks/config.py`` (what ``app.py`` validates cdk.json into), the outputs from the
``CfnOutput`` declarations in ``stacks/*.py``. Nothing is synthesized.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from typing import Any

from stacks.config import EnvironmentConfig
from tests.docs.pages import ROOT, page

CONFIG_HEADER = "| Key | Default |"
OUTPUTS_HEADER = "| Output | Stack |"
# Fields that identify an environment rather than configure it: they come from the
# team/stage structure of cdk.json, not from a key.
_IDENTITY = {"team", "stage"}
_REQUIRED = dataclasses.MISSING


def config_defaults() -> dict[str, Any]:
    """Every configuration key (dotted for nested blocks) -> its default, or MISSING when
    the key is required."""
    keys: dict[str, Any] = {}
    for field in dataclasses.fields(EnvironmentConfig):
        if field.name in _IDENTITY:
            continue
        if field.default_factory is not dataclasses.MISSING:
            block = field.default_factory()
            if dataclasses.is_dataclass(block):
                for inner in dataclasses.fields(block):
                    keys[f"{field.name}.{inner.name}"] = getattr(block, inner.name)
                continue
            keys[field.name] = block
        else:
            keys[field.name] = field.default
    return keys


def documented_defaults() -> dict[str, str]:
    """Key -> the default text the page gives it (one text shared by several keys, or one
    per key in the same order)."""
    documented: dict[str, str] = {}
    for key_cell, default_cell, *_ in page("docs/platform.md").table(CONFIG_HEADER):
        keys = re.findall(r"`([^`]+)`", key_cell)
        defaults = [d.strip() for d in re.split(r",\s+(?![^`]*`(?:,|$))", default_cell)]
        if len(defaults) != len(keys):
            defaults = [default_cell] * len(keys)
        documented.update(zip(keys, defaults, strict=True))
    return documented


def _as_value(text: str) -> Any:
    """The value a default cell states: `required`, a JSON literal in backticks or bare
    (`null`, `false`, 30, `[]`), or a backticked string; a phrase ("first of `models`")
    stands for a default computed from other keys, which the dataclass holds as None."""
    if text == "required":
        return _REQUIRED
    literal = re.fullmatch(r"`?([^`]+)`?(?:\s*=.*)?", text)
    if literal is None or " " in text.split("`")[0].strip():
        return None
    raw = literal.group(1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return tuple(value) if isinstance(value, list) else value


def test_the_config_table_lists_every_key_and_no_other() -> None:
    documented, real = set(documented_defaults()), set(config_defaults())
    assert documented == real, (
        f"docs/platform.md lists keys stacks/config.py lacks: {sorted(documented - real)}; "
        f"and lacks keys it has: {sorted(real - documented)}"
    )


def test_the_config_table_states_the_real_defaults() -> None:
    real = config_defaults()
    wrong = {
        key: (text, real[key])
        for key, text in documented_defaults().items()
        if key in real and _as_value(text) != real[key]
    }
    assert not wrong, f"docs/platform.md: key -> (documented, real default): {wrong}"


def _declared_outputs() -> set[str]:
    """Output ids the stacks declare: ``CfnOutput(self, "Id", ...)`` with a constant id,
    and the keys of an ``outputs = {...}`` dict they loop over."""
    names: set[str] = set()
    for path in sorted((ROOT / "stacks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("CfnOutput")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                names.add(str(node.args[1].value))
            if (
                isinstance(node, ast.Assign)
                and [ast.unparse(t) for t in node.targets] == ["outputs"]
                and isinstance(node.value, ast.Dict)
            ):
                names |= {str(k.value) for k in node.value.keys if isinstance(k, ast.Constant)}
    return names


def test_the_outputs_table_lists_every_stack_output() -> None:
    rows = page("docs/platform.md").table(OUTPUTS_HEADER)
    documented = {name for row in rows for name in re.findall(r"`(\w+)`", row[0])}
    real = _declared_outputs()
    assert {"ArchiveUri", "StreamName"} <= real  # the scan sees the stacks' outputs
    assert documented == real, (
        f"documented but not declared: {sorted(documented - real)}; "
        f"declared but not documented: {sorted(real - documented)}"
    )
