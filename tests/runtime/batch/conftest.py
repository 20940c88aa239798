"""Factories for the batch adapter's tests: data sets on disk, jobs, an S3 endpoint (moto)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dscloud import example
from dscloud.archive import Archive
from dscloud.batch import ScoreJob, read_success
from dscloud.batch.locations import Location
from dscloud.envelope import Artifact
from dscloud.scorer import Scorer

REGION = "us-east-1"


@pytest.fixture(scope="session")
def users() -> pd.DataFrame:
    """3,000 example users (keys, features, label), the same rows in every test."""
    return example.churn_data(3000, seed=7)


@pytest.fixture(scope="session")
def churn_scorer(churn_artifact: Artifact) -> Scorer:
    return Scorer(churn_artifact)


@pytest.fixture
def write_files(tmp_path: Path) -> Callable[..., Path]:
    """``write_files(frame, files=3, fmt="parquet", row_group_size=250)``: a prefix of files."""

    def write(
        frame: pd.DataFrame,
        *,
        files: int = 3,
        fmt: str = "parquet",
        row_group_size: int = 250,
        name: str = "input",
    ) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        step = -(-len(frame) // files)
        for i in range(files):
            part = frame.iloc[i * step : (i + 1) * step]
            path = directory / f"users-{i:03d}.{fmt}"
            if fmt == "parquet":
                table = pa.Table.from_pandas(part, preserve_index=False)
                pq.write_table(table, path, row_group_size=row_group_size)
            else:
                part.to_csv(path, index=False)
        return directory

    return write


@pytest.fixture
def make_job(archive: Archive, tmp_path: Path) -> Callable[..., ScoreJob]:
    """``make_job(input, output=..., **fields)``: a job scoring churn@production."""

    def make(input: Path | str, output: Path | str | None = None, **fields: Any) -> ScoreJob:
        job = ScoreJob(
            model="churn@production",
            archive=archive.uri,
            input=str(input),
            output=str(output if output is not None else tmp_path / "out"),
            chunk_rows=400,
            log_seconds=3600.0,
        )
        return replace(job, **fields)

    return make


def read_output(output: Path | str, *, s3_endpoint: str | None = None) -> pd.DataFrame:
    """Every part listed in ``_SUCCESS``, concatenated in shard order."""
    location = Location(str(output), s3_endpoint=s3_endpoint)
    success = read_success(location)
    assert success is not None, f"{output} has no _SUCCESS"
    frames = [
        pq.read_table(location.join(p["path"]), filesystem=location.fs).to_pandas()
        for p in success["parts"]
    ]
    return pd.concat(frames, ignore_index=True)


def read_rejects(output: Path | str, *, s3_endpoint: str | None = None) -> pd.DataFrame:
    location = Location(str(output), s3_endpoint=s3_endpoint)
    success = read_success(location)
    assert success is not None
    frames = [
        pq.read_table(location.join(p["path"]), filesystem=location.fs).to_pandas()
        for p in success["rejects"]
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
)


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the moto server; returns its name."""
    import boto3

    name = "batch-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).create_bucket(Bucket=name)
    return name
