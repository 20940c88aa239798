"""Stream handler benchmark, side by side with a naive per-record scikit-learn handler.

For a 1,000-record Kinesis batch of the example churn pipeline:

- handler time with DynamoDB through moto (in-process ``mock_aws``): our handler (one ONNX
  call, conditional puts from 16 threads) vs the naive handler (per record: decode, a
  one-row DataFrame, ``predict_proba``, one ``put_item``);
- handler time with the writes stubbed out, to isolate decoding + scoring;
- the scoring core alone (``Scorer.score_records`` on the decoded features);
- cold start in a fresh process: interpreter, imports, model load (sha256 + goldens for
  ours; unpickling for the naive one), first 1,000-record batch (writes stubbed).

    .venv/bin/python bench/stream.py [--repeat 7]

Writes bench/results/stream.json; bench/stream.md quotes the figures as ratios. Run by
hand, not a test. Only in-process moto, no network.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1000
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
)
os.environ.pop("AWS_ENDPOINT_URL", None)


def kinesis_event(payloads: list[bytes]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "kinesis": {
                    "partitionKey": f"pk-{i}",
                    "sequenceNumber": str(4900000000 + i),
                    "data": base64.b64encode(p).decode(),
                    "approximateArrivalTimestamp": 1714564800.0,
                    "kinesisSchemaVersion": "1.0",
                },
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{4900000000 + i}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/events",
                "awsRegion": "us-east-1",
            }
            for i, p in enumerate(payloads)
        ]
    }


def payloads(n: int) -> list[bytes]:
    import math

    from dscloud import example

    frame = example.churn_data(n, seed=11)
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        features = {
            k: (None if isinstance(row[k], float) and math.isnan(row[k]) else row[k])
            for k in example.FEATURES
        }
        out.append(
            json.dumps(
                {
                    "entity_id": f"u{i:06d}",
                    "features": features,
                    "event_time": "2024-05-01T12:00:00Z",
                }
            ).encode()
        )
    return out


class NaiveHandler:
    """What a first Lambda often looks like: one record at a time through scikit-learn."""

    def __init__(self, estimator: Any, write: Callable[[dict[str, Any]], None]) -> None:
        self.estimator = estimator
        self.write = write

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        import pandas as pd

        from dscloud import example

        for record in event["Records"]:
            doc = json.loads(base64.b64decode(record["kinesis"]["data"]))
            frame = pd.DataFrame([doc["features"]], columns=example.FEATURES)
            proba = float(self.estimator.predict_proba(frame)[0, 1])
            self.write(
                {
                    "entity_id": {"S": doc["entity_id"]},
                    "event_time": {"S": doc["event_time"]},
                    "score": {"N": repr(proba)},
                }
            )
        return {"batchItemFailures": []}


class StubTable:
    def write(self, predictions: Any, *, deadline: Any = None) -> list[str]:
        return ["written"] * len(predictions)


class StubQueue:
    def send(self, rejects: Any) -> list[None]:
        return [None] * len(rejects)


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(samples) * 1000, "min_ms": min(samples) * 1000}


COLD_OURS = """
import time; t0 = time.perf_counter()
import json, sys
from dscloud.settings import Settings
from dscloud.stream import handler as h
t_import = time.perf_counter()
from dscloud.archive import Archive
from dscloud.live import LiveModel
class T:
    def write(self, p, *, deadline=None): return ["written"] * len(p)
class Q:
    def send(self, r): return [None] * len(r)
live = LiveModel(Archive.open(sys.argv[1]), "churn@production")
app = h.StreamScorer(live, sinks=[T()], rejects=Q(), refresh_seconds=0)
t_load = time.perf_counter()
event = json.load(open(sys.argv[2]))
r = app.handle(event, None)
t_batch = time.perf_counter()
assert r == {"batchItemFailures": []}, r
print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "first_batch_s": t_batch - t_load, "in_process_s": t_batch - t0}))
"""

COLD_NAIVE = """
import time; t0 = time.perf_counter()
import json, sys, pickle, base64
import pandas as pd
import sklearn.pipeline
t_import = time.perf_counter()
est = pickle.load(open(sys.argv[1], "rb"))
t_load = time.perf_counter()
event = json.load(open(sys.argv[2]))
from dscloud import example
for rec in event["Records"]:
    doc = json.loads(base64.b64decode(rec["kinesis"]["data"]))
    est.predict_proba(pd.DataFrame([doc["features"]], columns=example.FEATURES))
