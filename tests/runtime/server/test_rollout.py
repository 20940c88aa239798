"""Rollouts in `dsc serve`, over real sockets, against a directory archive and an S3 archive
on a moto server: shadow answers byte-identical to a server without a rollout, canary
routing stable per key across processes, a breaching candidate aborted exactly once while
several servers serve, and refused candidates never answering."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

import dscloud
from dscloud import example, rollout
from dscloud.archive import Archive
from dscloud.envelope import Artifact, Golden
from dscloud.rollout_guard import comparison
from dscloud.schema import Schema
from dscloud.scorer import Scorer
from dscloud.stores import LocalStore, S3Store
from tests.runtime.server.conftest import Server

REGION = "us-east-1"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
WAIT = 30.0


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class Store:
    """Where archives live for one test: directories, or prefixes of a moto S3 bucket; and
    the environment a server process needs to reach them."""

    def __init__(self, kind: str, tmp_path: Path, endpoint: str | None) -> None:
        self.kind, self.tmp_path, self.env = kind, tmp_path, {}
        self.client: Any = None
        if kind == "s3":
            self.env = {**AWS, "AWS_ENDPOINT_URL": str(endpoint)}
            self.client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            self.bucket = f"rollout-{time.monotonic_ns()}"
            self.client.create_bucket(Bucket=self.bucket)

    def archive(self, name: str, *artifacts: Artifact) -> Archive:
        """A new archive holding ``artifacts`` as versions 1, 2, ... of their names, with
        ``production`` on version 1."""
        if self.kind == "dir":
            arch = Archive.open(self.tmp_path / name)
        else:
            arch = Archive.open(f"s3://{self.bucket}/{name}", s3_client=self.client)
        for artifact in artifacts:
            dscloud.publish(artifact, arch)
        arch.promote(artifacts[0].envelope.name, 1, "production", by="tests")
        return arch

    def overwrite(self, arch: Archive, key: str, data: bytes) -> None:
        """Replace an immutable object behind the archive's back (tampering)."""
        store = arch.store
        if isinstance(store, S3Store):
            store.client.put_object(Bucket=store.bucket, Key=store._key(key), Body=data)
        else:
            assert isinstance(store, LocalStore)
            store.root.joinpath(*key.split("/")).write_bytes(data)

    def serve(self, arch: Archive, log: Path, **env: str) -> Server:
        return Server(arch, ["churn@production"], log, **self.env, **env)


