"""Factories for the runtime's tests of signed calls: `dsc serve` behind a SigV4 verifier.

The deployed endpoint is an API Gateway HTTP API with IAM authorization; it cannot run
here. In its place stands `Verifier`, a small HTTP proxy on 127.0.0.1 that does what API
Gateway does with a signed request: recompute the SigV4 signature with botocore from the
secret it knows for the key id, refuse with 403 unless it matches exactly (method, path,
query, signed headers and the body's hash), and only then forward to the real server.

The drift tests' factories live here too: the churn model's training baseline, fresh
samples of the training distribution, and a known shift of them.
"""

from __future__ import annotations

import datetime
import hmac
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pandas as pd
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.baseline import Baseline, build_baseline
from dscloud.drift import DriftCounts
from dscloud.envelope import Artifact
from dscloud.scorer import Scorer
from tests.runtime.server.conftest import Server, publish_all

__all__ = [
    "KEY_ID",
    "REGION",
    "SECRET",
    "StaticSession",
    "Verifier",
    "columns_of",
    "counted",
    "shifted",
]

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
def churn_server(
    tmp_path_factory: pytest.TempPathFactory, churn_artifact: Artifact
) -> Iterator[Server]:
    """`dsc serve` of churn@production on 127.0.0.1, once per test module."""
    archive: Archive = publish_all(tmp_path_factory.mktemp("client") / "archive", churn_artifact)
    server = Server(archive, ["churn@production"], tmp_path_factory.mktemp("log") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def verifier(churn_server: Server) -> Iterator[Verifier]:
    """A fresh verifier (counts start at zero) in front of `churn_server`, knowing KEY_ID."""
    proxy = Verifier(churn_server.url, {KEY_ID: SECRET})
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def rows_json(churn_artifact: Artifact) -> bytes:
    """The churn model's golden inputs as an MLflow `dataframe_records` body."""
    rows = [dict(g.inputs) for g in churn_artifact.envelope.goldens]
    return json.dumps({"dataframe_records": rows}).encode()


# -- drift: the training baseline, fresh and shifted samples --------------------------


def columns_of(frame: pd.DataFrame) -> dict[str, Any]:
    """A frame's feature columns as numpy arrays, as the batch reader hands them over."""
    return {name: frame[name].to_numpy() for name in example.FEATURES}


@pytest.fixture(scope="session")
def churn_scorer(churn_artifact: Artifact) -> Scorer:
    return Scorer(churn_artifact)


@pytest.fixture(scope="session")
def churn_baseline(churn_example: example.TrainedExample, churn_scorer: Scorer) -> Baseline:
    """The baseline packaging builds: features from the training rows, predictions from
    the model's outputs on the rows it was checked on."""
    sample = churn_example.X_test
    preds = churn_scorer.score_columns(columns_of(sample), len(sample))
    return build_baseline(churn_scorer.schema, columns_of(churn_example.X_train), preds)


@pytest.fixture(scope="session")
def fresh_sample() -> pd.DataFrame:
    """New rows from the training distribution (another seed): no drift."""
    return example.churn_data(4000, seed=1)


def shifted(frame: pd.DataFrame, *, seed: int = 2) -> pd.DataFrame:
    """``age`` moved up by one standard deviation and the ``standard`` plan's share doubled
    (30% -> 60%, taken evenly from the other plans); every other column as it was."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["age"] = out["age"] + out["age"].std()
    others = np.flatnonzero(out["plan"].to_numpy() != "standard")
    wanted = int(0.6 * len(out)) - int((out["plan"] == "standard").sum())
    out.loc[rng.choice(others, wanted, replace=False), "plan"] = "standard"
    return out


def counted(baseline: Baseline, scorer: Scorer, frame: pd.DataFrame) -> DriftCounts:
    """Score ``frame`` and count what scored, as every runtime does."""
    columns = columns_of(frame)
    counts = DriftCounts(baseline)
    counts.add_scored(columns, scorer.score_columns(columns, len(frame)))
    return counts


@pytest.fixture(scope="session")
def churn_retrained(churn_example: example.TrainedExample) -> Artifact:
    """The churn pipeline refitted with strong regularisation (C=0.01): the same interface
    as ``churn_artifact``, different predictions (a rollout candidate worth comparing)."""
    ex = example.train(seed=0, rows=3000, C=0.01)
    return dscloud.package(ex.estimator, ex.X_test, name="churn", training_data=ex.X_train)


@pytest.fixture(params=["dir", "s3"])
def rollout_archive(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    churn_artifact: Artifact,
    churn_retrained: Artifact,
) -> Iterator[Archive]:
    """churn@1 (serving, alias production) and churn@2 (the retrained candidate), in a
    directory archive and in an S3 archive on moto."""

    def filled(archive: Archive) -> Archive:
        dscloud.publish(churn_artifact, archive)
        dscloud.publish(churn_retrained, archive)
        archive.promote("churn", 1, "production", by="tests")
        return archive

    if request.param == "dir":
        yield filled(Archive.open(tmp_path / "archive"))
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        yield filled(Archive.open("s3://models/team-a", s3_client=client))
