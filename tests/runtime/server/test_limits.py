"""Hostile clients: deep nesting, slow headers and bodies, too many requests, too much
memory at once. Every answer is a 4xx or a 503 with Retry-After, health checks keep
answering, and metadata tells a client nothing about the archive's insides."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import dscloud
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.errors import ConfigError
from dscloud.server.admission import JSON_COST, MAX_COST, check_budget
from dscloud.server.deadlines import BodyDeadlines
from tests.runtime.server.conftest import Server, publish_all
from tests.runtime.server.test_live import corrupt, move_alias_unchecked

DEEP = 1000


#: Stands for the deep value in a body until it is encoded (json.dumps cannot go that deep).
DEEP_VALUE = "@deep@"


def encode(body: Any) -> str:
    return json.dumps(body).replace(json.dumps(DEEP_VALUE), "[" * DEEP + "1" + "]" * DEEP)


def deep_bodies(row: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each JSON form with one value nested ``DEEP`` lists down."""
    names = list(row)
    deep = DEEP_VALUE
    return {
        "dataframe_records": (
            "/invocations?model=churn",
            {"dataframe_records": [{**row, "tenure_months": deep}]},
        ),
        "dataframe_split": (
            "/invocations?model=churn",
            {"dataframe_split": {"columns": names, "data": [[deep, *list(row.values())[1:]]]}},
        ),
        "instances": ("/invocations?model=churn", {"instances": [{**row, "age": deep}]}),
        "inputs": (
            "/invocations?model=churn",
            {"inputs": {**{k: [v] for k, v in row.items()}, "age": [deep]}},
        ),
        "oip": (
            "/v2/models/churn/infer",
            {"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": deep}]},
        ),
        "whole body": ("/invocations?model=churn", DEEP_VALUE),  # type: ignore[dict-item]
    }