@pytest.fixture(params=["dir", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "s3" else None
    return Store(request.param, tmp_path, endpoint)


@pytest.fixture(scope="module")
def strict_retrained(churn_retrained: Artifact) -> Artifact:
    """The retrained churn refusing categories it never saw: a candidate that disagrees
    with churn@1 on some rows and refuses rows churn@1 answers."""
    schema = churn_retrained.envelope.schema
    columns = tuple(
        dataclasses.replace(c, allow_unknown=False) if c.categories is not None else c
        for c in schema.columns
    )
    envelope = dataclasses.replace(churn_retrained.envelope, schema=Schema(columns, schema.outputs))
    return Artifact(envelope=envelope, model=churn_retrained.model)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """Fresh rows of the churn distribution, as JSON values (missing as None)."""
    frame = example.churn_data(300, seed=5)[example.FEATURES]
    return [
        {k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric(server: Server, name: str, **labels: str) -> float | None:
    """The value of the first series ``name`` whose labels include ``labels``."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match[1] for k, v in labels.items()):
            return float(match[2])
    return None


def metadata(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{server.url}/v2/models/churn", timeout=10).json()
    return body


# -- shadow ----------------------------------------------------------------------------------


def bodies(rows: list[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """(path, content type, body): good, bad and mixed requests in every form served."""
    cols = example.FEATURES
    good, few = rows[:40], rows[:3]
    unseen = {**rows[0], "plan": "platinum"}  # churn@1 answers it; the candidate refuses it
    wrong = {**rows[1], "age": "ten"}
    csv = "\n".join(",".join("" if r[c] is None else str(r[c]) for c in cols) for r in few)
    oip = {
        "id": "req-1",
        "inputs": [
            {
                "name": c,
                "shape": [len(few)],
                "datatype": "BYTES" if isinstance(few[0][c], str) else "FP64",
                "data": [r[c] for r in few],
            }
            for c in cols
        ],
    }
    j = "application/json"

    def records(rs: list[dict[str, Any]]) -> bytes:
        return json.dumps({"dataframe_records": rs}).encode()

    return [
        ("/invocations", j, records(good)),
        ("/invocations", j, records([unseen])),
        ("/invocations", j, records([*few, unseen])),
        ("/invocations", j, records([*few, wrong])),
        ("/invocations", j, records([wrong])),
        ("/invocations", j, records([{"age": 3}])),
        ("/invocations", j, b'{"dataframe_records": [{"age": '),
        ("/invocations", j, b""),
        ("/invocations", "text/csv", csv.encode()),
        (
            "/invocations",
            j,
            json.dumps(
                {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in good]}}
            ).encode(),
        ),
        ("/v2/models/churn/infer", j, json.dumps(oip).encode()),
        ("/v2/models/churn/versions/1/infer", j, json.dumps(oip).encode()),
        ("/v2/models/churn/versions/2/infer", j, json.dumps(oip).encode()),
    ]


def test_shadow_answers_are_byte_identical_to_a_server_without_a_rollout(
    store: Store,
    tmp_path: Path,
    churn_artifact: Artifact,
    strict_retrained: Artifact,
    rows: list[dict[str, Any]],
) -> None:
    # given two archives alike, one of them running a shadow rollout of churn@2
    plain = store.archive("plain", churn_artifact, strict_retrained)
    shadowed = store.archive("shadowed", churn_artifact, strict_retrained)
    rollout.start(shadowed, "churn", "production", 2, mode="shadow")
    servers = [
        store.serve(plain, tmp_path / "plain.log"),
        store.serve(shadowed, tmp_path / "shadowed.log"),
    ]
    try:
        wait_for(lambda: metric(servers[1], "dsc_rollout_info", mode="shadow"), "the rollout")
        # when the same requests go to both, twice (the second time with the candidate warm)
        answers: list[list[tuple[int, bytes, str | None]]] = [[], []]
        for _ in range(2):
            for i, (path, content_type, body) in enumerate(bodies(rows)):
                for server, seen in zip(servers, answers, strict=True):
                    r = httpx.post(
                        server.url + path,
                        content=body,
                        headers={"content-type": content_type, "x-request-id": f"r{i}"},
                        timeout=30,
                    )
                    assert r.headers["x-request-id"] == f"r{i}"
                    seen.append((r.status_code, r.content, r.headers.get("x-model-version")))
        # then status, body bytes and the version named are the same, good or bad
        assert answers[0] == answers[1]
        statuses = {status for status, _, _ in answers[0]}
        assert {200, 400, 404} <= statuses  # schema errors are 400s here
        # and the shadow server compared the candidate on the same rows, refusals included
        compared = metric(servers[1], "dsc_rollout_rows_compared_total", current="1")
        assert compared is not None and compared > 80
        errors = metric(servers[1], "dsc_rollout_version_errors_total", role="candidate")
        assert errors is not None and errors >= 4  # the unseen plan, twice per pass
        assert metric(servers[1], "dsc_rollout_disagreements_total", candidate="2")
        assert metric(servers[0], "dsc_rollout_rows_compared_total") is None
        described = metadata(servers[1])["parameters"]["rollout"]
        assert described["mode"] == "shadow" and described["candidate_ready"] is True
        assert described["comparison"]["rows_compared"] == compared
    finally:
        for server in servers:
            server.stop()
    # and its windows reach the archive, merged as `dsc rollout status` shows them
    _, running = rollout.status(shadowed, "churn", "production")
    assert running is not None
    wait_for(lambda: comparison(shadowed, "churn", "production", running), "a recorded window")


# -- canary ----------------------------------------------------------------------------------


def test_canary_routes_a_stable_share_of_keys_across_processes(
    store: Store, tmp_path: Path, churn_artifact: Artifact, churn_retrained: Artifact
) -> None:
    # given a canary of 30% and two server processes following it
    arch = store.archive("canary", churn_artifact, churn_retrained)
    started = rollout.start(arch, "churn", "production", 2, mode="canary", share=0.3)
    servers = [store.serve(arch, tmp_path / f"canary-{i}.log") for i in range(2)]
    row = {"dataframe_records": [dict(churn_artifact.envelope.goldens[0].inputs)]}
    keys = [f"user-{i}" for i in range(300)]
    try:
        # when each key asks both servers, by header
        versions: list[list[int]] = []
        for server in servers:
            with server.client() as client:
                versions.append(
                    [
                        int(
                            client.post(
                                "/invocations", json=row, headers={"x-dsc-route-key": key}
                            ).headers["x-model-version"]
                        )
                        for key in keys
                    ]
                )
        # then each key gets one version from both processes, the one the rule picks
        assert versions[0] == versions[1]
        expected = [2 if started.answers("churn", "production", k) else 1 for k in keys]
        assert versions[0] == expected
        share = versions[0].count(2) / len(keys)
        assert abs(share - 0.3) < 4 * (0.3 * 0.7 / len(keys)) ** 0.5  # 4 sigma: ±0.106
        # and without a route key the request id routes, and is returned
        with servers[0].client() as client:
            for _ in range(40):
                r = client.post("/v2/models/churn/infer", json=_oip(row))
                rid = r.headers["x-request-id"]
                want = 2 if started.answers("churn", "production", rid) else 1
                assert r.json()["model_version"] == r.headers["x-model-version"] == str(want)
        # and the version that answered is in the request metrics and the access lines
        assert metric(servers[0], "dsc_requests_total", endpoint="invocations", version="2")
        lines = [json.loads(x) for x in servers[0].log_lines() if '"request"' in x]
        assert {(x.get("version"), "request_id" in x) for x in lines if x.get("rows")} == {
            (1, True),
            (2, True),
        }
    finally:
        for server in servers:
            server.stop()


def test_a_canarys_comparisons_take_the_share_of_time_the_setting_gives(
    tmp_path: Path, churn_artifact: Artifact, churn_retrained: Artifact
) -> None:
    # given a canary answering everyone, served with and without time for comparisons
    arch = Store("dir", tmp_path, None).archive("budget", churn_artifact, churn_retrained)
    rollout.start(arch, "churn", "production", 2, mode="canary", share=1.0)
    row = {"dataframe_records": [dict(churn_artifact.envelope.goldens[0].inputs)]}
    found = {}
    for share in ("0", "0.01"):
        server = Store("dir", tmp_path, None).serve(
            arch, tmp_path / f"share-{share}.log", DSC_ROLLOUT_COMPARE_SHARE=share
        )
        try:
            # when 20 one-row requests are answered
            with server.client() as client:
                answered = {
                    client.post("/invocations", json=row).headers["x-model-version"]
                    for _ in range(20)
                }
            assert answered == {"2"}
            found[share] = (
                metric(server, "dsc_rollout_rows_compared_total"),
                metric(server, "dsc_rollout_skipped_total"),
            )
        finally:
            server.stop()
    # then with no share none is compared, each counted as skipped; with 1% (idle) all are
    assert found == {"0": (0.0, 20.0), "0.01": (20.0, 0.0)}


def _oip(records: dict[str, Any]) -> dict[str, Any]:
    (row,) = records["dataframe_records"]
    return {
        "inputs": [
            {
                "name": k,
                "shape": [1],
                "datatype": "BYTES" if isinstance(v, str) else "FP64",
                "data": [v],
            }
            for k, v in row.items()
        ]
    }


# -- guard rails -----------------------------------------------------------------------------


def test_a_breaching_candidate_is_aborted_exactly_once_while_servers_race(
    store: Store,
    tmp_path: Path,
    churn_artifact: Artifact,
    churn_retrained: Artifact,
    rows: list[dict[str, Any]],
) -> None:
    # given rows on which the candidate disagrees with churn@1
    current, candidate = Scorer(churn_artifact), Scorer(churn_retrained)
    ours = current.score_records(rows).label
    theirs = candidate.score_records(rows).label
    assert ours is not None and theirs is not None
    differ = [r for r, a, b in zip(rows, ours, theirs, strict=True) if a != b]
    assert len(differ) >= 3  # (30 of them, repeated, disagree on every row)
    # and a shadow rollout that allows 1% disagreement after 20 rows, followed by 3 servers
    arch = store.archive("guard", churn_artifact, churn_retrained)
    rollout.start(
        arch,
        "churn",
        "production",
        2,
        mode="shadow",
        thresholds=rollout.Thresholds(max_disagreement=0.01, min_rows=20),
    )
    servers = [
        store.serve(arch, tmp_path / f"guard-{i}.log", DSC_ROLLOUT_WINDOW_SECONDS="1")
        for i in range(3)
    ]
    try:
        for server in servers:
            wait_for(lambda s=server: metric(s, "dsc_rollout_info"), "the rollout")
        # when every server answers enough of those rows at once
        body = {"dataframe_records": (differ * 3)[:30]}

        def send(server: Server) -> None:
            assert httpx.post(f"{server.url}/invocations", json=body, timeout=30).status_code == 200

        threads = [threading.Thread(target=send, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # then the rollout ends, and every server drops the candidate on its next poll
        wait_for(lambda: rollout.status(arch, "churn", "production")[1] is None, "the abort")
        for server in servers:
            wait_for(lambda s=server: metric(s, "dsc_rollout_info") is None, "the drop")
            assert metadata(server)["parameters"]["rollout"] is None
    finally:
        for server in servers:
            server.stop()
    # and exactly one abort was written, by a guard rail, with the figures that tripped it
    aborts = [r for r in arch.audit("churn") if r["event"] == "rollout-abort"]
    assert len(aborts) == 1
    (abort,) = aborts
    assert abort["by"].startswith("guard rail") and "disagreement rate" in abort["why"]
    assert abort["figures"]["rows_compared"] >= 20
    logged = sum("aborted rollout" in line for s in servers for line in s.log_lines())
    assert logged == 1


# -- refused candidates ----------------------------------------------------------------------


def test_refused_candidates_never_answer(
    store: Store,
    tmp_path: Path,
    churn_artifact: Artifact,
    churn_retrained: Artifact,
    forest_artifact: Artifact,
) -> None:
    # given candidates that each fail in another way, behind canaries answering every key
    unfaithful = dataclasses.replace(
        churn_retrained.envelope,
        goldens=tuple(
            Golden(inputs=g.inputs, outputs={**g.outputs, "label": 1 - int(g.outputs["label"])})
            for g in churn_retrained.envelope.goldens
        ),
    )
    other = dataclasses.replace(forest_artifact.envelope, name="churn")
    cases = {
        "tampered": churn_retrained,
        "goldens": Artifact(envelope=unfaithful, model=churn_retrained.model),
        "interface": Artifact(envelope=other, model=forest_artifact.model),
    }
    archives = {}
    for case, artifact in cases.items():
        arch = store.archive(case, churn_artifact, churn_retrained)
        rollout.start(arch, "churn", "production", 2, mode="canary", share=1.0)
        if case == "tampered":
            key = "models/churn/versions/2/model.onnx"
            store.overwrite(arch, key, arch.store.get(key)[:-1] + b"\x00")
        else:  # the candidate's files replaced after it was admitted
            store.overwrite(
                arch,
                "models/churn/versions/2/envelope.json",
                dataclasses.replace(artifact.envelope, version=2).to_json(),
            )
            store.overwrite(arch, "models/churn/versions/2/model.onnx", artifact.model)
            record, tag = arch.alias_tagged("churn", "production")  # type: ignore[misc]
            record["rollout"]["candidate_sha256"] = artifact.envelope.sha256
            arch.swap_alias("churn", "production", record, tag)
        archives[case] = arch
    row = {"dataframe_records": [dict(churn_artifact.envelope.goldens[0].inputs)]}
    for case, arch in archives.items():
        server = store.serve(arch, tmp_path / f"{case}.log")
        try:
            # when requests arrive with keys the canary would give the candidate
            with server.client() as client:
                answered = {
                    client.post(
                        "/invocations", json=row, headers={"x-dsc-route-key": f"k{i}"}
                    ).headers["x-model-version"]
                    for i in range(20)
                }
            # then the serving version answers all of them, and says why, without paths
            assert answered == {"1"}, case
            described = metadata(server)["parameters"]
            error = described["rollout"]["error"]
            assert described["rollout"]["candidate_ready"] is False
            assert described["last_refresh_error"] == error
            assert "rollout candidate version 2 of churn" in error
            assert "/" not in error and "s3:" not in error and "sha256:" not in error
            assert metric(server, "dsc_rollout_candidate_failing", model="churn") == 1
            assert metric(server, "dsc_rollout_info") is None
        finally:
            server.stop()
