"""docs/batch.md lists exactly the input formats `dsc score` reads, with their suffixes."""

from __future__ import annotations

import re

from dscloud.batch import formats
from tests.docs.pages import page


def test_the_formats_table_is_the_registry() -> None:
    rows = page("docs/batch.md").table("| format |")
    documented = {row[1].strip("`"): tuple(re.findall(r"`([^`]+)`", row[2])) for row in rows}
    registered = {name: tuple(formats.named(name).suffixes) for name in formats.names()}
    assert documented == registered