t_batch = time.perf_counter()
print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "first_batch_s": t_batch - t_load, "in_process_s": t_batch - t0}))
"""


def cold_start(script: str, *args: str, runs: int = 3) -> dict[str, float]:
    results = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        wall = time.perf_counter() - t0
        inner = json.loads(out.stdout.strip().splitlines()[-1])
        results.append({**inner, "wall_s": wall})
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import boto3
    from moto import mock_aws

    import dscloud
    from dscloud import example
    from dscloud.archive import Archive
    from dscloud.live import LiveModel
    from dscloud.stream.handler import StreamScorer
    from dscloud.stream.local import create_resources
    from dscloud.stream.records import parse_payload
    from dscloud.stream.sinks import PredictionTable, RejectsQueue

    tmp = Path(tempfile.mkdtemp(prefix="dsc-bench-stream-"))
    trained = example.train(seed=0, rows=3000)
    artifact = dscloud.package(
        trained.estimator, trained.X_test, name="churn", training_data=trained.X_train,
        y=trained.y_train,
    )  # fmt: skip
    archive = Archive.open(tmp / "archive")
    dscloud.publish(artifact, archive)
    archive.promote("churn", 1, "production", by="bench")
    (tmp / "model.pkl").write_bytes(pickle.dumps(trained.estimator))

    data = payloads(BATCH)
    event = kinesis_event(data)
    (tmp / "event.json").write_text(json.dumps(event))
    live = LiveModel(archive, "churn@production")
    results: dict[str, Any] = {
        "batch_records": BATCH,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }

    # scoring core alone, and the handler with writes stubbed out
    features = [parse_payload(p).features for p in data]
    results["core_score_records"] = timed(lambda: live.scorer.score_records(features), args.repeat)
    stubbed = StreamScorer(live, sinks=[StubTable()], rejects=StubQueue(), refresh_seconds=0)
    results["ours_stubbed"] = timed(lambda: stubbed.handle(event, None), args.repeat)
    naive_stub = NaiveHandler(trained.estimator, lambda _item: None)
    results["naive_stubbed"] = timed(lambda: naive_stub(event), max(1, args.repeat // 3))

    # DynamoDB through moto
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        kin = boto3.client("kinesis", region_name="us-east-1")
        made = create_resources(kinesis=kin, dynamodb=ddb, sqs=sqs)
        ours = StreamScorer(
            live,
            sinks=[PredictionTable(ddb, made.table)],
            rejects=RejectsQueue(sqs, made.rejects_url),
            refresh_seconds=0,
        )
        results["ours_moto"] = timed(lambda: ours.handle(event, None), max(1, args.repeat // 2))
        naive = NaiveHandler(
            trained.estimator, lambda item: ddb.put_item(TableName=made.table, Item=item)
        )
        results["naive_moto"] = timed(lambda: naive(event), max(1, args.repeat // 3))

    results["cold_start_ours"] = cold_start(
        COLD_OURS, str(tmp / "archive"), str(tmp / "event.json")
    )
    results["cold_start_naive"] = cold_start(
        COLD_NAIVE, str(tmp / "model.pkl"), str(tmp / "event.json")
    )

    def rps(key: str) -> float:
        return BATCH / (results[key]["median_ms"] / 1000)

    results["records_per_s"] = {
        k: rps(k) for k in ("ours_stubbed", "naive_stubbed", "ours_moto", "naive_moto")
    }
    results["ratios"] = {
        "stubbed_naive_over_ours": results["naive_stubbed"]["median_ms"] / results["ours_stubbed"]["median_ms"],
        "moto_naive_over_ours": results["naive_moto"]["median_ms"] / results["ours_moto"]["median_ms"],
        "ours_stubbed_over_100ms_target": results["ours_stubbed"]["median_ms"] / 100,
        "ours_cold_in_process_over_1s_target": results["cold_start_ours"]["in_process_s"] / 1.0,
        "cold_naive_over_ours_in_process": results["cold_start_naive"]["in_process_s"] / results["cold_start_ours"]["in_process_s"],
        "core_share_of_stubbed_handler": results["core_score_records"]["median_ms"] / results["ours_stubbed"]["median_ms"],
    }  # fmt: skip
    out = ROOT / "bench" / "results" / "stream.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
