"""The tamper matrix: every way of lying to the archive, against every reader, on both stores.

Each tamper edits the bytes of ``churn@1`` (or the alias record pointing at it) the way
someone with write access to the store could; each reader is the real entry point a
deployment runs: the CLI (``dsc verify``, ``dsc show``, ``dsc promote``), the server's
startup and its alias hot swap, the stream handler's cold start and the batch job. Every
one must refuse with an error that names what is wrong, and nothing may be scored or moved.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.cli import main
from dscloud.envelope import Artifact
from dscloud.errors import ArtifactIntegrityError, DscError, EnvelopeError
from dscloud.live import ModelSet
from dscloud.settings import Settings
from dscloud.stores import Store

REGION = "us-east-1"
V1 = "models/churn/versions/1"
V2 = "models/churn/versions/2"


# -- the tampers ----------------------------------------------------------------------------


def _overwrite(store: Store, key: str, data: bytes) -> None:
    """Replace ``key`` as a writer with store access could (a compare-and-swap on its tag)."""
    got = store.get_tagged(key)
    store.swap(key, data, got[1] if got else None)


def _edit_envelope(store: Store, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(store.get(f"{V1}/envelope.json"))
    edit(data)
    _overwrite(store, f"{V1}/envelope.json", json.dumps(data).encode())


def flip_model_byte(store: Store, alias: str) -> None:
    model = bytearray(store.get(f"{V1}/model.onnx"))
    model[len(model) // 2] ^= 0xFF
    _overwrite(store, f"{V1}/model.onnx", bytes(model))


def envelope_of_version_2(store: Store, alias: str) -> None:
    # churn@1's envelope replaced by churn@2's: the old archive then loaded version 2's model
    # for a reader that asked for churn@1.
    _overwrite(store, f"{V1}/envelope.json", store.get(f"{V2}/envelope.json"))


def name_climbs_out(store: Store, alias: str) -> None:
    _edit_envelope(store, lambda d: d["identity"].update(name="../../.."))


def goldens_removed(store: Store, alias: str) -> None:
    _edit_envelope(store, lambda d: d.update(golden_examples=[]))


def alias_sha256_mismatch(store: Store, alias: str) -> None:
    key = f"models/churn/aliases/{alias}.json"
    record = json.loads(store.get(key))
    record["sha256"] = "0" * 64
    _overwrite(store, key, json.dumps(record).encode())


def envelope_sha256_edited(store: Store, alias: str) -> None:
    _edit_envelope(store, lambda d: d["integrity"].update(sha256="f" * 64))


#: tamper -> (the error every reader raises, what its message must say)
TAMPERS: dict[str, tuple[Callable[[Store, str], None], type[DscError], str]] = {
    "model-bytes-flipped": (
        flip_model_byte,
        ArtifactIntegrityError,
        r"versions/1/model\.onnx: sha256 is [0-9a-f]{64}, the envelope records",
    ),
    "envelope-of-another-version": (
        envelope_of_version_2,
        ArtifactIntegrityError,
        r"versions/1/envelope\.json: identity is churn@2, its place in the archive is churn@1",
    ),
    "name-with-path-traversal": (
        name_climbs_out,
        EnvelopeError,
        r"versions/1/envelope\.json: .*identity model name '\.\./\.\./\.\.'",
    ),
    "goldens-removed": (
        goldens_removed,
        EnvelopeError,
        r"churn@1 has no golden examples and records no opt-out",
    ),
    "alias-sha256-mismatch": (
        alias_sha256_mismatch,
        ArtifactIntegrityError,
        r"aliases/\w+\.json: the sha256 recorded when churn@\w+ was promoted is 0{64}",
    ),
    "envelope-sha256-edited": (
        envelope_sha256_edited,
        ArtifactIntegrityError,
        # Through an alias, the alias's record disagrees first; by number, the model bytes.
        r"(versions/1/model\.onnx: sha256 is [0-9a-f]{64}, the envelope records"
        r"|promoted is [0-9a-f]{64}, churn@1 records) f{64}",
    ),
}


# -- the archives ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_churn(forest_artifact: Artifact) -> Artifact:
    """A different model published under the name churn, so version 2 has other bytes."""
    envelope = dataclasses.replace(forest_artifact.envelope, name="churn")
    return Artifact(envelope=envelope, model=forest_artifact.model)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto for every boto3 client made in this process (the CLI and the batch job make
    their own), and for the stream handler's sinks."""
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