@pytest.mark.parametrize(
    "form", ["dataframe_records", "dataframe_split", "instances", "inputs", "oip", "whole body"]
)
def test_json_nested_a_thousand_deep_is_a_client_error(
    client: httpx.Client, churn_rows: list[dict[str, Any]], form: str
) -> None:
    path, body = deep_bodies(churn_rows[0])[form]
    r = client.post(path, content=encode(body), headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


def test_a_failed_refresh_is_reported_without_archive_paths(
    tmp_path: Path, churn_artifact: Artifact
) -> None:
    archive = publish_all(tmp_path / "archive", churn_artifact)
    server = Server(archive, ["churn@production"], tmp_path / "server.log")
    try:
        # given version 2 corrupted after publishing, and the alias moved to it anyway
        dscloud.publish(churn_artifact, archive)
        corrupt(archive, 2)
        move_alias_unchecked(archive, 2)
        with server.client() as client:
            deadline = time.monotonic() + 30
            error = None
            while error is None and time.monotonic() < deadline:
                error = client.get("/v2/models/churn").json()["parameters"]["last_refresh_error"]
                time.sleep(0.1)
        # then the answer names the version and the kind of failure, and no path
        assert error is not None
        assert "version 2" in error and "sha256" in error
        assert str(tmp_path) not in error and "models/churn" not in error
    finally:
        server.stop()
    assert "models/churn/versions/2" in "\n".join(server.log_lines())  # the log has it all


@pytest.fixture(scope="module")
def strict_server(
    served_archive: Archive, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server with short deadlines, one scoring request at a time and a small budget."""
    log = tmp_path_factory.mktemp("limits") / "server.log"
    srv = Server(
        served_archive,
        ["churn@production"],
        log,
        DSC_HEADER_SECONDS="2",
        DSC_BODY_SECONDS="2",
        DSC_MAX_CONCURRENT="2",
        DSC_MAX_BODY_BYTES="100000",
        # one JSON body of 100,000 bytes and one of 90,000 fit; not two of 100,000 / 95,000
        DSC_MEMORY_BUDGET_BYTES=str(int(190_000 * JSON_COST)),
    )
    yield srv
    srv.stop()


def open_socket(server: Server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return s


def start_post(server: Server, length: int, path: str = "/invocations") -> socket.socket:
    """A POST whose headers are sent and whose body (``length`` bytes) is not."""
    s = open_socket(server)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    return s


def answer(s: socket.socket) -> tuple[int, str]:
    """The status and the raw head of the answer on ``s``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return int(head.split()[1]), head


def closed_by_server(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_slow_connections_do_not_starve_health_checks_and_are_closed(
    strict_server: Server,
) -> None:
    # given a thousand connections sending their headers one piece at a time
    slow = []
    try:
        for _ in range(1000):
            s = open_socket(strict_server)
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        # when a health check comes meanwhile, then it answers
        with strict_server.client() as client:
            assert client.get("/ping").status_code == 200
            assert client.get("/v2/health/ready").status_code == 200
        # and the slow ones are closed once their header deadline (2 s) has passed
        time.sleep(2)
        assert all(closed_by_server(s, 10) for s in slow)
    finally:
        for s in slow:
            s.close()


def test_a_body_that_does_not_arrive_in_time_is_a_408(strict_server: Server) -> None:
    s = start_post(strict_server, 50)
    try:
        s.sendall(b'{"dataframe_records"')  # and then nothing
        status, _ = answer(s)
    finally:
        s.close()
    assert status == 408


def test_one_timer_keeps_every_body_deadline() -> None:
    # given two bodies being read at once: one arrives in time, the other never
    deadlines = BodyDeadlines(0.2)

    async def read(arrives: asyncio.Future[bytes]) -> str:
        task = deadlines.start()
        try:
            await arrives
        except asyncio.CancelledError:
            return "late" if deadlines.late(task) else "cancelled"
        finally:
            deadlines.stop(task)
        return "arrived"

    async def main() -> tuple[list[str], bool]:
        loop = asyncio.get_running_loop()
        on_time, never = loop.create_future(), loop.create_future()
        loop.call_later(0.05, on_time.set_result, b"{}")
        outcome = await asyncio.gather(read(on_time), read(never))
        return outcome, deadlines._timer is None

    # then the late one is told apart from any other cancellation, and no timer is left
    assert asyncio.run(main()) == (["arrived", "late"], True)


def test_over_the_concurrency_cap_is_a_503_with_retry_after(
    strict_server: Server, churn_rows: list[dict[str, Any]]
) -> None:
    # given two scoring requests in flight (their bodies still arriving)
    held = [start_post(strict_server, 1000) for _ in range(2)]
    try:
        time.sleep(0.3)
        with strict_server.client() as client:
            # when a third comes, then it is refused for now; health is unaffected
            r = client.post("/invocations", json={"dataframe_records": churn_rows})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert "DSC_MAX_CONCURRENT" in r.json()["error"]
            assert client.get("/ping").status_code == 200
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    with strict_server.client() as client:
        assert (
            client.post("/invocations", json={"dataframe_records": churn_rows}).status_code == 200
        )


def test_over_the_memory_budget_is_a_503_with_retry_after(
    strict_server: Server, churn_rows: list[dict[str, Any]]
) -> None:
    # given a JSON request of 100,000 bytes in flight: more than half the budget
    held = start_post(strict_server, 100_000)
    try:
        time.sleep(0.3)
        # when one of 95,000 bytes comes, then it does not fit
        second = start_post(strict_server, 95_000)
        second.sendall(b" " * 95_000)
        status, head = answer(second)
        second.close()
        assert status == 503
        assert "retry-after: 1" in head.lower()
        # but a small one does
        with strict_server.client() as client:
            r = client.post("/invocations", json={"dataframe_records": churn_rows})
            assert r.status_code == 200, r.text
    finally:
        held.close()


def test_a_budget_that_cannot_take_one_largest_body_is_refused_at_start() -> None:
    check_budget(0, 10**9)  # no budget: nothing to check
    check_budget(int(1000 * MAX_COST), 1000)
    with pytest.raises(ConfigError, match="DSC_MEMORY_BUDGET_BYTES"):
        check_budget(int(1000 * MAX_COST) - 1, 1000)
