"""Bad input gets a 4xx naming the field and the expected schema; never a 500."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from tests.runtime.server.conftest import Server


def row(churn_rows: list[dict[str, Any]], **change: Any) -> dict[str, Any]:
    return {**churn_rows[0], **change}


def tensor(
    name: str, data: list[Any], *, datatype: str = "FP32", shape: Any = None
) -> dict[str, Any]:
    return {
        "name": name,
        "shape": shape if shape is not None else [len(data)],
        "datatype": datatype,
        "data": data,
    }


def full_inputs(churn_rows: list[dict[str, Any]], **replace: dict[str, Any]) -> dict[str, Any]:
    r = churn_rows[0]
    inputs = [
        replace.get(k) or tensor(k, [v], datatype="BYTES" if isinstance(v, str) else "FP32")
        for k, v in r.items()
    ]
    return {"inputs": inputs}


RECORD_CASES = {
    # name: (change to one row, status, text the message must hold)
    "unknown column": ({"colour": "red"}, 400, "unknown column 'colour'"),
    "wrong type": ({"tenure_months": "long"}, 400, "column 'tenure_months': expected a number"),
    "boolean for number": ({"age": True}, 400, "column 'age'"),
    "null where refused": ({"plan": None}, 400, "column 'plan' is null"),
    "huge integer": ({"support_calls": 18446744073709551615}, 200, ""),
}


@pytest.mark.parametrize("case", list(RECORD_CASES))
def test_bad_records(client: httpx.Client, churn_rows: list[dict[str, Any]], case: str) -> None:
    change, status, text = RECORD_CASES[case]
    r = client.post(
        "/invocations?model=churn", json={"dataframe_records": [row(churn_rows, **change)]}
    )
    assert r.status_code == status, r.text
    if status != 200:
        body = r.json()
        assert text in body["error"]
        assert body["field"] == next(iter(change))
        assert body["expected"]["tenure_months"] == "a number"


def test_missing_column_names_it(client: httpx.Client, churn_rows: list[dict[str, Any]]) -> None:
    rec = {k: v for k, v in churn_rows[0].items() if k != "region"}
    r = client.post("/invocations?model=churn", json={"dataframe_records": [rec]})
    assert r.status_code == 400
    assert r.json()["field"] == "region"
    assert "region" in r.json()["error"]


def test_unknown_category_where_refused(
    client: httpx.Client, churn_rows: list[dict[str, Any]]
) -> None:
    body = {"dataframe_records": [row(churn_rows, plan="platinum")]}
    # the churn model one-hot encodes with handle_unknown="ignore": it scores the row
    assert client.post("/invocations?model=churn", json=body).status_code == 200
    # the strict variant refuses it, naming the allowed categories
    r = client.post("/invocations?model=strict", json=body)
    assert r.status_code == 400
    assert "expected one of ['basic', 'premium', 'standard'], got 'platinum'" in r.json()["error"]


OIP_CASES = {
    "wrong datatype": (
        {"plan": tensor("plan", ["basic"], datatype="FP32")},
        "datatype FP32 does not fit",
    ),
    "bad datatype": ({"age": tensor("age", [1.0], datatype="FLOAT")}, "not an OIP v2 datatype"),
    "wrong shape": ({"age": tensor("age", [1.0, 2.0], shape=[1])}, "needs 1 values"),
    "matrix shape": ({"age": tensor("age", [1.0, 2.0], shape=[1, 2])}, "not a column"),
    "row count": ({"age": tensor("age", [1.0, 2.0])}, "same first dimension"),
    "negative shape": ({"age": tensor("age", [1.0], shape=[-1])}, "non-negative"),
    "unknown input": ({"age": tensor("colour", [1.0])}, "unknown column 'colour'"),
}


@pytest.mark.parametrize("case", list(OIP_CASES))
def test_bad_tensors(client: httpx.Client, churn_rows: list[dict[str, Any]], case: str) -> None:
    replace, text = OIP_CASES[case]
    r = client.post("/v2/models/churn/infer", json=full_inputs(churn_rows, **replace))
    assert r.status_code == 400, r.text
    assert text in r.json()["error"]
    assert r.json()["field"] is not None


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"",
        b"[]",
        b'"inputs"',
        b'{"inputs": []}',
        b'{"inputs": [1]}',
        b'{"inputs": [{"name": 3}]}',
        b'{"inputs": [{"name": "age"}]}',
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": 5}]}',
        b'{"inputs": [{"name": "age", "shape": [2], "datatype": "FP32", "data": [[1], 2]}]}',
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": 3}',
        b'{"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 3}',
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe",
    ],
)
def test_malformed_infer_bodies_are_400(client: httpx.Client, body: bytes) -> None:
    r = client.post(
        "/v2/models/churn/infer", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"dataframe_split": [1]},
        {"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": [1], "data": []}},
        {"dataframe_records": {"age": 1}},
        {"dataframe_records": [1, 2]},
        {"instances": 5},
        {"instances": [[1, 2]]},
        {"inputs": {"age": 1}},
        {"inputs": {"age": [1], "plan": ["a", "b"]}},
        {"dataframe_records": [], "params": {}},
        [],
    ],
)
def test_malformed_invocations_are_400(client: httpx.Client, body: Any) -> None:
    r = client.post("/invocations?model=churn", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"hello", 415),
        ("application/x-www-form-urlencoded", b"a=1", 415),
        ("text/csv", b"", 400),
        ("text/csv", b"age,colour\n1,2\n", 400),
        ("text/csv", b"age,age\n1,2\n", 400),
        ("text/csv", b"age,plan\n1\n", 400),
        ("text/csv", b"\xff\xfe", 400),
    ],
)
def test_bad_media(client: httpx.Client, content_type: str, body: bytes, status: int) -> None:
    r = client.post(
        "/invocations?model=churn", content=body, headers={"content-type": content_type}
    )
    assert r.status_code == status, r.text


def test_body_too_large_is_413(client: httpx.Client) -> None:
    # the module's server has a 256 KiB limit
    big = b'{"dataframe_records": [' + b'{"age": 1.0},' * 30_000 + b'{"age": 1.0}]}'
    r = client.post(
        "/invocations?model=churn", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert "DSC_MAX_BODY_BYTES" in r.json()["error"]
    # the connection and the server are still fine
    assert client.get("/v2/health/ready").status_code == 200


def test_chunked_body_too_large_is_413(client: httpx.Client) -> None:
    def chunks():  # no content-length: the limit is enforced while reading
        for _ in range(100):
            yield b"x" * 8192

    r = client.post(
        "/invocations?model=churn", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_wrong_method_and_path(client: httpx.Client) -> None:
    wrong = client.get("/v2/models/churn/infer")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert client.get("/nowhere").status_code == 404
    assert client.get("/nowhere").json()["error"]


def test_garbage_on_the_socket_does_not_wedge_the_server(server: Server) -> None:
    # when: a client sends bytes that are not HTTP, and another hangs up mid-body
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"\x00\x01 not http\r\n\r\n")
        s.recv(1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            b'POST /invocations?model=churn HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"da'
        )
        time.sleep(0.3)  # the server is now waiting for the rest of the body
    # then the server still answers, and recorded the hang-up as the client's doing
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=5).status_code == 200
    deadline = time.monotonic() + 10
    while 'status="499"' not in httpx.get(f"{server.url}/metrics", timeout=5).text:
        assert time.monotonic() < deadline, "the hang-up was not recorded"
        time.sleep(0.05)


def test_no_client_error_was_a_500(client: httpx.Client) -> None:
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics
