"""The archive: immutable numbered versions, racing publishers, aliases, audit, tamper checks."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

import dscloud
from dscloud.archive import Archive, Ref
from dscloud.cli import main
from dscloud.envelope import Artifact
from dscloud.errors import (
    ArtifactIntegrityError,
    ConfigError,
    EnvelopeError,
    GoldenMismatchError,
    NotFoundError,
    VersionExistsError,
)
from dscloud.stores import LocalStore
from dscloud.verify import promote as verify_promote


@pytest.fixture
def s3_archive() -> Iterator[Archive]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        yield Archive.open("s3://models/team-a", s3_client=client)


@pytest.fixture(params=["dir", "s3"])
def any_archive(request, tmp_path: Path) -> Iterator[Archive]:
    if request.param == "dir":
        yield Archive.open(tmp_path / "archive")
    else:
        yield request.getfixturevalue("s3_archive")


def test_versions_are_numbered_from_one(any_archive: Archive, churn_artifact: Artifact) -> None:
    first = dscloud.publish(churn_artifact, any_archive)
    second = dscloud.publish(churn_artifact, any_archive)
    assert (first.version, second.version) == (1, 2)
    assert any_archive.versions("churn") == [1, 2]
    assert any_archive.models() == ["churn"]
    assert any_archive.resolve("churn") == 2


def test_publishing_over_an_existing_version_is_refused(any_archive, churn_artifact) -> None:
    any_archive.publish(churn_artifact.envelope, churn_artifact.model, version=1)
    with pytest.raises(VersionExistsError, match="immutable"):
        any_archive.publish(churn_artifact.envelope, churn_artifact.model, version=1)
    assert any_archive.load("churn@1").model == churn_artifact.model


def test_layout_matches_the_design(tmp_path, churn_artifact) -> None:
    archive = Archive.open(tmp_path)
    dscloud.publish(churn_artifact, archive)
    archive.promote("churn", 1, "production", by="ana")
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert "models/churn/versions/1/model.onnx" in files
    assert "models/churn/versions/1/envelope.json" in files
    assert "models/churn/aliases/production.json" in files
    alias = json.loads((tmp_path / "models/churn/aliases/production.json").read_text())
    assert alias["version"] == 1 and alias["set_by"] == "ana"
    assert alias["sha256"] == churn_artifact.envelope.sha256 and alias["set_at"]
    audits = sorted(f for f in files if "/audit/" in f)
    assert [a.rsplit("-", 1)[1] for a in audits] == ["publish.json", "promote.json"]


RACERS = 12
ROUNDS = 4


@pytest.fixture
def atomic_moto(monkeypatch) -> None:
    """Make moto's conditional PUT atomic, as S3's is.

    moto checks ``IfNoneMatch``/``IfMatch`` and then writes, without a lock, so two threads
    can both pass the check and both "create" one key: two publishers then both won one
    version and the second envelope write raised VersionExistsError (the flaky failure,
    about once in three loaded runs). S3 guarantees the check and the write are one step;
    this lock gives moto that guarantee, so the race below is the archive's, not moto's.
    """
    from moto.s3.responses import S3Response

    put_object = S3Response.put_object
    lock = threading.Lock()

    def atomic(self, *args, **kwargs):
        with lock:
            return put_object(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "put_object", atomic)


def race(archive: Archive, artifact: Artifact) -> tuple[list[int], list[BaseException]]:
    """RACERS threads publishing `artifact` at the same instant: (versions got, errors)."""
    barrier = threading.Barrier(RACERS)
    got: list[int] = []
    failed: list[BaseException] = []

    def publish() -> None:
        barrier.wait()
        try:
            got.append(dscloud.publish(artifact, archive).version or 0)
        except BaseException as error:  # a racing publisher must never fail
            failed.append(error)

    threads = [threading.Thread(target=publish) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return got, failed


def test_racing_publishers_each_get_a_version(any_archive, churn_artifact, atomic_moto) -> None:
    for round_ in range(ROUNDS):
        # given a dozen threads publishing at the same instant, round after round
        got, failed = race(any_archive, churn_artifact)

        # then none fails, none is lost and none shares a number
        published = list(range(1, RACERS * (round_ + 1) + 1))
        assert failed == []
        assert sorted(got) == published[-RACERS:]
        assert any_archive.versions("churn") == published
    publishes = [a for a in any_archive.audit("churn") if a["event"] == "publish"]
    assert sorted(a["version"] for a in publishes) == list(range(1, RACERS * ROUNDS + 1))
    for version in any_archive.versions("churn"):
        # and every version loads: its model is the one its envelope names
        assert any_archive.load(f"churn@{version}").model == churn_artifact.model


class NonAtomicStore(LocalStore):
    """A store whose exclusive create of a model lets a second writer through (as moto's
    unlocked check-then-write can) and whose listing is stale (read before a rival wrote)."""

    def create(self, key: str, data: bytes) -> None:
        if key.endswith("/model.onnx"):
            current = self.get_tagged(key)
            self.swap(key, data, current[1] if current else None)
        else:
            super().create(key, data)

    stale = True

    def list(self, prefix: str) -> list[str]:
        return [] if self.stale else super().list(prefix)


def test_a_publisher_that_loses_the_envelope_race_takes_the_next_number(
    tmp_path, churn_artifact
) -> None:
    # given a version 1 already sealed by a rival, which this publisher's listing misses
    store = NonAtomicStore(tmp_path)
    archive = Archive(store)
    archive.publish(churn_artifact.envelope, churn_artifact.model)

    # when it publishes, its model "claim" of 1 succeeds but the envelope is the rival's
    published = archive.publish(churn_artifact.envelope, churn_artifact.model)

    # then it moves on to 2 instead of failing, and both versions load
    assert published.version == 2
    store.stale = False
    assert archive.versions("churn") == [1, 2]
    for version in (1, 2):
        assert archive.load(f"churn@{version}").model == churn_artifact.model


def _publish_in_process(root: str, artifact_dir: str, barrier) -> None:
    barrier.wait()
    archive = Archive.open(root)
    art = Artifact.read(Path(artifact_dir))
    archive.publish(art.envelope, art.model)


def test_racing_processes_each_get_a_version(tmp_path, churn_artifact) -> None:
    art_dir = churn_artifact.write(tmp_path / "art")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_publish_in_process, args=(str(tmp_path / "a"), str(art_dir), barrier))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert Archive.open(tmp_path / "a").versions("churn") == [1, 2, 3, 4]


def test_an_abandoned_claim_is_skipped_not_reused(tmp_path, churn_artifact) -> None:
    archive = Archive.open(tmp_path)
    # a publisher died after claiming 1 (model written, no envelope)
    (tmp_path / "models/churn/versions/1").mkdir(parents=True)
    (tmp_path / "models/churn/versions/1/model.onnx").write_bytes(b"partial")
    assert archive.versions("churn") == []
    assert dscloud.publish(churn_artifact, archive).version == 2


def test_aliases_move_and_are_audited(any_archive, churn_artifact) -> None:
    for _ in range(3):
        dscloud.publish(churn_artifact, any_archive)
    any_archive.promote("churn", 1, "production", by="ana")
    any_archive.promote("churn", 3, "production", by="bo")
    any_archive.promote("churn", 2, "staging", by="bo")

    assert any_archive.resolve("churn@production") == 3
    assert any_archive.resolve(Ref.parse("churn@staging")) == 2
    assert {a: r["version"] for a, r in any_archive.aliases("churn").items()} == {
        "production": 3,
        "staging": 2,
    }
    promotes = [a for a in any_archive.audit("churn") if a["event"] == "promote"]
    assert [(p["alias"], p["previous"], p["version"], p["by"]) for p in promotes] == [
        ("production", None, 1, "ana"),
        ("production", 1, 3, "bo"),
        ("staging", None, 2, "bo"),
    ]


def test_racing_promotions_are_all_recorded_against_the_version_they_replaced(
    any_archive, churn_artifact
) -> None:
    for _ in range(4):
        dscloud.publish(churn_artifact, any_archive)
    barrier = threading.Barrier(4)

    def promote(v: int) -> None:
        barrier.wait()
        any_archive.promote("churn", v, "production")

    threads = [threading.Thread(target=promote, args=(v,)) for v in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    moves = [a for a in any_archive.audit("churn") if a["event"] == "promote"]
    # each move replaced exactly the previous one: the chain has no gaps or forks
    chain = {m["previous"]: m["version"] for m in moves}
    assert len(moves) == 4 and None in chain
    final, seen = None, 0
    while final in chain:
        final, seen = chain[final], seen + 1
    assert seen == 4 and any_archive.resolve("churn@production") == final


def test_promoting_a_missing_version_is_refused(any_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, any_archive)
    with pytest.raises(NotFoundError, match=r"no version 5.*versions: \[1\]"):
        any_archive.promote("churn", 5, "production")
    with pytest.raises(ConfigError, match="alias"):
        any_archive.promote("churn", 1, "12")


def test_unknown_references_say_what_exists(any_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, any_archive)
    with pytest.raises(NotFoundError, match=r"no model 'fraud'.*models: \['churn'\]"):
        any_archive.load("fraud@production")
    with pytest.raises(NotFoundError, match=r"no alias 'production'"):
        any_archive.load("churn@production")
    with pytest.raises(ConfigError, match="model name"):
        Ref.parse("bad name@1")


def test_tampered_model_is_refused_naming_file_and_hashes(tmp_path, churn_artifact) -> None:
    archive = Archive.open(tmp_path)
    dscloud.publish(churn_artifact, archive)
    path = tmp_path / "models/churn/versions/1/model.onnx"
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(ArtifactIntegrityError) as err:
        archive.load("churn@1")
    assert str(path) in str(err.value)
    assert churn_artifact.envelope.sha256 in str(err.value)
    assert err.value.actual != err.value.expected


def test_tampered_model_in_s3_is_refused(s3_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, s3_archive)
    client = s3_archive.store.client  # type: ignore[attr-defined]
    client.put_object(
        Bucket="models", Key="team-a/models/churn/versions/1/model.onnx", Body=b"evil"
    )
    with pytest.raises(
        ArtifactIntegrityError, match=r"s3://models/team-a/models/churn/versions/1/model\.onnx"
    ):
        s3_archive.load("churn@1")


def test_s3_layout_lives_under_the_prefix(s3_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, s3_archive)
    client = s3_archive.store.client  # type: ignore[attr-defined]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="models")["Contents"]]
    assert "team-a/models/churn/versions/1/envelope.json" in keys
    assert all(k.startswith("team-a/models/churn/") for k in keys)


def test_artifact_directory_loads_as_a_reference(tmp_path, churn_artifact) -> None:
    churn_artifact.write(tmp_path / "exported")
    loaded = Archive.open(tmp_path / "unused").load(str(tmp_path / "exported"))
    assert loaded.envelope.sha256 == churn_artifact.envelope.sha256


def test_archive_uri_forms(tmp_path) -> None:
    assert Archive.open(f"file://{tmp_path}").uri == str(tmp_path)
    with pytest.raises(ConfigError, match="s3://BUCKET/PREFIX"):
        Archive.open("gs://bucket/x")


# -- an archive that checks what it is told ------------------------------------------------


def _edit_envelope(archive: Archive, version: int, edit) -> None:  # type: ignore[no-untyped-def]
    key = f"models/churn/versions/{version}/envelope.json"
    got = archive.store.get_tagged(key)
    assert got is not None
    data = json.loads(got[0])
    edit(data)
    archive.store.swap(key, json.dumps(data).encode(), got[1])


def test_the_reference_decides_which_files_are_read(any_archive, churn_artifact) -> None:
    # given churn@1 whose envelope claims to be churn@2
    dscloud.publish(churn_artifact, any_archive)
    dscloud.publish(churn_artifact, any_archive)
    _edit_envelope(any_archive, 1, lambda d: d["identity"].update(version=2))

    # then neither its envelope nor its model is handed out
    for read in (any_archive.load, any_archive.envelope):
        with pytest.raises(ArtifactIntegrityError, match=r"identity is churn@2.*is churn@1"):
            read("churn@1")
    assert any_archive.load("churn@2").envelope.version == 2


def test_an_envelope_naming_a_path_is_refused(any_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, any_archive)
    _edit_envelope(any_archive, 1, lambda d: d["identity"].update(name="../../.."))

    with pytest.raises(EnvelopeError, match=r"versions/1/envelope\.json: .*'\.\./\.\./\.\.'"):
        any_archive.load("churn@1")


def test_publishing_a_name_outside_the_rule_is_refused(any_archive, churn_artifact) -> None:
    envelope = dataclasses.replace(churn_artifact.envelope, name="../escape")
    with pytest.raises(ConfigError, match="model name"):
        any_archive.publish(envelope, churn_artifact.model)
    assert any_archive.models() == []


def test_an_alias_whose_sha256_disagrees_is_refused(any_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, any_archive)
    any_archive.promote("churn", 1, "production", by="tests")
    key = "models/churn/aliases/production.json"
    data, tag = any_archive.store.get_tagged(key)  # type: ignore[misc]
    any_archive.store.swap(key, json.dumps({**json.loads(data), "sha256": "ab" * 32}).encode(), tag)

    for read in (any_archive.resolve, any_archive.load, any_archive.envelope):
        with pytest.raises(ArtifactIntegrityError, match=r"promoted is (ab){32}"):
            read("churn@production")
    assert any_archive.load("churn@1").envelope.version == 1  # the version itself is fine


def test_an_envelope_without_goldens_is_refused_unless_opted_out(
    any_archive, churn_artifact, capsys
) -> None:
    bare = dataclasses.replace(churn_artifact.envelope, goldens=())

    with pytest.raises(EnvelopeError, match="no golden examples and records no opt-out"):
        any_archive.publish(bare, churn_artifact.model)
    with pytest.raises(ConfigError, match="expected a reason"):
        any_archive.publish(bare, churn_artifact.model, without_goldens=" ")
    assert any_archive.models() == []

    published = any_archive.publish(
        bare, churn_artifact.model, without_goldens="outputs are random by design"
    )

    assert any_archive.load("churn@1").envelope.golden_opt_out == "outputs are random by design"
    publish_record = any_archive.audit("churn")[0]
    assert publish_record["golden_opt_out"] == "outputs are random by design"
    assert published.golden_opt_out == "outputs are random by design"
    assert main(["--archive", any_archive.uri, "verify", "churn@1"]) == 0
    assert "opted out at publish: outputs are random by design" in capsys.readouterr().out
    assert main(["--archive", any_archive.uri, "show", "churn@1"]) == 0
    assert "published without golden examples: outputs are random" in capsys.readouterr().out


def test_promote_replays_the_goldens_before_moving_the_alias(
    any_archive, churn_artifact, capsys
) -> None:
    # given a version whose recorded golden outputs the model does not reproduce
    dscloud.publish(churn_artifact, any_archive)
    any_archive.promote("churn", 1, "production", by="tests")
    dscloud.publish(churn_artifact, any_archive)

    def wrong_label(data: dict) -> None:  # type: ignore[type-arg]
        data["golden_examples"][0]["outputs"]["label"] = "not-a-class"

    _edit_envelope(any_archive, 2, wrong_label)

    # when it is promoted through the CLI, then it is refused and the alias stays
    code = main(["--archive", any_archive.uri, "promote", "churn", "2", "--alias", "production"])

    assert code == 1
    assert "golden example 0 label" in capsys.readouterr().err
    assert any_archive.resolve("churn@production") == 1
    with pytest.raises(GoldenMismatchError):
        verify_promote(any_archive, "churn", 2, "production")


def test_the_archive_api_refuses_to_promote_corrupted_bytes(any_archive, churn_artifact) -> None:
    dscloud.publish(churn_artifact, any_archive)
    key = "models/churn/versions/1/model.onnx"
    data, tag = any_archive.store.get_tagged(key)  # type: ignore[misc]
    any_archive.store.swap(key, data[:-1], tag)

    with pytest.raises(ArtifactIntegrityError):
        any_archive.promote("churn", 1, "production")
    assert any_archive.aliases("churn") == {}
