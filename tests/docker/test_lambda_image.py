"""The Lambda container image behind a Lambda Runtime API, fed a Kinesis event.

Lambda starts the image's ENTRYPOINT (``python3 -m awslambdaric``) with the handler as its
argument and ``AWS_LAMBDA_RUNTIME_API`` pointing at the Runtime API; the runtime interface
client then polls ``/next``. Here the Runtime API is :mod:`tests.docker.lambda_runtime_api`,
DynamoDB and SQS are a moto server, and the container shares the host's network so both are
on 127.0.0.1. Lambda stops an execution environment with SIGKILL (SIGTERM goes only to
registered extensions), so the container is removed, not drained.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from dscloud import example
from dscloud.envelope import Artifact
from dscloud.scorer import Scorer
from dscloud.stream import local
from tests.docker.conftest import IMAGE_UID, Container
from tests.docker.lambda_runtime_api import FUNCTION_ARN, RuntimeApi
from tests.runtime.stream.conftest import kinesis_event

pytestmark = [pytest.mark.images, pytest.mark.usefixtures("built_images")]

REGION = "us-east-1"


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi()
    try:
        yield api
    finally:
        api.close()


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_function_answers_a_kinesis_batch_through_the_runtime_api(
    run_container: Any,
    runtime_api: RuntimeApi,
    moto_endpoint: str,
    image_archive: Path,
    churn_artifact: Artifact,
) -> None:
    # given: the online path's table and queues, and a batch with one poison record
    dynamodb, sqs = client("dynamodb", moto_endpoint), client("sqs", moto_endpoint)
    made = local.create_resources(
        kinesis=client("kinesis", moto_endpoint), dynamodb=dynamodb, sqs=sqs
    )
    features = example.churn_data(20, seed=5)[example.FEATURES]
    rows = json.loads(features.to_json(orient="records"))
    payloads = [
        json.dumps(
            {"entity_id": f"u{i:03d}", "features": row, "event_time": "2026-11-30T12:00:00Z"}
        ).encode()
        for i, row in enumerate(rows)
    ]
    payloads.insert(7, b"{not json")
    container: Container = run_container(
        "dsc-lambda",
        volumes={image_archive: "/archive:ro"},
        options=("--network", "host"),
        env={
            "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
            "AWS_LAMBDA_FUNCTION_NAME": "dsc-scorer",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/dsc-scorer",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/30/[$LATEST]0123456789abcdef",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": moto_endpoint,
            "DSC_ARCHIVE": "/archive",
            "DSC_MODELS": "churn@production",
            "DSC_PREDICTIONS_TABLE": made.table,
            "DSC_REJECTS_QUEUE_URL": made.rejects_url,
        },
    )
    # when
    answer = runtime_api.invoke(kinesis_event(payloads))
    # then: nothing to retry, every good record's prediction as the core scores it, the
    # poison record on the rejects queue
    assert answer.kind == "response", (answer, container.logs())
    assert answer.body == {"batchItemFailures": []}
    assert runtime_api.init_errors == []
    assert runtime_api.next_headers[0]["Lambda-Runtime-Invoked-Function-Arn"] == FUNCTION_ARN
    expected = Scorer(churn_artifact).score_records(rows).to_records()
    items = {item["entity_id"]["S"]: item for item in dynamodb.scan(TableName=made.table)["Items"]}
    assert sorted(items) == [f"u{i:03d}" for i in range(len(rows))]
    for i, outputs in enumerate(expected):
        item = items[f"u{i:03d}"]
        assert Decimal(item["label"]["N"]) == outputs["label"]
        stored = [float(v["N"]) for v in item["probabilities"]["M"].values()]
        assert stored == pytest.approx(outputs["probabilities"], abs=1e-6)
        assert item["model_sha256"]["S"] == churn_artifact.envelope.sha256
    rejects = sqs.receive_message(QueueUrl=made.rejects_url, MaxNumberOfMessages=10)["Messages"]
    assert len(rejects) == 1 and "JSON" in rejects[0]["Body"]
    assert "Traceback" not in container.logs()
    uid = subprocess.run(
        ["podman", "exec", container.name, "id", "-u"], capture_output=True, text=True, check=True
    )
    assert uid.stdout.strip() == str(IMAGE_UID)


def test_a_function_error_goes_to_the_error_endpoint(
    run_container: Any, runtime_api: RuntimeApi, image_archive: Path
) -> None:
    # given: a function missing its settings (no table, no queue)
    run_container(
        "dsc-lambda",
        volumes={image_archive: "/archive:ro"},
        options=("--network", "host"),
        env={
            "AWS_LAMBDA_RUNTIME_API": runtime_api.address,
            "AWS_REGION": REGION,
            "DSC_ARCHIVE": "/archive",
            "DSC_MODELS": "churn@production",
        },
    )
    # when
    answer = runtime_api.invoke(kinesis_event([b"{}"]))
    # then: Lambda records an error naming what is missing (and would retry the batch)
    assert answer.kind == "error"
    assert answer.body["errorType"] == "ConfigError"
    assert "DSC_PREDICTIONS_TABLE" in answer.body["errorMessage"]
