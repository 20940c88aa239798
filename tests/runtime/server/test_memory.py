"""Under a real memory limit the size of the default serving task (1 GiB), eight concurrent
maximum-size bodies of each form get 200 or 503, and the server is never OOM-killed.

The server runs in a memory cgroup this test creates (cgroup v1 or v2, as root); where none
can be created the test is skipped. Its budget is the one the serving stack derives from the
task size (``stacks.serving.memory_budget_bytes``), so this also crosses that seam.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from dscloud import example
from dscloud.archive import Archive
from stacks.serving import memory_budget_bytes
from tests.runtime.server.conftest import free_port

TASK_MIB = 1024
MAX_BODY = 16 * 1024 * 1024  # the default DSC_MAX_BODY_BYTES
CONCURRENT = 8


class MemoryCgroup:
    """A memory cgroup of ``limit`` bytes under this process's own (v1 or v2)."""

    def __init__(self, limit: int) -> None:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"]
        name = f"dsc-test-{uuid.uuid4().hex[:8]}"
        if v1 and Path("/sys/fs/cgroup/memory").is_dir():
            self.path = Path("/sys/fs/cgroup/memory" + v1[0]) / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(limit))  # no swapping out of trouble either
            self.v2 = False
        else:
            own = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
            self.path = Path("/sys/fs/cgroup" + own) / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.swap.max").write_text("0")
            self.v2 = True

    def add(self) -> None:
        """Move the calling process into the cgroup (as a ``preexec_fn``)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        path = self.path / name
        return int(path.read_text()) if path.exists() else None

    def remove(self) -> None:
        self.path.rmdir()


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    if not sys.platform.startswith("linux"):
        pytest.skip("memory cgroups are Linux")
    try:
        group = MemoryCgroup(TASK_MIB * 1024 * 1024)
    except (OSError, StopIteration) as exc:
        pytest.skip(f"cannot create a memory cgroup here: {exc}")
    yield group
    group.remove()


def max_size_bodies() -> dict[str, tuple[str, str, bytes]]:
    """(path, content type, body) per form, each just under the default body limit."""
    frame = example.churn_data(5_000, seed=3)[example.FEATURES]
    base = [{k: (None if v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]
    names = list(base[0])

    def fill(encode: Any) -> bytes:
        per_row = len(encode(base[:500])) / 500
        n = int(MAX_BODY / per_row)
        while True:
            rows = [base[i % len(base)] for i in range(n)]
            data: bytes = encode(rows)
            if len(data) <= MAX_BODY:
                return data
            n = int(n * 0.99)

    def as_csv(rows: list[dict[str, Any]]) -> bytes:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode()

    def as_json(doc: Any) -> bytes:
        return json.dumps(doc).encode()

    def oip(rows: list[dict[str, Any]]) -> bytes:
        strings = set(example.CATEGORICAL)
        return as_json(
            {
                "inputs": [
                    {
                        "name": k,
                        "shape": [len(rows)],
                        "datatype": "BYTES" if k in strings else "FP64",
                        "data": [r[k] for r in rows],
                    }
                    for k in names
                ]
            }
        )

    def split(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"columns": names, "data": [list(r.values()) for r in rows]}

    return {
        "csv": ("/invocations", "text/csv", fill(as_csv)),
        "dataframe_split": (
            "/invocations",
            "application/json",
            fill(lambda rows: as_json({"dataframe_split": split(rows)})),
        ),
        "dataframe_records": (
            "/invocations",
            "application/json",
            fill(lambda rows: as_json({"dataframe_records": rows})),
        ),
        "instances": (
            "/invocations",
            "application/json",
            fill(lambda rows: as_json({"instances": rows})),
        ),
        "inputs": (
            "/invocations",
            "application/json",
            fill(lambda rows: as_json({"inputs": {k: [r[k] for r in rows] for k in names}})),
        ),
        "oip": ("/v2/models/churn/infer", "application/json", fill(oip)),
    }


def test_eight_maximum_bodies_of_each_form_in_a_1_gib_task(
    served_archive: Archive, cgroup: MemoryCgroup, tmp_path: Path
) -> None:
    # given dsc serve in a 1 GiB cgroup with the budget the stack gives a 1 GiB task
    port = free_port()
    env = {
        **os.environ,
        "DSC_ARCHIVE": served_archive.uri,
        "DSC_REFRESH_SECONDS": "0",
        "DSC_MEMORY_BUDGET_BYTES": str(memory_budget_bytes(TASK_MIB)),
        "DSC_BODY_SECONDS": "120",
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dscloud.cli", "serve", "churn@production", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=cgroup.add,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        # when eight maximum-size bodies of each form arrive at once
        statuses: dict[str, list[int]] = {}
        with httpx.Client(base_url=url, timeout=300) as client:
            for form, (path, content_type, body) in max_size_bodies().items():

                def post(path: str, content_type: str, body: bytes) -> int:
                    headers = {"content-type": content_type}
                    return client.post(path, content=body, headers=headers).status_code

                with ThreadPoolExecutor(CONCURRENT) as pool:
                    calls = [pool.submit(post, path, content_type, body) for _ in range(CONCURRENT)]
                    statuses[form] = [c.result() for c in calls]
                assert client.get("/ping").status_code == 200

        # then every answer is 200 or 503, some of each form scored, and no OOM kill
        print(f"statuses {statuses}; cgroup peak {cgroup.peak()} bytes")
        for form, got in statuses.items():
            assert set(got) <= {200, 503}, (form, got)
            assert 200 in got, (form, got)
        assert server.poll() is None
        assert cgroup.oom_kills() == 0
    finally:
        server.terminate()
        server.wait(timeout=60)
