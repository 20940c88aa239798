"""A local archive another uid can read, and one line when it cannot.

The images run as uid 10001 and mount the archive read-only: what dsc writes must be
readable by that reader, and a reader who is refused must get one line naming the path and
the uid, from every command, not a traceback. The tests run as root, which no file mode
stops, so the archive is handed to another owner and ``dsc`` runs without capabilities
(``setpriv``): root is then an "other" reader bound by the modes, like uid 10001 in an image
(tests/docker/test_serving_image.py runs the image itself that way).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response

import dscloud
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.errors import ArchiveError
from dscloud.stores import FILE_MODE, LocalStore
from tests.moto_s3 import UNLOCKED_PUT

#: The owner the archive is handed to, so the reader below is an "other" reader.
OWNER_UID = 10001


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """A directory the reader may enter."""
    tmp_path.chmod(0o755)
    return tmp_path


def hand_over(path: Path) -> None:
    """Give ``path`` and everything under it to :data:`OWNER_UID`, modes unchanged."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, OWNER_UID, OWNER_UID)


def as_reader(*argv: str, archive: Path) -> subprocess.CompletedProcess[str]:
    """``dsc ARGV`` on ``archive`` without capabilities: bound by file modes like any uid."""
    assert shutil.which("setpriv"), "setpriv (util-linux) runs dsc without capabilities"
    return subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            sys.executable,
            "-m",
            "dscloud.cli",
            *argv,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "DSC_ARCHIVE": str(archive)},
        timeout=120,
        check=False,
    )


def test_archive_files_are_0644_whatever_the_temp_file_mode(
    shared_dir: Path, churn_artifact: Artifact
) -> None:
    # given / when
    arch = Archive.open(shared_dir / "archive")
    dscloud.publish(churn_artifact, arch)
    arch.promote("churn", 1, "production", by="tests")
    # then
    files = [p for p in (shared_dir / "archive").rglob("*") if p.is_file()]
    modes = {stat.S_IMODE(p.stat().st_mode) for p in files if not p.name.endswith(".lock")}
    assert len(files) >= 4 and modes == {FILE_MODE}


def test_another_uid_reads_what_dsc_wrote(shared_dir: Path, churn_artifact: Artifact) -> None:
    # given: an archive dsc wrote with the default umask, now owned by someone else
    arch = Archive.open(shared_dir / "archive")
    dscloud.publish(churn_artifact, arch)
    arch.promote("churn", 1, "production", by="tests")
    hand_over(shared_dir / "archive")
    # when
    verified = as_reader("verify", "churn@production", archive=shared_dir / "archive")
    # then
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "churn"],
        ["show", "churn@production"],
        ["verify", "churn@production"],
        ["history", "churn"],
        ["serve", "churn@production", "--port", "0"],
        ["score", "churn@production", "--input", "/nonexistent.csv", "--output", "/tmp/x"],
        ["promote", "churn", "1", "--alias", "staging"],
    ],
    ids=lambda argv: argv[0] if argv[0] != "list" or len(argv) == 1 else "list-name",
)
def test_an_unreadable_archive_is_one_line_in_every_command(
    shared_dir: Path, churn_artifact: Artifact, argv: list[str]
) -> None:
    # given: an archive only its owner may enter (as mkstemp's 0600 files once made it)
    arch = Archive.open(shared_dir / "archive")
    dscloud.publish(churn_artifact, arch)
    arch.promote("churn", 1, "production", by="tests")
    (shared_dir / "archive" / "models").chmod(0o700)
    hand_over(shared_dir / "archive")
    # when
    result = as_reader(*argv, archive=shared_dir / "archive")
    # then
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dsc: error: archive: cannot "), lines[0]
    assert "Permission denied" in lines[0] and f"uid {os.getuid()}" in lines[0]


def test_an_unreadable_artifact_directory_is_an_archive_error(
    shared_dir: Path, churn_artifact: Artifact
) -> None:
    # given: SageMaker's layout (an artifact directory) that the reader may not open
    directory = churn_artifact.write(shared_dir / "model")
    directory.chmod(0o700)
    hand_over(directory)
    # when
    result = as_reader("verify", str(directory), archive=shared_dir / "archive")
    # then
    assert result.returncode == 1
    assert result.stderr.startswith(f"dsc: error: artifact {directory}: cannot read"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_write_refused_is_an_archive_error(shared_dir: Path) -> None:
    # given: a file where the store needs a directory
    (shared_dir / "archive").mkdir()
    (shared_dir / "archive" / "models").write_text("not a directory")
    store = LocalStore(shared_dir / "archive")
    # when / then
    with pytest.raises(ArchiveError, match=r"archive: cannot write .*models/churn"):
        store.create("models/churn/versions/1/model.onnx", b"x")


def test_moto_still_lets_two_racing_conditional_writes_both_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gap tests/moto_s3.py works around: when this fails, moto made its conditional
    writes atomic and the workaround can go."""
    # given moto's own put_object, and two writers whose If-Match checks both pass before
    # either writes
    monkeypatch.setattr(S3Response, "put_object", UNLOCKED_PUT)
    checked = threading.Barrier(2, timeout=10)
    read = S3Backend.get_object

    def get_object(self: S3Backend, *args: Any, **kwargs: Any) -> Any:
        found = read(self, *args, **kwargs)
        if threading.current_thread().name.startswith("racer"):
            checked.wait()
        return found

    monkeypatch.setattr(S3Backend, "get_object", get_object)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    won: list[int] = []
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="race")
        etag = client.put_object(Bucket="race", Key="alias.json", Body=b"0")["ETag"]

        def write(i: int) -> None:
            client.put_object(Bucket="race", Key="alias.json", Body=b"%d" % i, IfMatch=etag)
            won.append(i)

        racers = [threading.Thread(target=write, args=(i,), name=f"racer-{i}") for i in (1, 2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=30)
    # then both win: on AWS S3 one of them gets 412
    assert sorted(won) == [1, 2]
