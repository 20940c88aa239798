"""The process around the endpoints: graceful SIGTERM, workers, logs, metrics, OpenAPI."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openapi_spec_validator import validate

from dscloud.envelope import Artifact
from tests.runtime.server.conftest import Server, publish_all


def test_sigterm_drains_the_request_in_flight(
    tmp_path: Path, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    # given a request whose headers arrived but whose body is still on its way
    server = Server(publish_all(tmp_path / "a", churn_artifact), ["churn"], tmp_path / "log")
    body = orjson.dumps({"dataframe_records": churn_rows})
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head + body[:10])
        time.sleep(0.3)
        # when the server is told to stop
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # then new connections are refused, but the request in flight completes
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/health/live", timeout=2)
        s.sendall(body[10:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response
    assert b'"predictions"' in response
    # uvicorn re-raises the signal once drained: the exit status says SIGTERM, cleanly
    assert server.stop() in (0, -signal.SIGTERM)
    assert any("Finished server process" in line for line in server.log_lines())


def test_one_json_log_line_per_request(
    tmp_path: Path, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    server = Server(
        publish_all(tmp_path / "a", churn_artifact), ["churn@production"], tmp_path / "log"
    )
    with server.client() as client:
        for _ in range(3):
            client.post("/invocations", json={"dataframe_records": churn_rows})
        client.post("/invocations", json={"dataframe_records": [{"plan": 1}]})
        client.get("/nowhere")
    server.stop()
    records = [json.loads(line) for line in server.log_lines()]  # every line is JSON
    access = [r for r in records if r["logger"] == "dscloud.server.access"]
    paths = [r["path"] for r in access if r["path"] != "/v2/health/ready"]
    assert paths == ["/invocations"] * 4 + ["/nowhere"]
    ok = next(r for r in access if r["path"] == "/invocations")
    assert ok["status"] == 200 and ok["model"] == "churn" and ok["version"] == 1
    assert ok["rows"] == len(churn_rows) and ok["latency_ms"] >= 0
    bad = [r for r in access if r["status"] == 400]
    assert len(bad) == 1 and "plan" in bad[0]["error"]


def test_metrics_count_by_model_version_and_status(
    client: httpx.Client, churn_rows: list[dict[str, Any]]
) -> None:
    before = client.get("/metrics").text
    client.post("/invocations?model=churn", json={"dataframe_records": churn_rows})
    client.post("/invocations?model=churn", json={"dataframe_records": [{"age": "x"}]})
    text = client.get("/metrics").text
    ok = 'dsc_requests_total{endpoint="invocations",model="churn",version="1",status="200"}'
    bad = 'dsc_requests_total{endpoint="invocations",model="churn",version="1",status="400"}'

    def value(text: str, series: str) -> float:
        return next(
            (float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)), 0.0
        )

    assert value(text, ok) == value(before, ok) + 1
    assert value(text, bad) == value(before, bad) + 1
    assert (
        'dsc_request_duration_seconds_bucket{endpoint="invocations",model="churn",version="1",le="+Inf"}'
        in text
    )
    assert 'dsc_model_info{model="churn",version="1",sha256=' in text
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_openapi_document_is_valid_and_matches_the_routes(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    validate(doc)
    for path, ops in doc["paths"].items():
        url = path.replace("{name}", "churn").replace("{version}", "1")
        for method in ops:
            r = client.request(
                method.upper(), url, params={"model": "churn"} if url == "/invocations" else None
            )
            assert r.status_code not in (404, 405), (method, path)


def test_two_workers_serve_from_the_environment(
    tmp_path: Path, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    server = Server(
        publish_all(tmp_path / "a", churn_artifact),
        ["churn@production"],
        tmp_path / "log",
        DSC_WORKERS="2",
    )
    try:
        with server.client() as client:
            answers = [
                client.post("/invocations", json={"dataframe_records": churn_rows})
                for _ in range(10)
            ]
            assert {r.status_code for r in answers} == {200}
            assert 'worker="' in client.get("/metrics").text
    finally:
        assert server.stop() in (0, -signal.SIGTERM)
    started = [line for line in server.log_lines() if '"serving"' in line]
    assert len(started) == 2


def test_unservable_model_stops_the_command(tmp_path: Path, churn_artifact: Artifact) -> None:
    archive = publish_all(tmp_path / "a", churn_artifact)
    with pytest.raises(RuntimeError, match="no model 'nope'"):
        Server(archive, ["nope@production"], tmp_path / "log")
