"""Factories for the image tests: podman, the built images, and archives they can read.

The image tests (marker ``images``) run the images ``make images`` built, with the
container settings of ``../shared/containers`` that ``make images-test`` sources; each
container runs as its image's user (uid 10001) with the archive mounted read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import dscloud
from dscloud.archive import Archive
from dscloud.envelope import Artifact

IMAGES = ("dsc-serving", "dsc-batch", "dsc-lambda")
#: The uid every image runs as (USER in each Dockerfile).
IMAGE_UID = 10001
READY_TIMEOUT = 90.0


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``podman ARGS``; returns its stdout, raises AssertionError with stderr on failure."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def built_images() -> None:
    """Fail (not skip) when podman or an image is missing: `make images-test` provides both."""
    if shutil.which("podman") is None or "CONTAINERS_CONF" not in os.environ:
        pytest.fail("podman with ../shared/containers/env.sh is needed: run `make images-test`")
    for image in IMAGES:
        if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
            pytest.fail(f"image {image} is missing: run `make images`")


@dataclass
class Container:
    """A detached container; ``stop()`` sends SIGTERM and returns the exit code."""

    name: str
    port: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = subprocess.run(
            ["podman", "logs", self.name], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr

    def state(self) -> dict[str, object]:
        """podman's ``State`` of the container (Running, ExitCode, ...)."""
        state: dict[str, object] = json.loads(podman("inspect", "--format", "json", self.name))[0][
            "State"
        ]
        return state

    def wait_ready(self, path: str = "/v2/health/ready") -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} exited before ready:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{path}", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not ready in {READY_TIMEOUT} s:\n{self.logs()}")

    def signal(self, name: str = "TERM") -> None:
        podman("kill", "--signal", name, self.name)

    def wait(self, timeout: float = 60) -> int:
        """The exit code once the container has stopped."""
        return int(podman("wait", self.name, timeout=timeout).strip())

    def stop(self) -> int:
        """SIGTERM, then the exit code (podman sends SIGKILL after 30 s, as ECS does)."""
        self._stopped = True
        podman("stop", "--time", "30", self.name, timeout=60)
        return self.wait()

    def remove(self) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)


@pytest.fixture
def run_container() -> Iterator[object]:
    """``run_container(image, *args, port=True, volumes={host: target}, env={...})`` starts a
    detached container (publishing 8080 on a free port of 127.0.0.1 when ``port``); every
    container is removed after the test."""
    started: list[Container] = []

    def run(
        image: str,
        *command: str,
        port: bool = False,
        volumes: dict[Path, str] | None = None,
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> Container:
        container = Container(name=f"dsc-test-{uuid.uuid4().hex[:10]}")
        args = ["run", "--detach", "--name", container.name, *options]
        if port:
            container.port = free_port()
            args += ["--publish", f"127.0.0.1:{container.port}:8080"]
        for host, target in (volumes or {}).items():
            args += ["--volume", f"{host}:{target}"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        podman(*args, image, *command)
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove()


def run_once(image: str, *command: str, volumes: dict[Path, str], env: dict[str, str]) -> str:
    """Run ``command`` in ``image`` to completion; returns stdout+stderr, raises on non-zero."""
    args = ["run", "--rm"]
    for host, target in volumes.items():
        args += ["--volume", f"{host}:{target}"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    result = subprocess.run(
        ["podman", *args, image, *command], capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output}"
    return output


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory: pytest.TempPathFactory, churn_artifact: Artifact) -> Path:
    """A directory archive holding churn@1 (alias production), exactly as dsc wrote it: no
    chmod, so the images read it only if dsc's file modes let uid 10001 in."""
    root = tmp_path_factory.mktemp("image-archive") / "archive"
    arch = Archive.open(root)
    dscloud.publish(churn_artifact, arch)
    arch.promote("churn", 1, "production", by="tests")
    return root


def writable_dir(path: Path) -> Path:
    """``path`` created and owned by the images' uid, for what a container writes."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path
