"""Serving benchmark: raw ONNX Runtime, the scoring core, our server and `mlflow models serve`.

One run, side by side, on the same two models (the example churn pipeline and a 100-tree
random forest): single-row latency p50/p99 at concurrency 1, requests/s at concurrency 16
and 64, rows/s for 1,000-row requests, and server RSS. Writes bench/results/serve.json;
bench/serve.md quotes the figures.

    .venv/bin/python bench/serve.py [--seconds 8]      # measure, write results/serve.json
    .venv/bin/python bench/serve.py --report           # the tables of bench/serve.md

Needs `wrk` (apt-get install wrk) and an MLflow venv with the same scikit-learn
(bench/.venv-mlflow: `python3.11 -m venv bench/.venv-mlflow && bench/.venv-mlflow/bin/pip
install mlflow scikit-learn==<ours>`). Only 127.0.0.1 is used. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import re
import signal
import socket
import statistics
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
from dscloud.scorer import Scorer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MLFLOW_VENV = HERE / ".venv-mlflow"
RESULTS = HERE / "results" / "serve.json"
BATCH_ROWS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {timeout}s")


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (workers included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# -- load generation (wrk) ---------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"p50\\": %d, \\"p99\\": %d, \\"mean\\": %f}\\n",
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def wrk(url: str, body: bytes, *, connections: int, seconds: float, work: Path) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and error count of one wrk run."""
    body_file = work / f"body-{len(body)}.json"
    body_file.write_bytes(body)
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    threads = min(connections, 2)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    stats = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": round(rps, 1),
        "p50_ms": stats["p50"] / 1000,
        "p99_ms": stats["p99"] / 1000,
        "requests": total,
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def check_answer(url: str, body: bytes, n_rows: int) -> None:
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    assert len(r.json()["predictions"]) == n_rows, r.text[:200]


def measure_server(
    name: str, url: str, one: bytes, batch: bytes, pid: int, seconds: float, work: Path
) -> dict[str, Any]:
    check_answer(url, one, 1)
    check_answer(url, batch, BATCH_ROWS)
    wrk(url, one, connections=4, seconds=2, work=work)  # warm up
    result: dict[str, Any] = {"server": name}
    result["c1"] = wrk(url, one, connections=1, seconds=seconds, work=work)
    result["c16"] = wrk(url, one, connections=16, seconds=seconds, work=work)
    result["c64"] = wrk(url, one, connections=64, seconds=seconds, work=work)
    big = wrk(url, batch, connections=4, seconds=seconds, work=work)
    big["rows_per_s"] = round(big["requests_per_s"] * BATCH_ROWS)
    result["rows1000_c4"] = big
    result["rss_mb"] = round(tree_rss(pid) / 2**20, 1)
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return result


# -- the servers ---------------------------------------------------------------------------


def ours(
    archive: str, model: str, workers: int, one: bytes, batch: bytes, seconds: float, work: Path
) -> dict[str, Any]:
    port = free_port()
    argv = [str(ROOT / ".venv/bin/dsc"), "serve", f"{model}@production", "--port", str(port)]
    return serve_and_measure(
        f"dsc serve, {workers} worker(s)",
        [*argv, "--workers", str(workers)],
        {**os.environ, "DSC_ARCHIVE": archive, "DSC_REFRESH_SECONDS": "0"},
        port,
        "/v2/health/ready",
        (one, batch, seconds, work),
    )


