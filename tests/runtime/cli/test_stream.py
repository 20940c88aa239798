"""`dsc stream ...` end to end against a moto server on 127.0.0.1 (over HTTP, like the demo)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from dscloud import cli
from dscloud.archive import Archive
from dscloud.stream import handler as handler_module


@pytest.fixture
def moto_endpoint(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield endpoint
    finally:
        handler_module.configure(None)
        server.stop()


def dsc(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_create_put_run_show(
    archive: Archive, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    made = json.loads(dsc(capsys, "stream", "create", "--stream", "events"))
    dsc(capsys, "stream", "put", "--stream", "events", "--example", "12", "--poison", "2")

    out = dsc(
        capsys,
        "--archive", archive.uri,
        "stream", "run", "--stream", "events",
        "--model", "churn@production",
        "--table", made["table"],
        "--rejects-queue-url", made["rejects_queue_url"],
        "--on-failure", made["failures_queue_url"],
        "--batch-size", "5",
        "--bisect-batch-on-error", "--report-batch-item-failures",
        "--retry-attempts", "2", "--timeout", "60",
    )  # fmt: skip
    report: dict[str, Any] = json.loads(out[out.index('{\n  "stopped"') :])
    assert report["stopped"] == "drained"
    assert report["records"] == 14
    assert report["shards"]["shardId-000000000000"]["checkpoint"] == "14"

    shown = dsc(
        capsys, "stream", "show", "--table", made["table"], "--queue", made["rejects_queue_url"]
    )
    assert "predictions: 12 predictions" in shown
    assert "rejects.fifo: 2 messages" in shown
    assert "expected a number, got str 'ten'" in shown


def test_bundle_needs_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bundle", "lambda"]) == 2
    assert "OUT.zip" in capsys.readouterr().err