@pytest.fixture(params=["dir", "s3"])
def archive(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    aws_env: None,
    churn_artifact: Artifact,
    other_churn: Artifact,
) -> Archive:
    """churn@1 (production and live point at it) and churn@2, a different model."""
    if request.param == "dir":
        arch = Archive.open(tmp_path / "archive")
    else:
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="models")
        arch = Archive.open("s3://models/team-a", s3_client=client)
    dscloud.publish(churn_artifact, arch)
    dscloud.publish(other_churn, arch)
    arch.promote("churn", 1, "production", by="tests")
    return arch


def tamper(archive: Archive, name: str, alias: str = "production") -> tuple[type[DscError], str]:
    edit, error, message = TAMPERS[name]
    edit(archive.store, alias)
    return error, message


tampers = pytest.mark.parametrize("name", sorted(TAMPERS))


# -- the readers ----------------------------------------------------------------------------


@tampers
@pytest.mark.parametrize("command", ["verify", "show"])
def test_cli_refuses(
    archive: Archive, name: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, message = tamper(archive, name)

    code = main(["--archive", archive.uri, command, "churn@production"])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("dsc: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize("name", sorted(set(TAMPERS) - {"alias-sha256-mismatch"}))
def test_promote_refuses_and_moves_nothing(
    archive: Archive, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, message = tamper(archive, name)

    code = main(["--archive", archive.uri, "promote", "churn", "1", "--alias", "staging"])

    assert code == 1
    assert re.search(message, capsys.readouterr().err)
    assert "staging" not in archive.aliases("churn")
    assert [r["event"] for r in archive.audit("churn")].count("promote") == 1


@tampers
def test_server_startup_refuses(
    archive: Archive, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dscloud.server.app import app_from_env

    error, message = tamper(archive, name)
    monkeypatch.setenv("DSC_ARCHIVE", archive.uri)
    monkeypatch.setenv("DSC_MODELS", "churn@production")

    with pytest.raises(error, match=message):
        app_from_env()


@tampers
def test_server_hot_swap_keeps_the_verified_version(archive: Archive, name: str) -> None:
    # given a server following churn@live, serving the good version 2
    archive.promote("churn", 2, "live", by="tests")
    models = ModelSet(archive, ["churn@live"])
    # when live moves to version 1 (written as an old client would), which is then tampered
    record = {**archive.aliases("churn")["production"], "set_by": "old-client"}
    _overwrite(archive.store, "models/churn/aliases/live.json", json.dumps(record).encode())
    _, message = tamper(archive, name, alias="live")

    # then the swap is refused, version 2 keeps serving, and the reason is reported
    assert models.refresh() == []
    live = models.get("churn")
    assert live.scorer.version == 2
    assert live.last_error is not None
    assert re.search(message, live.last_error), live.last_error


@tampers
def test_stream_cold_start_refuses(archive: Archive, name: str) -> None:
    from dscloud.stream.handler import StreamScorer

    error, message = tamper(archive, name)
    s3 = getattr(archive.store, "client", None)

    with pytest.raises(error, match=message):
        StreamScorer.from_settings(
            Settings(
                archive=archive.uri,
                models=("churn@production",),
                predictions_table="predictions",
                rejects_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/rejects",
            ),
            dynamodb=boto3.client("dynamodb", region_name=REGION),
            sqs=boto3.client("sqs", region_name=REGION),
            s3=s3,
        )


@tampers
def test_batch_job_refuses_and_writes_nothing(
    archive: Archive, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "rows.parquet"
    example.churn_data(20, seed=1).to_parquet(data, index=False)
    out = tmp_path / "scored"
    _, message = tamper(archive, name)

    argv = ["--archive", archive.uri, "score", "churn@production"]
    code = main([*argv, "--input", str(data), "--output", str(out)])

    assert code == 1
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() or not any(out.rglob("*.parquet"))
