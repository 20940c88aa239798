"""Factories for the server tests: archives holding several models, and `dsc serve` running
in a subprocess on a free port of 127.0.0.1."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import dscloud
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.schema import Schema

READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strict_variant(artifact: Artifact) -> Artifact:
    """The churn model under the name ``strict``, refusing categories it never saw."""
    schema = artifact.envelope.schema
    columns = tuple(
        dataclasses.replace(c, allow_unknown=False) if c.categories is not None else c
        for c in schema.columns
    )
    envelope = dataclasses.replace(
        artifact.envelope, name="strict", schema=Schema(columns, schema.outputs)
    )
    return Artifact(envelope=envelope, model=artifact.model)


def publish_all(root: Path, *artifacts: Artifact) -> Archive:
    """A directory archive with each artifact as version 1 and alias production -> 1."""
    arch = Archive.open(root)
    for artifact in artifacts:
        dscloud.publish(artifact, arch)
        arch.promote(artifact.envelope.name, 1, "production", by="tests")
    return arch


class Server:
    """`dsc serve` in a subprocess; ``url`` once ready, ``stop()`` sends SIGTERM."""

    def __init__(
        self,
        archive: Archive,
        refs: list[str],
        log: Path,
        *,
        python: str = sys.executable,
        **env: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environ = {
            **os.environ,
            "DSC_ARCHIVE": archive.uri,
            "DSC_REFRESH_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [python, "-m", "dscloud.cli", "serve", *refs, "--port", str(self.port)],
            env=environ,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {READY_TIMEOUT}s: {self.log.read_text()}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        return self.proc.returncode

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture(scope="module")
def served_archive(
    tmp_path_factory: pytest.TempPathFactory, churn_artifact: Artifact, forest_artifact: Artifact
) -> Archive:
    """churn, forest and strict, each at version 1 with production -> 1 (read-only use)."""
    root = tmp_path_factory.mktemp("served") / "archive"
    return publish_all(root, churn_artifact, forest_artifact, strict_variant(churn_artifact))


@pytest.fixture(scope="module")
def server(served_archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server of churn, forest and strict for the tests that only read."""
    log = tmp_path_factory.mktemp("log") / "server.log"
    srv = Server(
        served_archive,
        ["churn@production", "forest@production", "strict@production"],
        log,
        DSC_MAX_BODY_BYTES=str(256 * 1024),
    )
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def churn_rows(churn_artifact: Artifact) -> list[dict[str, object]]:
    """Rows the churn model scores: its golden inputs."""
    return [dict(g.inputs) for g in churn_artifact.envelope.goldens]
