"""What drift counting costs the runtimes, on and off in the same run (run by hand).

The issue's budget: at most 5% of ``dsc score`` throughput, at most 10% of serving
throughput. Both are measured end to end, alternating on/off rounds so that the load of a
shared machine hits both alike, best round of each kept:

- batch: ``dsc score`` in a fresh process on ``--rows`` churn rows (Parquet in and out,
  1 worker), with drift counted (the default) and with ``--no-drift``;
- serving: ``dsc serve`` with ``DSC_DRIFT=1`` and ``0``, one JSON row per request
  (``/invocations``), ``wrk`` with 16 connections for ``--seconds``.

    .venv/bin/python bench/monitor.py [--rows 2000000] [--rounds 3] [--seconds 6]

Writes bench/results/monitor.json. Not a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "runtime"))

import dscloud  # noqa: E402
from dscloud import example  # noqa: E402
from dscloud.archive import Archive  # noqa: E402

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def publish(archive: Archive) -> None:
    ex = example.train(seed=0, rows=3000)
    artifact = dscloud.package(
        ex.estimator, ex.X_test, name="churn", training_data=ex.X_train, y=ex.y_train
    )
    dscloud.publish(artifact, archive)
    archive.promote("churn", 1, "production", by="bench")


def batch_round(archive: str, data: Path, out: Path, *, drift: bool) -> float:
    """Seconds of one ``dsc score`` run, process start to exit."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(BIN / "dsc"), "--archive", archive, "score", "churn@production"]
    argv += ["--input", str(data), "--output", str(out)] + ([] if drift else ["--no-drift"])
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_round(archive: str, body: Path, work: Path, *, drift: bool, seconds: float) -> float:
    """Requests/s of ``dsc serve`` under wrk (16 connections, one row per request)."""
    port = free_port()
    env = {**os.environ, "DSC_ARCHIVE": archive, "DSC_REFRESH_SECONDS": "0"}
    env["DSC_DRIFT"] = "1" if drift else "0"
    argv = [str(BIN / "dsc"), "serve", "churn@production", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT)
        wrk = ["wrk", "-t2", "-c16", "-s", str(script), f"{url}/invocations"]
        wenv = {**os.environ, "BODY_FILE": str(body)}
        subprocess.run([*wrk, "-d2s"], env=wenv, check=True, capture_output=True)  # warm-up
        out = subprocess.run(
            [*wrk, f"-d{max(1, round(seconds))}s"], env=wenv, check=True, capture_output=True,
            text=True,
        ).stdout  # fmt: skip
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        if drift:  # the counts are really there
            assert httpx.get(f"{url}/v2/models/churn/drift").json()["rows"] > 0
        return rps
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--only", choices=("batch", "serve"), help="measure one of the two")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "monitor.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = Archive.open(work / "archive")
        publish(archive)
        data = work / "users.parquet"
        frame = example.churn_data(args.rows, seed=11)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data)
        body = work / "one.json"
        row = {k: v for k, v in frame.iloc[0][example.FEATURES].to_dict().items()}
        body.write_text(json.dumps({"dataframe_records": [row]}))

        batch: dict[str, list[float]] = {"on": [], "off": []}
        serve: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for mode in order if args.only != "serve" else ():
                seconds = batch_round(archive.uri, data, work / "out", drift=mode == "on")
                batch[mode].append(args.rows / seconds)
                print(f"batch {mode}: {args.rows / seconds:,.0f} rows/s", flush=True)
            for mode in order if args.only != "batch" else ():
                rps = serve_round(archive.uri, body, work, drift=mode == "on", seconds=args.seconds)
                serve[mode].append(rps)
                print(f"serve {mode}: {rps:,.0f} requests/s", flush=True)

    def summary(runs: dict[str, list[float]], unit: str) -> dict[str, Any] | None:
        if not runs["on"]:
            return None
        on, off = max(runs["on"]), max(runs["off"])
        return {
            f"on_{unit}": round(on),
            f"off_{unit}": round(off),
            "cost": round(1 - on / off, 4),
            "rounds": {k: [round(v) for v in vs] for k, vs in runs.items()},
        }

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": args.rows,
        "batch": summary(batch, "rows_per_s"),
        "serve_one_row_c16": summary(serve, "requests_per_s"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
