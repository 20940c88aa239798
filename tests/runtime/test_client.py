"""dscloud/client.py and `dsc invoke`: requests signed with SigV4 reach a real `dsc serve`.

The deployed endpoint is an API Gateway HTTP API with IAM authorization; it cannot run
here. In its place stands `Verifier`, a small HTTP proxy on 127.0.0.1 that does what API
Gateway does with a signed request: recompute the SigV4 signature with botocore from the
secret it knows for the key id, refuse with 403 unless it matches exactly (method, path,
query, signed headers and the body's hash), and only then forward to the real server.
"""

from __future__ import annotations

import datetime
import hmac
import json
import re
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dscloud.archive import Archive
from dscloud.cli import main
from dscloud.client import EndpointClient, region_of
from dscloud.envelope import Artifact
from dscloud.errors import ConfigError, EndpointError
from tests.runtime.server.conftest import Server, publish_all

REGION = "eu-west-1"
KEY_ID, SECRET = "AKIADSCLOUDTEST00001", "known-test-secret/abcdefghijklmnopqrstuv"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<headers>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_MAX_SKEW = datetime.timedelta(minutes=5)


class Verifier:
    """A SigV4-verifying proxy to ``upstream``: API Gateway's IAM check, in the test."""

    def __init__(self, upstream: str, secrets: dict[str, str]) -> None:
        self.upstream = upstream
        self.secrets = secrets
        self.forwarded = 0
        self.refusals: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refusal(self, method: str, path: str, headers: Any, body: bytes) -> str | None:
        """Why the request is refused, or None when its signature is valid."""
        match = _AUTHORIZATION.match(headers.get("Authorization", ""))
        if match is None:
            return "Missing Authentication Token"
        secret = self.secrets.get(match["key"])
        if secret is None:
            return "The security token included in the request is invalid"
        if (match["region"], match["service"]) != (REGION, "execute-api"):
            return "Credential should be scoped to a valid region and service"
        amz_date = headers.get("X-Amz-Date", "")
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC
        )
        if abs(datetime.datetime.now(datetime.UTC) - signed_at) > _MAX_SKEW:
            return "Signature expired"
        signed = match["headers"].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return "host and x-amz-date must be signed"
        request = AWSRequest(
            method=method,
            url=f"http://{headers['Host']}{path}",
            data=body,
            headers={name: headers[name] for name in signed if headers.get(name) is not None},
        )
        request.context["timestamp"] = amz_date
        token = headers.get("X-Amz-Security-Token")
        signer = SigV4Auth(Credentials(match["key"], secret, token), "execute-api", REGION)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, match["signature"]):
            return "The request signature we calculated does not match the signature you provided"
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        verifier = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reason = verifier.refusal(self.command, self.path, self.headers, body)
                if reason is not None:
                    verifier.refusals.append(reason)
                    self._answer(403, json.dumps({"message": reason}).encode(), {})
                    return
                verifier.forwarded += 1
                forwarded = httpx.request(
                    self.command,
                    verifier.upstream + self.path,
                    content=body,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                    timeout=30,
                )
                kept = {k: v for k, v in forwarded.headers.items() if k.startswith("x-model-")}
                self._answer(forwarded.status_code, forwarded.content, kept)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

        return Handler


