"""The server against its own OpenAPI document: a bounded schemathesis run.

Every operation of ``/openapi.json`` gets generated requests, valid and invalid; each answer
must be no 5xx and conform to the document (status codes, content types, headers, bodies).
Bounded: a fixed number of examples per operation, no deadline per example.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from dscloud.server.openapi import openapi
from tests.runtime.server.conftest import Server

MODELS = ["churn", "forest", "strict"]  # the models of the module-scoped `server` fixture

schema = schemathesis.openapi.from_dict(openapi(MODELS))


@pytest.fixture(scope="module")
def base_url(server: Server) -> str:
    return server.url


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_conforms_to_the_openapi_document(case: Any, base_url: str) -> None:
    # Not checked: that every schema-valid body is accepted. The document describes the
    # shape of a request; which columns, types and categories a body must carry depend on
    # the model named in the path, and such a body gets a 400 naming the field instead.
    case.call_and_validate(
        base_url=base_url, timeout=30, excluded_checks=[positive_data_acceptance]
    )
