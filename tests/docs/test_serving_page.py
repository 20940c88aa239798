"""docs/serving.md lists exactly the routes the server answers, as its OpenAPI document
states them (tests/runtime/server checks that document against the live routes)."""

from __future__ import annotations

import re

from dscloud.server.openapi import openapi
from tests.docs.pages import page


def test_the_routes_table_is_the_servers_routes() -> None:
    rows = page("docs/serving.md").table("| route |")
    documented = {tuple(re.findall(r"`(\w+) (\S+)`", row[0])[0]) for row in rows}
    served = {
        (method.upper(), path)
        for path, operations in openapi(["churn"])["paths"].items()
        for method in operations
    }
    assert documented == served, (
        f"documented, not served: {sorted(documented - served)}; "
        f"served, not documented: {sorted(served - documented)}"
    )