class StaticSession:
    """A session with fixed credentials (what boto3.Session(aws_access_key_id=...) gives)."""

    region_name = REGION

    def __init__(self, key_id: str, secret: str) -> None:
        self.credentials = Credentials(key_id, secret)

    def get_credentials(self) -> Credentials:
        return self.credentials


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, churn_artifact: Artifact) -> Iterator[Server]:
    archive: Archive = publish_all(tmp_path_factory.mktemp("client") / "archive", churn_artifact)
    server = Server(archive, ["churn@production"], tmp_path_factory.mktemp("log") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def verifier(served: Server) -> Iterator[Verifier]:
    proxy = Verifier(served.url, {KEY_ID: SECRET})
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def rows_json(churn_artifact: Artifact) -> bytes:
    rows = [dict(g.inputs) for g in churn_artifact.envelope.goldens]
    return json.dumps({"dataframe_records": rows}).encode()


def signed(url: str, secret: str = SECRET) -> EndpointClient:
    return EndpointClient(url, session=StaticSession(KEY_ID, secret))


def test_a_signed_call_is_verified_and_answers_as_the_server_does(
    served: Server, verifier: Verifier, rows_json: bytes
) -> None:
    direct = httpx.post(
        f"{served.url}/invocations?model=churn",
        content=rows_json,
        headers={"Content-Type": "application/json"},
    )

    answer = signed(verifier.url).invocations(rows_json, model="churn")

    assert (verifier.forwarded, verifier.refusals) == (1, [])
    assert answer.status == 200
    assert answer.json() == direct.json()
    assert answer.headers["x-model-name"] == "churn"


def test_a_signed_csv_call_round_trips(
    served: Server, verifier: Verifier, churn_artifact: Artifact
) -> None:
    rows = [dict(g.inputs) for g in churn_artifact.envelope.goldens]
    columns = list(rows[0])
    cell = lambda value: "" if value is None else str(value)  # noqa: E731 - missing is empty
    csv = "\n".join([",".join(columns), *(",".join(cell(r[c]) for c in columns) for r in rows)])

    answer = signed(verifier.url).invocations(csv.encode(), model="churn", content_type="text/csv")

    assert answer.status == 200
    assert len(answer.json()["predictions"]) == len(rows)


def test_a_signed_open_inference_protocol_call_round_trips(
    served: Server, verifier: Verifier, churn_artifact: Artifact
) -> None:
    metadata = httpx.get(f"{served.url}/v2/models/churn").json()
    golden = churn_artifact.envelope.goldens[0].inputs
    inputs = []
    for tensor in metadata["inputs"]:
        value = golden[tensor["name"]]
        inputs.append(
            {"name": tensor["name"], "shape": [1], "datatype": tensor["datatype"], "data": [value]}
        )

    answer = signed(verifier.url).infer("churn", {"inputs": inputs})

    assert answer.status == 200
    assert answer.json()["model_name"] == "churn"


def test_a_request_signed_with_a_wrong_secret_is_refused_before_the_server(
    verifier: Verifier, rows_json: bytes
) -> None:
    with pytest.raises(EndpointError) as refused:
        signed(verifier.url, secret="not-the-secret").invocations(rows_json, model="churn")

    assert refused.value.status == 403
    assert "signature" in refused.value.message
    assert verifier.forwarded == 0


def test_an_unsigned_request_is_refused(verifier: Verifier, rows_json: bytes) -> None:
    with pytest.raises(EndpointError, match="403"):
        EndpointClient(verifier.url, sign=False).invocations(rows_json, model="churn")

    assert verifier.refusals == ["Missing Authentication Token"]


def test_the_signature_covers_the_body(verifier: Verifier, rows_json: bytes) -> None:
    # given headers signed for one body
    client = signed(verifier.url)
    assert client._signer is not None
    url = f"{verifier.url}/invocations?model=churn"
    headers = client._signer.sign("POST", url, rows_json, {"Content-Type": "application/json"})
    # when another body is sent with them
    tampered = rows_json.replace(b"}", b', "extra": 1}', 1)
    request = urllib.request.Request(url, data=tampered, headers=headers, method="POST")

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)

    assert refused.value.code == 403
    assert verifier.forwarded == 0


def test_a_server_error_answer_raises_with_the_servers_message(verifier: Verifier) -> None:
    with pytest.raises(EndpointError) as error:
        signed(verifier.url).invocations(b'{"dataframe_records": [{"nope": 1}]}', model="churn")

    assert error.value.status == 400
    assert verifier.forwarded == 1


def test_dsc_invoke_signs_with_the_environments_credentials(
    verifier: Verifier,
    rows_json: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    body = tmp_path / "rows.json"
    body.write_bytes(rows_json)

    code = main(["invoke", verifier.url, "--model", "churn", "--json", f"@{body}"])

    assert code == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) > 0
    assert verifier.forwarded == 1


def test_dsc_invoke_with_a_wrong_secret_fails_with_the_refusal(
    verifier: Verifier,
    rows_json: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    code = main(
        [
            "invoke",
            verifier.url,
            "--region",
            REGION,
            "--json",
            rows_json.decode(),
            "--model",
            "churn",
        ]
    )

    assert code == 1
    assert "answered 403" in capsys.readouterr().err


def test_dsc_invoke_unsigned_calls_a_local_server(
    served: Server, rows_json: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["invoke", served.url, "--unsigned", "--model", "churn", "--json", rows_json.decode()]
    )

    assert code == 0
    assert "predictions" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/", "cn-north-1"),
        ("https://models.example.com", None),
        ("http://127.0.0.1:8080", None),
    ],
)
def test_the_region_comes_from_an_execute_api_url(url: str, region: str | None) -> None:
    assert region_of(url) == region


def test_a_custom_domain_without_a_region_is_a_config_error() -> None:
    class NoRegion(StaticSession):
        region_name = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="region"):
        EndpointClient("https://models.example.com", session=NoRegion(KEY_ID, SECRET))


def test_no_credentials_is_a_config_error() -> None:
    class Anonymous(StaticSession):
        def get_credentials(self) -> None:  # type: ignore[override]
            return None

    with pytest.raises(ConfigError, match="credentials"):
        EndpointClient("https://a.execute-api.eu-west-1.amazonaws.com", session=Anonymous("", ""))


def test_a_url_without_a_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="endpoint URL"):
        EndpointClient("abc.execute-api.eu-west-1.amazonaws.com", sign=False)


def test_signing_without_botocore_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "botocore.session", None)

    with pytest.raises(ConfigError, match=r"dscloud\[client\]"):
        EndpointClient("https://a.execute-api.eu-west-1.amazonaws.com")
