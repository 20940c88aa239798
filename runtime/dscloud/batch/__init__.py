"""The batch adapter: score every row of a data set (Parquet, CSV, ...), shard ``i`` of ``n``.

The same command runs on a laptop (``--workers N`` uses its cores) and as an AWS Batch
array job (each child is one shard; ``AWS_BATCH_JOB_ARRAY_INDEX`` says which)::

    dsc score churn@production --input s3://data/users/ --output s3://scores/2026-11-25/

Output layout (the same in a directory and under an S3 prefix)::

    part-00000-of-00004.parquet             keys, prediction, model name/version/sha256
    _rejects/rejects-00000-of-00004.parquet keys, source file and row, reason, raw values
    _manifests/shard-00000-of-00004.json    one per shard: its commit record
    _SUCCESS                                 the run summary, once every shard is done
    _FAILED                                  instead, when too many rows were rejected
    _temporary/                              in-flight writes; never read

Modules: :mod:`~dscloud.batch.plan` (which rows belong to which shard),
:mod:`~dscloud.batch.formats` (one class per input format, and their registry),
:mod:`~dscloud.batch.reader` (Arrow columns to the scorer's) and
:mod:`~dscloud.batch.writer` (streaming output),
:mod:`~dscloud.batch.manifest` (the run record), :mod:`~dscloud.batch.metrics` (a
completed run's drift figures to CloudWatch), :mod:`~dscloud.batch.following` (both
versions of an alias's rollout), :mod:`~dscloud.batch.job` (one shard, or all of them in a
process pool). pyarrow is imported here and nowhere else in the runtime.
"""

from __future__ import annotations

from dscloud.batch.following import guard_run
from dscloud.batch.formats import Format, list_inputs
from dscloud.batch.job import ScoreJob, plan_job, run_local, run_shard
from dscloud.batch.locations import InputFile, Location
from dscloud.batch.manifest import (
    FAILED,
    SUCCESS,
    ShardManifest,
    finalize,
    read_failure,
    read_success,
)
from dscloud.batch.metrics import MetricsTarget
from dscloud.batch.plan import RowGroup, ShardPlan, WorkUnit

__all__ = [
    "FAILED",
    "SUCCESS",
    "Format",
    "InputFile",
    "Location",
    "MetricsTarget",
    "RowGroup",
    "ScoreJob",
    "ShardManifest",
    "ShardPlan",
    "WorkUnit",
    "finalize",
    "guard_run",
    "list_inputs",
    "plan_job",
    "read_failure",
    "read_success",
    "run_local",
    "run_shard",
]
