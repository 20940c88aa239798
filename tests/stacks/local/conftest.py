"""A moto server on 127.0.0.1 for the local-target tests, one per session, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from stacks.local import server
from stacks.local.server import MotoServer

REGION = "eu-west-1"


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A fresh moto server, its state in a temporary directory."""
    state = tmp_path_factory.mktemp("moto-state")
    running = server.start(state)
    yield running
    server.stop(state)


@pytest.fixture(scope="session")
def aws(moto: MotoServer) -> Any:
    """`aws(service)`: a boto3 client for the session's moto server."""

    def make(service: str) -> Any:
        factory: Any = boto3.client
        return factory(
            service,
            endpoint_url=moto.endpoint,
            region_name=REGION,
            aws_access_key_id="dsc-local",
            aws_secret_access_key="dsc-local",
        )

    return make


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A directory for one test's server state."""
    return tmp_path / "state"
