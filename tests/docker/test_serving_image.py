"""The serving image as ECS and SageMaker start it: answers, user, health check, drain, memory.

ECS runs the image's CMD (``serve``) with ``DSC_ARCHIVE``/``DSC_MODELS``; SageMaker runs
``docker run IMAGE serve`` with the artifact unpacked into ``/opt/ml/model``. Either way the
container runs as uid 10001 and reads a read-only archive that ``dsc`` wrote, unmodified.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dscloud.envelope import Artifact
from dscloud.settings import Settings
from stacks.config import ServingSettings
from stacks.serving import memory_budget_bytes
from tests.docker.conftest import IMAGE_UID, Container
from tests.runtime.server.test_oip import as_records, oip_request

pytestmark = [pytest.mark.images, pytest.mark.usefixtures("built_images")]

ARCHIVE = "/opt/ml/archive"


def golden_rows(artifact: Artifact) -> list[dict[str, Any]]:
    return [dict(g.inputs) for g in artifact.envelope.goldens]


def golden_outputs(artifact: Artifact) -> list[dict[str, Any]]:
    return [dict(g.outputs) for g in artifact.envelope.goldens]


def csv_body(rows: list[dict[str, Any]], *, at_least: int = 0) -> bytes:
    """``rows`` as CSV with a header, repeated until the body has ``at_least`` bytes."""
    header = ",".join(rows[0]) + "\n"
    lines = "".join(
        ",".join("" if v is None else str(v) for v in row.values()) + "\n" for row in rows
    )
    out = io.StringIO()
    out.write(header)
    out.write(lines)
    while out.tell() < at_least:
        out.write(lines)
    return out.getvalue().encode()


def start_ecs_task(run: Callable[..., Container], image_archive: Path) -> Container:
    """The image started as the ECS task definition starts it, ready."""
    container = run(
        "dsc-serving",
        port=True,
        volumes={image_archive: f"{ARCHIVE}:ro"},
        env={"DSC_ARCHIVE": ARCHIVE, "DSC_MODELS": "churn@production"},
    )
    container.wait_ready()
    return container


@pytest.fixture(scope="module")
def serving(run_module_container: Callable[..., Container], image_archive: Path) -> Container:
    """One ECS-started container for the tests that only send it requests."""
    return start_ecs_task(run_module_container, image_archive)


@pytest.fixture
def serving_to_stop(run_container: Callable[..., Container], image_archive: Path) -> Container:
    """An ECS-started container of the test's own, for a test that stops it."""
    return start_ecs_task(run_container, image_archive)


