"""The same job with input and output on S3 (a moto server on 127.0.0.1, through pyarrow)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dscloud.batch import ScoreJob, run_local
from tests.runtime.batch.conftest import REGION, read_output, read_rejects


def upload(endpoint: str, bucket: str, frame: pd.DataFrame, *, files: int, fmt: str) -> None:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    step = -(-len(frame) // files)
    for i in range(files):
        part = frame.iloc[i * step : (i + 1) * step]
        body = io.BytesIO()
        if fmt == "parquet":
            pq.write_table(
                pa.Table.from_pandas(part, preserve_index=False), body, row_group_size=200
            )
        else:
            body.write(part.to_csv(index=False).encode())
        s3.put_object(Bucket=bucket, Key=f"users/day=1/part-{i}.{fmt}", Body=body.getvalue())
    s3.put_object(Bucket=bucket, Key="users/_SUCCESS", Body=b"")  # bookkeeping: skipped


def s3_keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for o in listed.get("Contents", []))


def test_parquet_on_s3_sharded_equals_local_unsharded(
    users: pd.DataFrame,
    s3_endpoint: str,
    bucket: str,
    make_job: Callable[..., ScoreJob],
    write_files: Callable[..., Path],
    tmp_path: Path,
) -> None:
    # given
    frame = users.head(1200)
    upload(s3_endpoint, bucket, frame, files=2, fmt="parquet")
    local = make_job(write_files(frame, files=1), tmp_path / "local")
    run_local(local, workers=1)

    # when 5 shards (more than the 2 files) read and write S3
    job = make_job(
        f"s3://{bucket}/users/", f"s3://{bucket}/scores/", shard_count=5, s3_endpoint=s3_endpoint
    )
    run_local(job, workers=1)

    # then
    got = read_output(job.output, s3_endpoint=s3_endpoint)
    pd.testing.assert_frame_equal(got, read_output(local.output))
    keys = s3_keys(s3_endpoint, bucket, "scores/")
    assert "_SUCCESS" in keys
    assert [k for k in keys if k.startswith("part-")] == [
        f"part-{i:05d}-of-00005.parquet" for i in range(5)
    ]
    assert not [k for k in keys if "_temporary" in k]


def test_csv_on_s3_with_rejects(
    users: pd.DataFrame, s3_endpoint: str, bucket: str, make_job: Callable[..., ScoreJob]
) -> None:
    frame = users.head(400).astype({"support_calls": object})
    frame.loc[7, "support_calls"] = "lots"
    upload(s3_endpoint, bucket, frame, files=2, fmt="csv")

    job = make_job(
        f"s3://{bucket}/users", f"s3://{bucket}/out", shard_count=2, s3_endpoint=s3_endpoint
    )
    run_local(job, workers=1)

    out = read_output(job.output, s3_endpoint=s3_endpoint)
    rejects = read_rejects(job.output, s3_endpoint=s3_endpoint)
    assert len(out) == 399
    assert rejects["user_id"].tolist() == [frame.loc[7, "user_id"]]
    assert "got str 'lots'" in rejects["reason"].item()