def mlflow(
    model_dir: Path, workers: int, one: bytes, batch: bytes, seconds: float, work: Path
) -> dict[str, Any]:
    port = free_port()
    argv = [str(MLFLOW_VENV / "bin/mlflow"), "models", "serve", "-m", str(model_dir)]
    return serve_and_measure(
        f"mlflow models serve, {workers} worker(s)",
        [*argv, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", str(workers)],
        {**os.environ, "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ['PATH']}"},
        port,
        "/ping",
        (one, batch, seconds, work),
    )


def serve_and_measure(
    label: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    load: tuple[bytes, bytes, float, Path],
) -> dict[str, Any]:
    """Start a server, wait until ``ready_path`` answers, load it with wrk, stop it."""
    one, batch, seconds, work = load
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", proc)
        return measure_server(
            label, f"http://127.0.0.1:{port}/invocations", one, batch, proc.pid, seconds, work
        )
    finally:
        stop(proc)


def save_mlflow_model(estimator: Any, X: Any, out: Path, work: Path) -> None:
    """mlflow.sklearn.save_model in the MLflow venv, predicting probabilities like we do."""
    pkl = work / f"{out.name}.pkl"
    pkl.write_bytes(pickle.dumps((estimator, X.head(50))))
    code = (
        "import pickle, sys, mlflow.sklearn\n"
        "from mlflow.models import infer_signature\n"
        "est, X = pickle.load(open(sys.argv[1], 'rb'))\n"
        "sig = infer_signature(X, est.predict_proba(X))\n"
        "mlflow.sklearn.save_model(est, sys.argv[2], signature=sig, pyfunc_predict_fn='predict_proba', serialization_format='cloudpickle')\n"
    )
    subprocess.run(
        [str(MLFLOW_VENV / "bin/python"), "-c", code, str(pkl), str(out)], check=True, timeout=300
    )


# -- in process ----------------------------------------------------------------------------


def per_call_us(fn: Any, n: int) -> dict[str, float]:
    for _ in range(200):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "p50_us": round(statistics.median(times) * 1e6, 1),
        "p99_us": round(times[int(len(times) * 0.99)] * 1e6, 1),
        "mean_us": round(statistics.fmean(times) * 1e6, 1),
    }


def in_process(
    artifact: dscloud.Artifact, row: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    scorer = Scorer(artifact)
    feeds = scorer.schema.encode_records([row]).feeds
    names = [o.name for o in scorer.schema.outputs]
    big_feeds = scorer.schema.encode_records(rows).feeds
    out: dict[str, Any] = {
        "raw_session_run_1row": per_call_us(lambda: scorer.session.run(names, feeds), 5000),
        "core_score_records_1row": per_call_us(lambda: scorer.score_records([row]), 5000),
        "raw_session_run_1000rows": per_call_us(lambda: scorer.session.run(names, big_feeds), 300),
        "core_score_records_1000rows": per_call_us(lambda: scorer.score_records(rows), 300),
    }
    out["core_over_raw_1row"] = round(
        out["core_score_records_1row"]["p50_us"] / out["raw_session_run_1row"]["p50_us"], 2
    )
    out["core_over_raw_1000rows"] = round(
        out["core_score_records_1000rows"]["p50_us"] / out["raw_session_run_1000rows"]["p50_us"], 2
    )
    return out


# -- main ------------------------------------------------------------------------------------


def split_body(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}
    ).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each wrk run")
    ap.add_argument("--models", default="churn,forest")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()

    ex = example.train(seed=0, rows=5000)
    from sklearn.ensemble import RandomForestClassifier

    Xn = ex.X_train[example.NUMERIC].fillna(0.0)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1).fit(
        Xn, ex.y_train
    )
    test = ex.X_test.dropna()
    models = {
        "churn": (ex.estimator, ex.X_train, test, example.FEATURES),
        "forest": (forest, Xn, test[example.NUMERIC], example.NUMERIC),
    }
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "seconds_per_run": args.seconds,
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="dsc-bench-") as tmp:
        work = Path(tmp)
        archive = Archive.open(work / "archive")
        for name in args.models.split(","):
            estimator, train_X, sample, columns = models[name]
            print(f"{name}:", flush=True)
            artifact = dscloud.package(
                estimator, sample.head(200), name=name, training_data=train_X
            )
            dscloud.publish(artifact, archive)
            archive.promote(name, 1, "production", by="bench")
            rows = [
                {c: (v.item() if hasattr(v, "item") else v) for c, v in r.items()}
                for r in sample[columns].to_dict("records")
            ]
            batch_rows = (rows * math.ceil(BATCH_ROWS / len(rows)))[:BATCH_ROWS]
            one, batch = split_body(rows[:1], columns), split_body(batch_rows, columns)
            entry: dict[str, Any] = {"in_process": in_process(artifact, rows[0], batch_rows)}
            print(f"  in process: {json.dumps(entry['in_process'])}", flush=True)
            entry["servers"] = [
                ours(archive.uri, name, 1, one, batch, args.seconds, work),
                ours(archive.uri, name, 2, one, batch, args.seconds, work),
            ]
            if not args.no_mlflow:
                model_dir = work / f"mlflow-{name}"
                save_mlflow_model(
                    estimator, sample[columns] if name == "forest" else sample, model_dir, work
                )
                entry["servers"].append(mlflow(model_dir, 1, one, batch, args.seconds, work))
                entry["servers"].append(mlflow(model_dir, 2, one, batch, args.seconds, work))
                entry["ratios"] = ratios(entry["servers"])
            results["models"][name] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


