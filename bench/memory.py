"""Server memory per byte of request body: CSV and each JSON form, as ratios to body size.

For each form, a fresh `dsc serve` (one worker) on the example churn model answers one
warm-up request; its peak RSS is then reset (``/proc/PID/clear_refs``), one body of about
``--mb`` MB is posted, and the new peak (``VmHWM``) is read. The figure is

    (peak RSS during the request - RSS before it) / body bytes

so 10.0 means the server needed ten times the body's size to decode and score it. The
admission budget (``dscloud.server.admission.COST_PER_BODY_BYTE``) is set from the largest
of these. Writes bench/results/memory.json; bench/memory.md quotes the figures.

    .venv/bin/python bench/memory.py [--mb 15] [--label after]
    .venv/bin/python bench/memory.py --report

Linux only (reads /proc). Only 127.0.0.1 is used. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import dscloud
from dscloud import example
from dscloud.archive import Archive

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "memory.json"
FORMS = ("csv", "dataframe_split", "dataframe_records", "instances", "inputs", "oip")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def rows_for(mb: float) -> list[dict[str, Any]]:
    """Churn feature rows, repeated until their CSV is about ``mb`` MB."""
    frame = example.churn_data(20_000, seed=3)[example.FEATURES]
    base = frame.to_dict("records")
    base = [{k: (None if v != v else v) for k, v in r.items()} for r in base]  # NaN -> None
    per_row = len(to_csv(base[:1000])) / 1000
    n = int(mb * 1e6 / per_row)
    return [base[i % len(base)] for i in range(n)]


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def body(form: str, rows: list[dict[str, Any]]) -> tuple[str, str, bytes]:
    """(path, content type, body) of ``rows`` in ``form``."""
    names = list(rows[0])
    if form == "csv":
        return "/invocations", "text/csv", to_csv(rows)
    if form == "dataframe_split":
        doc: Any = {"dataframe_split": {"columns": names, "data": [list(r.values()) for r in rows]}}
    elif form == "dataframe_records":
        doc = {"dataframe_records": rows}
    elif form == "instances":
        doc = {"instances": rows}
    elif form == "inputs":
        doc = {"inputs": {k: [r[k] for r in rows] for k in names}}
    else:  # OIP v2 infer: one tensor per column
        strings = set(example.CATEGORICAL)
        doc = {
            "inputs": [
                {
                    "name": k,
                    "shape": [len(rows)],
                    "datatype": "BYTES" if k in strings else "FP64",
                    "data": [r[k] for r in rows],
                }
                for k in names
            ]
        }
        return "/v2/models/churn/infer", "application/json", json.dumps(doc).encode()
    return "/invocations", "application/json", json.dumps(doc).encode()


def measure(archive: Archive, form: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    path, content_type, data = body(form, rows)
    port = free_port()
    env = {
        **os.environ,
        "DSC_ARCHIVE": archive.uri,
        "DSC_MAX_BODY_BYTES": str(64 * 1024 * 1024),
        "DSC_REFRESH_SECONDS": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "dscloud.cli", "serve", "churn@production", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        small_path, small_type, small = body(form, rows[:2000])
        httpx.post(url + small_path, content=small, headers={"content-type": small_type})
        before = status_kb(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
        t = time.perf_counter()
        r = httpx.post(
            url + path, content=data, headers={"content-type": content_type}, timeout=300
        )
        seconds = time.perf_counter() - t
        if r.status_code != 200:
            raise RuntimeError(f"{form}: {r.status_code} {r.text[:200]}")
        peak = status_kb(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "form": form,
        "rows": len(rows),
        "body_bytes": len(data),
        "rss_before": before,
        "rss_peak": peak,
        "ratio": round((peak - before) / len(data), 2),
        "seconds": round(seconds, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=15.0, help="CSV body size in MB")
    parser.add_argument("--label", default="after", help="name of this run in results")
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--report", action="store_true", help="print bench/memory.md tables")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(RESULTS.read_text())))
        return 0
    ex = example.train(seed=0, rows=5000)
    rows = rows_for(args.mb)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Archive.open(Path(tmp) / "archive")
        artifact = dscloud.package(
            ex.estimator, ex.X_test.head(200), name="churn", training_data=ex.X_train
        )
        dscloud.publish(artifact, archive)
        archive.promote("churn", 1, "production", by="bench")
        results = []
        for form in args.forms:
            result = measure(archive, form, rows)
            print(json.dumps(result), flush=True)
            results.append(result)
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    saved[args.label] = results
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    return 0


def report(saved: dict[str, list[dict[str, Any]]]) -> str:
    labels = list(saved)
    lines = [
        "| form | body MB | " + " | ".join(f"{label}: peak / body" for label in labels) + " |",
        "|---|---:|" + "---:|" * len(labels),
    ]
    by_label = {label: {r["form"]: r for r in saved[label]} for label in labels}
    for form in FORMS:
        first = next((by_label[label][form] for label in labels if form in by_label[label]), None)
        if first is None:
            continue
        cells = [
            f"{by_label[label][form]['ratio']:.1f}x" if form in by_label[label] else "-"
            for label in labels
        ]
        lines.append(f"| {form} | {first['body_bytes'] / 1e6:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
