"""The batch image as AWS Batch starts it: the job definitions' own commands, as uid 10001.

The scoring job reads a read-only archive and input and writes Parquet parts; the training
job trains, packages and publishes into its archive. The commands are the ones the stacks
put into the job definitions (``stacks.batch``), with Batch's ``Ref::`` parameters filled in.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dscloud import example
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from dscloud.scorer import Scorer
from stacks.batch import SCORING_COMMAND, TRAINING_COMMAND
from tests.docker.conftest import IMAGE_UID, Container, run_once, writable_dir
from tests.runtime.batch.conftest import read_output

pytestmark = [pytest.mark.images, pytest.mark.usefixtures("built_images")]


def job_command(command: tuple[str, ...], **parameters: str) -> list[str]:
    """``command`` with each ``Ref::name`` replaced as AWS Batch does for a submitted job."""
    return [parameters[arg[len("Ref::") :]] if arg.startswith("Ref::") else arg for arg in command]


def test_scoring_job_scores_a_read_only_input_with_a_read_only_archive(
    image_archive: Path, tmp_path: Path, churn_artifact: Artifact
) -> None:
    # given: 600 users as Parquet, readable but not writable by the job
    users = example.churn_data(600, seed=7)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), data / "users.parquet")
    (data / "users.parquet").chmod(0o644)
    out = writable_dir(tmp_path / "out")
    command = job_command(SCORING_COMMAND, model="churn@production", input="/data/", output="/out/")
    # when: child 0 of a one-child array job
    log = run_once(
        "dsc-batch",
        *command,
        volumes={image_archive: "/archive:ro", data: "/data:ro", out: "/out"},
        env={"DSC_ARCHIVE": "/archive", "AWS_BATCH_JOB_ARRAY_INDEX": "0", "DSC_SHARD_COUNT": "1"},
    )
    # then: every row scored as the core scores it, and the run marked complete
    assert "600 scored, 0 rejected with churn@1" in log, log
    scored = read_output(out)
    expected = Scorer(churn_artifact).score_records(users[example.FEATURES].to_dict("records"))
    assert expected.probabilities is not None and expected.label is not None
    assert list(scored["user_id"]) == list(users["user_id"])
    np.testing.assert_allclose(scored["probability_1"], expected.probabilities[:, 1], atol=1e-6)
    np.testing.assert_array_equal(scored["label"], expected.label)
    assert {p.stat().st_uid for p in out.rglob("*") if p.is_file()} == {IMAGE_UID}


def test_training_job_publishes_a_verified_version(tmp_path: Path) -> None:
    # given: an archive the job may write (the S3 archive's writer grant, here a directory)
    archive = writable_dir(tmp_path / "archive")
    # when: the training job definition's command, as submitted without overrides
    log = run_once(
        "dsc-batch",
        *TRAINING_COMMAND,
        volumes={archive: "/archive"},
        env={"DSC_ARCHIVE": "/archive", "DSC_USER": "batch-training"},
    )
    # then: a verified version, promoted to staging, that the host reads back, recording
    # the commit the image was built from
    assert "churn@1" in log, log
    artifact = Archive.open(archive).load("churn@staging")
    assert artifact.envelope.version == 1
    assert artifact.envelope.provenance["code"]["commit"] == image_revision("dsc-batch")
    assert Scorer(artifact).check_goldens() > 0


def test_sigterm_stops_a_scoring_job_without_a_success_marker(
    run_container: object, image_archive: Path, tmp_path: Path
) -> None:
    # given: a job with more rows than it can score before the signal
    users = example.churn_data(200_000, seed=3)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), data / "users.parquet")
    (data / "users.parquet").chmod(0o644)
    out = writable_dir(tmp_path / "out")
    command = job_command(SCORING_COMMAND, model="churn@production", input="/data/", output="/out/")
    container: Container = run_container(  # type: ignore[operator]
        "dsc-batch",
        *command,
        "--chunk-rows",
        "1000",
        volumes={image_archive: "/archive:ro", data: "/data:ro", out: "/out"},
        env={"DSC_ARCHIVE": "/archive", "AWS_BATCH_JOB_ARRAY_INDEX": "0", "DSC_SHARD_COUNT": "1"},
    )
    wait_for_sigterm_handler(container)
    # when: Batch stops the job (SIGTERM, SIGKILL 30 s later)
    container.signal("TERM")
    code = container.wait(timeout=25)
    # then: it stopped on the signal at once (not by SIGKILL: 137), and the output does not
    # claim a complete run
    assert code == 128 + signal.SIGTERM, container.logs()
    assert not (out / "_SUCCESS").exists()
    assert "Traceback" not in container.logs()


def wait_for_sigterm_handler(container: Container, timeout: float = 60) -> None:
    """Wait until PID 1 in ``container`` catches SIGTERM: a signal sent before that would
    be dropped (PID 1 has no default actions) and say nothing about the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run(
            ["podman", "exec", container.name, "cat", "/proc/1/status"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        caught = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), "0"
        )
        if int(caught, 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.2)
    raise AssertionError(f"PID 1 never caught SIGTERM:\n{container.logs()}")


def image_revision(image: str) -> str:
    """The commit ``make images`` stamped into ``image`` (OCI revision label)."""
    labels = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Labels}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    revision: str = labels["org.opencontainers.image.revision"]
    assert len(revision) == 40, revision
    return revision