def ratios(servers: list[dict[str, Any]]) -> dict[str, float]:
    """Ours vs MLflow, one worker against one worker (and two against two)."""
    by = {s["server"]: s for s in servers}
    out = {}
    for w in (1, 2):
        o, m = by[f"dsc serve, {w} worker(s)"], by[f"mlflow models serve, {w} worker(s)"]
        out[f"w{w}_c16_rps_x"] = round(o["c16"]["requests_per_s"] / m["c16"]["requests_per_s"], 1)
        out[f"w{w}_c64_rps_x"] = round(o["c64"]["requests_per_s"] / m["c64"]["requests_per_s"], 1)
        out[f"w{w}_p50_fraction"] = round(o["c1"]["p50_ms"] / m["c1"]["p50_ms"], 3)
        out[f"w{w}_rows1000_x"] = round(
            o["rows1000_c4"]["rows_per_s"] / m["rows1000_c4"]["rows_per_s"], 1
        )
        out[f"w{w}_rss_fraction"] = round(o["rss_mb"] / m["rss_mb"], 2)
    return out


def report(results: dict[str, Any]) -> str:
    """The Markdown tables of bench/serve.md, from a results dict."""
    lines = []
    for name, entry in results["models"].items():
        ip = entry["in_process"]
        lines += [
            f"### {name}",
            "",
            "| in process | p50 µs, 1 row | p50 µs, 1,000 rows |",
            "|---|---|---|",
            f"| raw `session.run` | {ip['raw_session_run_1row']['p50_us']} "
            f"| {ip['raw_session_run_1000rows']['p50_us']} |",
            f"| core `Scorer.score_records` | {ip['core_score_records_1row']['p50_us']} "
            f"| {ip['core_score_records_1000rows']['p50_us']} |",
            f"| core / raw | {ip['core_over_raw_1row']}x | {ip['core_over_raw_1000rows']}x |",
            "",
            "| over HTTP (`POST /invocations`, dataframe_split) | p50 ms c=1 | p99 ms c=1 "
            "| req/s c=16 | req/s c=64 | rows/s, 1,000-row requests | RSS MB | errors |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for srv in entry["servers"]:
            errors = sum(srv[k]["errors"] for k in ("c1", "c16", "c64", "rows1000_c4"))
            lines.append(
                f"| {srv['server']} | {srv['c1']['p50_ms']} | {srv['c1']['p99_ms']} "
                f"| {srv['c16']['requests_per_s']:.0f} | {srv['c64']['requests_per_s']:.0f} "
                f"| {srv['rows1000_c4']['rows_per_s']:,} | {srv['rss_mb']} | {errors} |"
            )
        if "ratios" in entry:
            r = entry["ratios"]
            lines += [
                "",
                f"Ours vs MLflow, one worker each: **{r['w1_c16_rps_x']}x** req/s at c=16, "
                f"**{r['w1_c64_rps_x']}x** at c=64, p50 **{r['w1_p50_fraction']}** of MLflow's, "
                f"**{r['w1_rows1000_x']}x** rows/s on 1,000-row requests, RSS "
                f"{r['w1_rss_fraction']} of MLflow's. Two workers each: {r['w2_c16_rps_x']}x "
                f"and {r['w2_c64_rps_x']}x req/s, p50 {r['w2_p50_fraction']} of MLflow's.",
            ]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        print(report(json.loads(RESULTS.read_text())))
        sys.exit(0)
    sys.exit(main())
