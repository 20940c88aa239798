"""Alias following over HTTP: hot swap under load with zero failures, refusal of bad versions."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

import dscloud
from dscloud.archive import Archive
from dscloud.envelope import Artifact, Golden
from tests.runtime.server.conftest import Server, publish_all

CLIENTS = 4
WAIT = 30.0


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def serving_version(server: Server) -> int:
    return int(httpx.get(f"{server.url}/v2/models/churn", timeout=5).json()["versions"][0])


def test_hot_swap_under_load_fails_no_request(
    tmp_path: Path, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    # given a server following churn@production, and clients sending requests nonstop
    archive = publish_all(tmp_path / "archive", churn_artifact)
    server = Server(archive, ["churn@production"], tmp_path / "server.log")
    goldens = [g.outputs for g in churn_artifact.envelope.goldens]
    stop = threading.Event()
    answers: list[list[tuple[int, int | None]]] = [[] for _ in range(CLIENTS)]

    def load(seen: list[tuple[int, int | None]]) -> None:
        with server.client() as client:
            while not stop.is_set():
                r = client.post("/invocations", json={"dataframe_records": churn_rows})
                ok = r.status_code == 200 and r.json()["predictions"] == goldens
                seen.append(
                    (
                        r.status_code if ok else -r.status_code,
                        int(r.headers.get("x-model-version", 0)),
                    )
                )

    threads = [threading.Thread(target=load, args=(a,)) for a in answers]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: all(len(a) > 20 for a in answers), "traffic")
        # when version 2 is published and promoted while requests are in flight
        dscloud.publish(churn_artifact, archive)
        archive.promote("churn", 2, "production", by="tests")
        wait_for(lambda: all(a[-1][1] == 2 for a in answers if a), "the swap")
        counts = [len(a) for a in answers]
        wait_for(
            lambda: all(len(a) > c + 20 for a, c in zip(answers, counts, strict=True)),
            "more traffic",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.stop()
    # then every request succeeded with the right answer, and each client saw 1 then 2
    for seen in answers:
        assert {status for status, _ in seen} == {200}
        versions = [v for _, v in seen]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions)  # never back to the old one


def corrupt(archive: Archive, version: int) -> None:
    path = Path(archive.uri) / "models" / "churn" / "versions" / str(version) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def move_alias_unchecked(archive: Archive, version: int) -> None:
    """Point production at ``version`` as an older client would: ``Archive.promote`` now
    refuses bytes that do not verify, but readers must not rely on every writer doing so."""
    record = {**archive.aliases("churn")["production"], "version": version}
    record["sha256"] = archive.envelope(f"churn@{version}").sha256
    key = "models/churn/aliases/production.json"
    got = archive.store.get_tagged(key)
    archive.store.swap(key, json.dumps(record).encode(), got[1] if got else None)


def test_tampered_or_unfaithful_version_is_not_swapped_in(
    tmp_path: Path, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    archive = publish_all(tmp_path / "archive", churn_artifact)
    server = Server(archive, ["churn@production"], tmp_path / "server.log")
    try:
        with server.client() as client:
            # when version 2's bytes are modified after publishing, and it is promoted
            dscloud.publish(churn_artifact, archive)
            corrupt(archive, 2)
            move_alias_unchecked(archive, 2)
            # then the server reports the failure and keeps serving version 1
            wait_for(
                lambda: client.get("/v2/models/churn").json()["parameters"]["last_refresh_error"],
                "the refresh failure",
            )
            meta = client.get("/v2/models/churn").json()
            assert "sha256" in meta["parameters"]["last_refresh_error"]
            r = client.post("/invocations", json={"dataframe_records": churn_rows})
            assert r.status_code == 200 and r.headers["x-model-version"] == "1"
            assert 'dsc_model_refresh_failing{model="churn"} 1' in client.get("/metrics").text

            # when version 3 has intact bytes but goldens it does not reproduce
            wrong = [
                Golden(g.inputs, {**g.outputs, "label": 1 - g.outputs["label"]})
                for g in churn_artifact.envelope.goldens
            ]
            unfaithful = Artifact(
                dataclasses.replace(churn_artifact.envelope, goldens=tuple(wrong)),
                churn_artifact.model,
            )
            dscloud.publish(unfaithful, archive)
            archive.promote("churn", 3, "production", by="tests")
            wait_for(
                lambda: (
                    "golden"
                    in (
                        client.get("/v2/models/churn").json()["parameters"]["last_refresh_error"]
                        or ""
                    )
                ),
                "the golden failure",
            )
            assert serving_version(server) == 1

            # when a good version 4 follows, it is swapped in and the error clears
            dscloud.publish(churn_artifact, archive)
            archive.promote("churn", 4, "production", by="tests")
            wait_for(lambda: serving_version(server) == 4, "version 4")
            assert client.get("/v2/models/churn").json()["parameters"]["last_refresh_error"] is None
    finally:
        server.stop()
    logged = "\n".join(server.log_lines())
    assert "keeping churn@1" in logged and "swapped churn@production" in logged