def test_ecs_layout_answers_invocations_and_oip_v2_as_uid_10001(
    serving: Container, churn_artifact: Artifact
) -> None:
    # given
    rows = golden_rows(churn_artifact)
    # when
    invocations = httpx.post(
        f"{serving.url}/invocations", json={"dataframe_records": rows}, timeout=30
    )
    oip = httpx.post(
        f"{serving.url}/v2/models/churn/infer",
        json=oip_request(churn_artifact, rows),
        timeout=30,
    )
    csv = httpx.post(
        f"{serving.url}/invocations",
        content=csv_body(rows),
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    # then
    assert invocations.status_code == 200, invocations.text
    assert invocations.json()["predictions"] == golden_outputs(churn_artifact)
    assert invocations.json()["model"]["sha256"] == churn_artifact.envelope.sha256
    assert oip.status_code == 200, oip.text
    assert as_records(oip.json()) == golden_outputs(churn_artifact)
    assert csv.status_code == 200, csv.text
    assert [p["label"] for p in csv.json()["predictions"]] == [
        o["label"] for o in golden_outputs(churn_artifact)
    ]
    uid = subprocess.run(
        ["podman", "exec", serving.name, "id", "-u"], capture_output=True, text=True, check=True
    )
    assert uid.stdout.strip() == str(IMAGE_UID)


def test_image_holds_no_training_libraries_and_its_healthcheck_passes(serving: Container) -> None:
    # the HEALTHCHECK survived the build (--format docker) and passes once the model is loaded
    health = subprocess.run(
        ["podman", "healthcheck", "run", serving.name], capture_output=True, text=True
    )
    assert health.returncode == 0, health.stdout + health.stderr
    sklearn = subprocess.run(
        ["podman", "exec", serving.name, "python3", "-c", "import sklearn"],
        capture_output=True,
        text=True,
    )
    assert "ModuleNotFoundError" in sklearn.stderr


def test_sagemaker_layout_serves_the_mounted_artifact(
    run_container: Any, tmp_path: Path, churn_artifact: Artifact
) -> None:
    # given: SageMaker unpacks model.tar.gz into /opt/ml/model and runs `IMAGE serve`
    model_dir = churn_artifact.write(tmp_path / "model")
    model_dir.chmod(0o755)
    for file in model_dir.iterdir():
        file.chmod(0o644)
    container: Container = run_container(
        "dsc-serving", "serve", port=True, volumes={model_dir: "/opt/ml/model:ro"}
    )
    container.wait_ready("/ping")
    # when
    scored = httpx.post(
        f"{container.url}/invocations",
        content=csv_body(golden_rows(churn_artifact)),
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    # then
    assert scored.status_code == 200, scored.text
    assert len(scored.json()["predictions"]) == len(churn_artifact.envelope.goldens)
    assert container.stop() == 0


def test_sigterm_drains_a_request_in_flight(
    serving_to_stop: Container, churn_artifact: Artifact
) -> None:
    # given: a request whose headers and first bytes have arrived, its body still coming
    body = json.dumps({"dataframe_records": golden_rows(churn_artifact)}).encode()
    assert serving_to_stop.port is not None
    sock = socket.create_connection(("127.0.0.1", serving_to_stop.port), timeout=60)
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:10])
    # a round trip on another connection: the server's loop has read the first one by now
    assert httpx.get(f"{serving_to_stop.url}/ping", timeout=10).status_code == 200
    # when: ECS stops the task
    serving_to_stop.signal("TERM")
    sock.sendall(body[10:])
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    # then: the request in flight was answered, and the server exited cleanly
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 200 " in status_line, answer[:500]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["predictions"] == golden_outputs(
        churn_artifact
    )
    assert serving_to_stop.wait() == 0, serving_to_stop.logs()


def test_unreadable_archive_is_one_line(run_container: Any, tmp_path: Path) -> None:
    # given: an archive only root can read (as `mkstemp` used to write it)
    private = tmp_path / "private"
    (private / "models").mkdir(parents=True)
    private.chmod(0o700)
    # when
    container: Container = run_container(
        "dsc-serving",
        volumes={private: f"{ARCHIVE}:ro"},
        env={"DSC_ARCHIVE": ARCHIVE, "DSC_MODELS": "churn@production"},
    )
    code = container.wait()
    # then
    lines = container.logs().strip().splitlines()
    assert code != 0
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith("dsc: error: archive: cannot read"), lines
    assert "Permission denied" in lines[-1] and f"uid {IMAGE_UID}" in lines[-1]


def test_concurrent_maximum_bodies_fit_the_default_task_memory(
    run_container: Any, image_archive: Path, churn_artifact: Artifact
) -> None:
    # given: the default Fargate task's memory, no swap (Fargate has none), the in-flight
    # memory budget the serving stack derives from it, and 8 bodies just under the limit
    task_mib = ServingSettings().memory_mib
    memory = f"{task_mib}m"
    container: Container = run_container(
        "dsc-serving",
        port=True,
        volumes={image_archive: f"{ARCHIVE}:ro"},
        env={
            "DSC_ARCHIVE": ARCHIVE,
            "DSC_MODELS": "churn@production",
            "DSC_MEMORY_BUDGET_BYTES": str(memory_budget_bytes(task_mib)),
        },
        options=("--memory", memory, "--memory-swap", memory),
    )
    container.wait_ready()
    limit = Settings.from_env({}).max_body_bytes
    body = csv_body(golden_rows(churn_artifact), at_least=limit - 64 * 1024)
    assert len(body) <= limit

    def post(_: int) -> int | str:
        try:
            return httpx.post(
                f"{container.url}/invocations",
                content=body,
                headers={"content-type": "text/csv"},
                timeout=120,
            ).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    # when
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    # then: every answer 200 or 503 (busy), and the container was not OOM-killed (exit 137;
    # podman's OOMKilled reads false on these machines)
    state = container.state()
    assert state["Running"] and state.get("ExitCode") != 137, (state, _kernel_oom_lines())
    assert set(answers) <= {200, 503}, answers


def _kernel_oom_lines() -> list[str]:
    result = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    return [line for line in result.stdout.splitlines() if "out of memory" in line][-3:]
