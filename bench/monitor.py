"""What drift counting costs the runtimes, on and off in the same run (run by hand).

The issue's budget: at most 5% of ``dsc score`` throughput, at most 10% of serving
throughput. Both are measured end to end, alternating on/off rounds so that the load of a
shared machine hits both alike:

- batch: ``dsc score`` in a fresh process on ``--rows`` churn rows (Parquet in and out,
  1 worker), with drift counted (the default) and with ``--no-drift``. Each round records
  the throughput (rows over the process's wall time) and the process's CPU seconds (user +
  system, from ``getrusage``): on a machine other jobs share, wall time mostly measures
  how long the process waited for a core, and rounds scatter by tens of percent, while
  CPU seconds are what counting really adds. The cost is reported from the median and
  from the best round of each, for both;
- serving: ``dsc serve`` with ``DSC_DRIFT=1`` and ``0``, one JSON row per request
  (``/invocations``), ``wrk`` with 16 connections for ``--seconds``; median and best.

    .venv/bin/python bench/monitor.py [--rows 2000000] [--rounds 7] [--seconds 6] [--only batch]

Writes bench/results/monitor.json (with ``--only``, the other part's figures are kept from
the previous file). Not a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
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


def batch_round(archive: str, data: Path, out: Path, *, drift: bool) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one ``dsc score`` run, process start
    to exit."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(BIN / "dsc"), "--archive", archive, "score", "churn@production"]
    argv += ["--input", str(data), "--output", str(out)] + ([] if drift else ["--no-drift"])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if drift:  # the counts are really there
        assert json.loads((out / "_SUCCESS").read_text())["drift"]["rows"] > 0
    return wall, cpu


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
    ap.add_argument("--rounds", type=int, default=7)
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
        batch_cpu: dict[str, list[float]] = {"on": [], "off": []}
        serve: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for mode in order if args.only != "serve" else ():
                wall, cpu = batch_round(archive.uri, data, work / "out", drift=mode == "on")
                batch[mode].append(args.rows / wall)
                batch_cpu[mode].append(cpu)
                print(f"batch {mode}: {args.rows / wall:,.0f} rows/s, {cpu:.3f} CPU s", flush=True)
            for mode in order if args.only != "batch" else ():
                rps = serve_round(archive.uri, body, work, drift=mode == "on", seconds=args.seconds)
                serve[mode].append(rps)
                print(f"serve {mode}: {rps:,.0f} requests/s", flush=True)

    def summary(runs: dict[str, list[float]], unit: str) -> dict[str, Any] | None:
        """Throughput on and off (higher is better): best and median rounds, and the cost
        (the share of throughput counting takes) from each."""
        if not runs["on"]:
            return None
        best = {k: max(vs) for k, vs in runs.items()}
        median = {k: statistics.median(vs) for k, vs in runs.items()}
        return {
            f"on_{unit}": round(best["on"]),
            f"off_{unit}": round(best["off"]),
            "cost": round(1 - best["on"] / best["off"], 4),
            f"median_on_{unit}": round(median["on"]),
            f"median_off_{unit}": round(median["off"]),
            "median_cost": round(1 - median["on"] / median["off"], 4),
            "rounds": {k: [round(v) for v in vs] for k, vs in runs.items()},
        }

    def cpu_summary(runs: dict[str, list[float]]) -> dict[str, Any] | None:
        """CPU seconds per run on and off (lower is better), and the extra share on costs."""
        if not runs["on"]:
            return None
        best = {k: min(vs) for k, vs in runs.items()}
        median = {k: statistics.median(vs) for k, vs in runs.items()}
        return {
            "on_seconds": round(best["on"], 3),
            "off_seconds": round(best["off"], 3),
            "cost": round(best["on"] / best["off"] - 1, 4),
            "median_on_seconds": round(median["on"], 3),
            "median_off_seconds": round(median["off"], 3),
            "median_cost": round(median["on"] / median["off"] - 1, 4),
            "rounds": {k: [round(v, 3) for v in vs] for k, vs in runs.items()},
        }

    results: dict[str, Any] = {}
    if args.only is not None and args.out.exists():  # keep the part not measured now
        results = json.loads(args.out.read_text())
    results.update(
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
        rows=args.rows,
        rounds=args.rounds,
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    if args.only != "serve":
        results["batch"] = summary(batch, "rows_per_s")
        results["batch_cpu"] = cpu_summary(batch_cpu)
    if args.only != "batch":
        results["serve_one_row_c16"] = summary(serve, "requests_per_s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
