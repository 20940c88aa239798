"""Serving benchmark: raw ONNX Runtime, the scoring core, our server, its peers, the ceiling.

One run, side by side, on the same two models (the example churn pipeline and a 100-tree
random forest): single-row latency p50/p99 at concurrency 1, requests/s at concurrency 16
and 64, rows/s for 1,000-row requests, and server RSS, for
- `dsc serve` (`POST /invocations`, dataframe_split);
- `mlflow models serve` of the *same ONNX model* saved with `mlflow.onnx.save_model`
  (tensor body, `{"inputs": ...}`): what a user who has an ONNX model would run; the
  baseline every ratio is taken against;
- `mlflow models serve` of the scikit-learn estimator (`mlflow.sklearn`, dataframe_split);
- MLServer with its scikit-learn runtime (Open Inference Protocol v2), where it installs;
- the ceiling: `bench/ceiling.py`, a bare ASGI app answering a fixed body on the same
  uvicorn + uvloop + httptools stack and settings.
One worker against one worker, and two against two. Writes bench/results/serve.json;
bench/serve.md quotes the figures.

    .venv/bin/python bench/serve.py [--seconds 8]      # measure, write results/serve.json
    .venv/bin/python bench/serve.py --report           # the tables of bench/serve.md
    .venv/bin/python bench/serve.py --in-process       # only raw, core and request path
    .venv/bin/python bench/serve.py --rollout-cost --seconds 5  # rollouts (results/rollout.json)

Needs `wrk` (apt-get install wrk), an MLflow venv with the same scikit-learn
(bench/.venv-mlflow: `python3.11 -m venv bench/.venv-mlflow && bench/.venv-mlflow/bin/pip
install mlflow onnx onnxruntime scikit-learn==<ours>`) and, optionally, an MLServer venv
(bench/.venv-mlserver: `pip install mlserver mlserver-sklearn scikit-learn==<ours>
"uvloop<0.22"`: MLServer 1.7.1's inference-pool workers die with "There is no current
event loop" on uvloop 0.22+).
Only 127.0.0.1 is used. Not a test: run by hand.
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
from dscloud import example, rollout
from dscloud.archive import Archive
from dscloud.scorer import Scorer
from dscloud.server.invocations import decode_invocations, encode_invocations
from dscloud.settings import Settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rollout_setup  # noqa: E402

ROOT = HERE.parent
MLFLOW_VENV = HERE / ".venv-mlflow"
MLSERVER_VENV = HERE / ".venv-mlserver"
RESULTS = HERE / "results" / "serve.json"
ROLLOUT_RESULTS = HERE / "results" / "rollout.json"
#: ``--rollout-cost``: the CPU its servers are pinned to, and the one wrk runs on.
SERVER_CPU, LOAD_CPU = 0, 1
BATCH_ROWS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 180, method: str = "GET"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}")
        try:
            if httpx.request(method, url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not ready after {timeout}s")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (workers included)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) spent so far by ``pid`` and its descendants."""
    ticks = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


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


#: ``wrk``'s script when requests name one of two models at random: ``?model=`` is
#: ``$MODEL_B`` with probability ``$SHARE_B``, else ``$MODEL_A``.
WRK_MIX = (
    WRK_SCRIPT
    + """
local share_b = tonumber(os.getenv("SHARE_B"))
local model_a, model_b = os.getenv("MODEL_A"), os.getenv("MODEL_B")
local path = os.getenv("PATH_ONLY")
request = function()
  local model = model_a
  if math.random() < share_b then model = model_b end
  return wrk.format(nil, path .. "?model=" .. model)
end
"""
)


def wrk(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    work: Path,
    cpu: int | None = None,
    mix: tuple[str, str, float] | None = None,
) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and error count of one wrk run (on one thread
    pinned to ``cpu`` when it is given). ``mix``: two model names and the share of
    requests that name the second (:data:`WRK_MIX`)."""
    body_file = work / f"body-{len(body)}.json"
    body_file.write_bytes(body)
    script = work / ("post.lua" if mix is None else "mix.lua")
    script.write_text(WRK_SCRIPT if mix is None else WRK_MIX)
    env = {**os.environ, "BODY_FILE": str(body_file)}
    if mix is not None:
        env.update(MODEL_A=mix[0], MODEL_B=mix[1], SHARE_B=str(mix[2]))
        env["PATH_ONLY"] = "/" + url.split("/", 3)[3]
    threads = min(connections, 2) if cpu is None else 1
    out = subprocess.run(
        [
            *([] if cpu is None else ["taskset", "-c", str(cpu)]),
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
        env=env,
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


def answered_rows(answer: Any) -> int:
    """Rows in an answer of any of the servers measured (0 for the ceiling's fixed body)."""
    if "outputs" in answer:  # OIP v2 (MLServer)
        return int(answer["outputs"][0]["shape"][0])
    predictions = answer["predictions"]
    if isinstance(predictions, dict):  # mlflow onnx: {output name: values}
        return len(next(iter(predictions.values())))
    return len(predictions)


def check_answer(url: str, body: bytes, n_rows: int | None) -> None:
    """Fail the run unless the server scored ``n_rows`` rows (None: any answer will do)."""
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    r.raise_for_status()
    if n_rows is not None:
        assert answered_rows(r.json()) == n_rows, r.text[:300]


def measure_server(
    name: str, url: str, one: bytes, batch: bytes, pid: int, seconds: float, work: Path
) -> dict[str, Any]:
    scores = not name.startswith("ceiling")
    check_answer(url, one, 1 if scores else None)
    check_answer(url, batch, BATCH_ROWS if scores else None)
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
    flavor: str,
    model_dir: Path,
    workers: int,
    one: bytes,
    batch: bytes,
    seconds: float,
    work: Path,
) -> dict[str, Any]:
    port = free_port()
    argv = [str(MLFLOW_VENV / "bin/mlflow"), "models", "serve", "-m", str(model_dir)]
    return serve_and_measure(
        f"mlflow {flavor}, {workers} worker(s)",
        [*argv, "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", str(workers)],
        # mlflow starts uvicorn through a shell: its venv's bin must be on PATH.
        {**os.environ, "PATH": f"{MLFLOW_VENV / 'bin'}:{os.environ['PATH']}"},
        port,
        "/ping",
        (one, batch, seconds, work),
    )


def mlserver(
    name: str, model_dir: Path, workers: int, one: bytes, batch: bytes, seconds: float, work: Path
) -> dict[str, Any]:
    """MLServer's scikit-learn runtime over OIP v2. ``workers`` is its inference pool size
    (``parallel_workers``); with 1 it scores in the one HTTP process, like the others."""
    port = free_port()
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "parallel_workers": 0 if workers == 1 else workers,
    }
    (model_dir / "settings.json").write_text(json.dumps(settings))
    return serve_and_measure(
        f"mlserver sklearn, {workers} worker(s)",
        [str(MLSERVER_VENV / "bin/mlserver"), "start", str(model_dir)],
        {**os.environ, "PATH": f"{MLSERVER_VENV / 'bin'}:{os.environ['PATH']}"},
        port,
        f"/v2/models/{name}/ready",
        (one, batch, seconds, work),
        path=f"/v2/models/{name}/infer",
    )


def ceiling(workers: int, one: bytes, batch: bytes, seconds: float, work: Path) -> dict[str, Any]:
    """bench/ceiling.py on uvicorn with the loop, parser and settings of ``dsc serve``."""
    port = free_port()
    argv = [str(ROOT / ".venv/bin/uvicorn"), "ceiling:app", "--app-dir", str(HERE)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header"]
    argv += ["--no-proxy-headers"]  # as dsc serve (server/run.py)
    return serve_and_measure(
        f"ceiling (bare ASGI), {workers} worker(s)",
        [*argv, "--timeout-keep-alive", "75", "--log-level", "warning"],
        dict(os.environ),
        port,
        "/",
        (one, batch, seconds, work),
        ready_method="POST",
    )


def serve_and_measure(
    label: str,
    argv: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    load: tuple[bytes, bytes, float, Path],
    *,
    path: str = "/invocations",
    ready_method: str = "GET",
) -> dict[str, Any]:
    """Start a server, wait until ``ready_path`` answers, load ``path`` with wrk, stop it."""
    one, batch, seconds, work = load
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", proc, method=ready_method)
        return measure_server(
            label, f"http://127.0.0.1:{port}{path}", one, batch, proc.pid, seconds, work
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


def save_mlflow_onnx_model(model: bytes, example: bytes, out: Path, work: Path) -> None:
    """mlflow.onnx.save_model of the envelope's own model.onnx, its signature inferred
    from one tensor-form request body (``example``) as MLflow's docs show."""
    onnx_file, example_file = work / f"{out.name}.onnx", work / f"{out.name}.example.json"
    onnx_file.write_bytes(model)
    example_file.write_bytes(example)
    code = (
        "import json, sys, numpy as np, onnx, onnxruntime as ort, mlflow.onnx\n"
        "from mlflow.models import infer_signature\n"
        "model = onnx.load(sys.argv[1])\n"
        "sess = ort.InferenceSession(sys.argv[1])\n"
        "body = json.load(open(sys.argv[2]))['inputs']\n"
        "types = {i.name: np.float32 if i.type == 'tensor(float)' else object"
        " for i in sess.get_inputs()}\n"
        "x = ({k: np.array(v, dtype=types[k]) for k, v in body.items()} if isinstance(body, dict)"
        " else np.array(body, dtype=np.float32))\n"
        "feeds = x if isinstance(x, dict) else {sess.get_inputs()[0].name: x}\n"
        "y = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))\n"
        "mlflow.onnx.save_model(model, sys.argv[3], signature=infer_signature(x, y))\n"
    )
    subprocess.run(
        [str(MLFLOW_VENV / "bin/python"), "-c", code, str(onnx_file), str(example_file), str(out)],
        check=True,
        timeout=300,
    )


def save_mlserver_model(estimator: Any, name: str, out: Path) -> None:
    """A model directory for MLServer's scikit-learn runtime (joblib file + settings)."""
    import joblib

    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, out / "model.joblib")
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    (out / "model-settings.json").write_text(json.dumps(settings))


def tensor_body(input_names: list[str], rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    """MLflow's tensor form: one ``[N, k]`` input as a list of rows, several inputs by name
    (each ``[N, 1]``)."""
    if len(input_names) == 1:
        return json.dumps({"inputs": [[r[c] for c in columns] for r in rows]}).encode()
    return json.dumps({"inputs": {n: [[r[n]] for r in rows] for n in input_names}}).encode()


def oip_body(rows: list[dict[str, Any]], columns: list[str], *, frame: bool) -> bytes:
    """An OIP v2 request for MLServer asking for ``predict_proba``: one ``[N, k]`` FP64
    tensor, or (``frame``) one tensor per column decoded into a DataFrame (pandas codec)."""
    if frame:
        inputs = [
            {
                "name": c,
                "shape": [len(rows)],
                "datatype": "BYTES" if isinstance(rows[0][c], str) else "FP64",
                "data": [r[c] for r in rows],
            }
            for c in columns
        ]
        params: dict[str, Any] = {"parameters": {"content_type": "pd"}}
    else:
        data = [float(r[c]) for r in rows for c in columns]
        inputs = [
            {"name": "X", "shape": [len(rows), len(columns)], "datatype": "FP64", "data": data}
        ]
        params = {}
    return json.dumps({**params, "inputs": inputs, "outputs": [{"name": "predict_proba"}]}).encode()


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
    artifact: dscloud.Artifact,
    row: dict[str, Any],
    rows: list[dict[str, Any]],
    columns: list[str] | None = None,
) -> dict[str, Any]:
    """p50/p99/mean µs of raw ``session.run``, the core and the whole request path.

    The core is measured two ways on 1,000 rows: ``Scorer.score_records`` (row dicts, the
    in-process API) and ``Scorer.score_columns`` on the columns ``/invocations`` decodes
    from a ``dataframe_split`` body; the request path is that body's bytes through
    ``decode_invocations``, ``score_columns`` and ``encode_invocations`` (everything the
    server does for a request but the socket, the admission and the log line)."""
    scorer = Scorer(artifact)
    feeds = scorer.schema.encode_records([row]).feeds
    names = [o.name for o in scorer.schema.outputs]
    big_feeds = scorer.schema.encode_records(rows).feeds
    body = split_body(rows, columns or list(rows[0]))
    batch = decode_invocations(body, "application/json", scorer.schema)

    def request() -> bytes:
        decoded = decode_invocations(body, "application/json", scorer.schema)
        preds = scorer.score_columns(decoded.columns, decoded.n_rows)
        preds.raise_for_rejects()
        return encode_invocations(preds, scorer)

    out: dict[str, Any] = {
        "raw_session_run_1row": per_call_us(lambda: scorer.session.run(names, feeds), 5000),
        "core_score_records_1row": per_call_us(lambda: scorer.score_records([row]), 5000),
        "raw_session_run_1000rows": per_call_us(lambda: scorer.session.run(names, big_feeds), 300),
        "core_score_records_1000rows": per_call_us(lambda: scorer.score_records(rows), 300),
        "core_score_columns_1000rows": per_call_us(
            lambda: scorer.score_columns(batch.columns, batch.n_rows), 300
        ),
        "request_path_1000rows": per_call_us(request, 300),
        "body_bytes_1000rows": len(body),
    }
    raw_1, raw_1000 = (out[f"raw_session_run_{n}"]["p50_us"] for n in ("1row", "1000rows"))
    out["core_over_raw_1row"] = round(out["core_score_records_1row"]["p50_us"] / raw_1, 2)
    out["core_over_raw_1000rows"] = round(
        out["core_score_records_1000rows"]["p50_us"] / raw_1000, 2
    )
    out["columns_over_raw_1000rows"] = round(
        out["core_score_columns_1000rows"]["p50_us"] / raw_1000, 2
    )
    out["request_over_raw_1000rows"] = round(out["request_path_1000rows"]["p50_us"] / raw_1000, 2)
    return out


# -- the cost of a rollout -------------------------------------------------------------------


def rollout_cost(seconds: float, rounds: int = 3) -> dict[str, Any]:
    """What a rollout costs `dsc serve` (1 worker) following churn@production, measured
    inside one server process per mode: the process serves ``seconds`` of 1-row requests
    at c=16 without a rollout, then with the mode's rollout (started on the alias, which
    the server follows within its 0.5 s poll), and so on, ``rounds`` pairs in ABBA order.
    Each pair gives the mode's CPU µs per request less the no-rollout phase's (``/proc``:
    the process and its threads) and its requests/s over theirs; each figure is the
    median of the pairs.

    Why inside one process: two server processes of the same code differ by several
    percent in CPU per request (their memory layout, among what differs between
    processes), more than a canary costs; inside one process that difference cancels.

    The modes: a canary at 0% (routing only: every request hashed, the serving version
    answers all); a 20% canary; the same canary in a process with
    ``DSC_ROLLOUT_COMPARE_SHARE=0`` (routed the same, never compared: the control of
    what comparing costs); a shadow; no rollout in both phases (the **A/A control**: the
    noise a cost must stand out of to be measurable); and, without any rollout, a server
    of churn and of the candidate's model under its own name, whose requests name the
    second model never and then one time in five (``?model=``, :data:`WRK_MIX`): what
    serving two models in that mix costs a process, whatever serves them.

    The server is pinned to one CPU and wrk to the other (``taskset``). Requests carry no
    routing key, so the canary routes by the request id it makes per request."""
    with tempfile.TemporaryDirectory(prefix="dsc-bench-rollout-") as tmp:
        work = Path(tmp)
        built, row = rollout_setup.archives(work)
        one = split_body([row], example.FEATURES)
        two = rollout_setup.two_models(work)
        pairs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for mode, start in rollout_setup.MODES.items():
            if mode == "none":
                continue
            archive = built[mode]
            env = rollout_setup.ENV.get(mode, {})
            phases = (_Phase(archive, None), _Phase(archive, start or None))
            pairs[mode] = _paired(
                archive.uri, ["churn@production"], env, phases, rounds, seconds, work, one
            )
        both = ["churn@production", f"{rollout_setup.OTHER_MODEL}@production"]
        mixes = [("churn", rollout_setup.OTHER_MODEL, x) for x in rollout_setup.TWO_MODEL_SHARES]
        phases = (_Phase(two, None, mixes[0]), _Phase(two, None, mixes[1]))
        pairs["two models, 80/20 over 100/0"] = _paired(
            two.uri, both, {}, phases, rounds, seconds, work, one
        )

    summary: dict[str, dict[str, Any]] = {}
    for mode, runs in pairs.items():
        base, treated = runs["base"], runs["mode"]
        extra, ratio = _per_pair(runs, "cpu_us", diff=True), _per_pair(runs, "requests_per_s")
        summary[mode] = {
            "cpu_us_base": round(statistics.median(b["cpu_us"] for b in base), 2),
            "cpu_us_extra": round(statistics.median(extra), 2),
            "cpu_x": round(statistics.median(_per_pair(runs, "cpu_us")), 3),
            "c16_rps_x": round(statistics.median(ratio), 3),
            "c16_p50_x": round(statistics.median(_per_pair(runs, "p50_ms")), 3),
            "cpu_us_extra_pairs": [round(x, 2) for x in extra],
            "c16_rps_x_pairs": [round(x, 3) for x in ratio],
            "rows_compared": treated[-1]["rows_compared"],
            "errors": sum(r["errors"] for r in (*base, *treated)),
        }
    return {
        "seconds_per_phase": seconds,
        "pairs": rounds,
        "summary": summary,
        "budget": _rollout_budget(summary),
        "runs": pairs,
    }


def _per_pair(runs: dict[str, list[dict[str, Any]]], key: str, diff: bool = False) -> list[float]:
    """``key`` of each pair's mode phase over (``diff``: less) its base phase's."""
    return [
        t[key] - b[key] if diff else t[key] / b[key]
        for b, t in zip(runs["base"], runs["mode"], strict=True)
    ]


#: The rollout's own cost a 20% canary may add to a saturated one-row server's CPU per
#: request: routing and comparing, beyond serving its two models (docs/rollout.md).
ROLLOUT_OWN_BUDGET = 0.02


def _rollout_budget(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The canary's cost against the budget docs/rollout.md states: its own part (the 20%
    canary's extra CPU less the two-model control's) within :data:`ROLLOUT_OWN_BUDGET`,
    and comparing (compared less never compared) within ``DSC_ROLLOUT_COMPARE_SHARE``."""
    canary, two = summary["canary 20%"], summary["two models, 80/20 over 100/0"]
    base = canary["cpu_us_base"]
    own = canary["cpu_us_extra"] - two["cpu_us_extra"]
    comparing = canary["cpu_us_extra"] - summary["canary 20%, not compared"]["cpu_us_extra"]
    share = Settings.rollout_compare_share
    budget = {
        "rollout_own_cpu_us": round(own, 2),
        "rollout_own_share": round(own / base, 4),
        "rollout_own_within": own / base <= ROLLOUT_OWN_BUDGET,
        "comparing_share": round(comparing / base, 4),
        "comparing_within": comparing / base <= share,
    }
    print(f"rollout budget: {json.dumps(budget)}", flush=True)
    return budget


class _Phase:
    """What a server serves in one phase of :func:`rollout_cost`: the rollout its alias
    runs (None: none) and the ``?model=`` mix wrk sends (None: no ``?model=``)."""

    def __init__(
        self,
        archive: Archive,
        start: dict[str, Any] | None,
        mix: tuple[str, str, float] | None = None,
    ) -> None:
        self.archive, self.start, self.mix = archive, start, mix

    def apply(self, port: int) -> None:
        """Start or abort the rollout, and wait until the server follows it."""
        _, running = rollout.status(self.archive, "churn", "production")
        if running is not None:  # each phase starts its own rollout, or none
            rollout.abort(self.archive, "churn", "production", reason="bench phase", by="bench")
        want = None
        if self.start is not None:
            want = rollout.start(
                self.archive, "churn", "production", 2, by="bench", **self.start
            ).id
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/churn", timeout=10).json()
            seen = (meta.get("parameters") or {}).get("rollout")
            if (want is None and seen is None) or (
                want is not None and seen and seen.get("candidate_ready") and seen.get("id") == want
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the server did not follow rollout {want} within 60 s")


def _paired(
    uri: str,
    refs: list[str],
    env: dict[str, str],
    phases: tuple[_Phase, _Phase],
    pairs: int,
    seconds: float,
    work: Path,
    one: bytes,
) -> dict[str, list[dict[str, Any]]]:
    """One server of ``refs`` from ``uri`` pinned to :data:`SERVER_CPU`, serving ``pairs``
    pairs of ``phases`` (base, mode) in ABBA order, wrk on :data:`LOAD_CPU`: each phase's
    c=16 result with its CPU µs per request."""
    port = free_port()
    argv = [str(ROOT / ".venv/bin/dsc"), "serve", *refs, "--port", str(port)]
    proc = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), *argv],
        env={
            **os.environ,
            "DSC_ARCHIVE": uri,
            "DSC_REFRESH_SECONDS": "0.5",
            "DSC_ROLLOUT_WINDOW_SECONDS": "3600",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "mode": []}
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        url = f"http://127.0.0.1:{port}/invocations"
        for phase in phases:
            phase.apply(port)
            check_answer(url if phase.mix is None else f"{url}?model={phase.mix[1]}", one, 1)
            wrk(url, one, connections=16, seconds=2, work=work, cpu=LOAD_CPU, mix=phase.mix)
        for i in range(pairs):
            order = (("base", phases[0]), ("mode", phases[1]))
            for which, phase in order if i % 2 == 0 else order[::-1]:
                phase.apply(port)
                cpu = tree_cpu(proc.pid)
                c16 = wrk(
                    url,
                    one,
                    connections=16,
                    seconds=seconds,
                    work=work,
                    cpu=LOAD_CPU,
                    mix=phase.mix,
                )
                c16["cpu_us"] = round((tree_cpu(proc.pid) - cpu) / c16["requests"] * 1e6, 2)
                c16["rows_compared"] = _compared(port)
                runs[which].append(c16)
                print(f"  {refs} {which} pair {i + 1}: {json.dumps(c16)}", flush=True)
    finally:
        stop(proc)
    return runs


def _compared(port: int) -> int:
    """Rows compared so far by the server on ``port`` (0 without a rollout)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.findall(r"^dsc_rollout_rows_compared_total\{.*\} (\d+)$", text, re.M)
    return sum(int(n) for n in found)


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
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="measure only the in-process section (no servers); print it, write nothing",
    )
    ap.add_argument(
        "--rollout-cost",
        action="store_true",
        help="measure only the cost of a canary and a shadow rollout (results/rollout.json)",
    )
    ap.add_argument("--no-rollout", action="store_true", help="skip the rollout cost")
    ap.add_argument(
        "--rounds",
        type=int,
        default=8,
        help="the rollout cost's pairs of phases (no rollout, rollout) per server",
    )
    args = ap.parse_args()
    if args.rollout_cost:
        cost = rollout_cost(args.seconds, args.rounds)
        ROLLOUT_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        ROLLOUT_RESULTS.write_text(json.dumps(cost, indent=2) + "\n")
        print(json.dumps(cost["summary"], indent=2))
        print(f"wrote {ROLLOUT_RESULTS}")
        return 0

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
            entry: dict[str, Any] = {
                "in_process": in_process(artifact, rows[0], batch_rows, columns)
            }
            print(f"  in process: {json.dumps(entry['in_process'])}", flush=True)
            if args.in_process:
                continue
            onnx_inputs = [i.name for i in Scorer(artifact).session.get_inputs()]
            servers: list[dict[str, Any]] = []
            for w in (1, 2):
                servers.append(ceiling(w, one, batch, args.seconds, work))
                servers.append(ours(archive.uri, name, w, one, batch, args.seconds, work))
            if not args.no_mlflow:
                t_one = tensor_body(onnx_inputs, rows[:1], columns)
                t_batch = tensor_body(onnx_inputs, batch_rows, columns)
                onnx_dir = work / f"mlflow-onnx-{name}"
                save_mlflow_onnx_model(artifact.model, t_one, onnx_dir, work)
                sk_dir = work / f"mlflow-sklearn-{name}"
                save_mlflow_model(
                    estimator, sample[columns] if name == "forest" else sample, sk_dir, work
                )
                for w in (1, 2):
                    servers.append(mlflow("onnx", onnx_dir, w, t_one, t_batch, args.seconds, work))
                    servers.append(mlflow("sklearn", sk_dir, w, one, batch, args.seconds, work))
            if (MLSERVER_VENV / "bin/mlserver").exists():
                frame = name != "forest"
                o_one = oip_body(rows[:1], columns, frame=frame)
                o_batch = oip_body(batch_rows, columns, frame=frame)
                ms_dir = work / f"mlserver-{name}"
                save_mlserver_model(estimator, name, ms_dir)
                for w in (1, 2):
                    try:
                        servers.append(
                            mlserver(name, ms_dir, w, o_one, o_batch, args.seconds, work)
                        )
                    except (RuntimeError, AssertionError, httpx.HTTPError) as exc:
                        print(f"  mlserver, {w} worker(s): failed: {exc}", flush=True)
                        entry.setdefault("failed", []).append(f"mlserver {w}: {exc}"[:500])
            entry["servers"] = servers
            entry["ratios"] = ratios(servers)
            results["models"][name] = entry
    if args.in_process:
        return 0
    if not args.no_rollout:
        print("rollout cost:", flush=True)
        results["rollout_cost"] = rollout_cost(args.seconds, args.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


def ratios(servers: list[dict[str, Any]]) -> dict[str, Any]:
    """Every server against MLflow's onnx flavor and against the ceiling, with the same
    number of workers: ``{server: {"vs_mlflow_onnx": {...}, "vs_ceiling": {...}}}``.

    Throughput figures are ``server / baseline`` (higher is better), p50 is
    ``server / baseline`` too (lower is better)."""

    def against(srv: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float] | None:
        if base is None:
            return None
        out = {
            f"{c}_rps_x": round(srv[c]["requests_per_s"] / base[c]["requests_per_s"], 3)
            for c in ("c1", "c16", "c64")
        }
        out["p50_x"] = round(srv["c1"]["p50_ms"] / base["c1"]["p50_ms"], 3)
        if base["server"].startswith("mlflow"):
            out["rows1000_x"] = round(
                srv["rows1000_c4"]["rows_per_s"] / base["rows1000_c4"]["rows_per_s"], 2
            )
            out["rss_x"] = round(srv["rss_mb"] / base["rss_mb"], 2)
        return out

    by = {s["server"]: s for s in servers}
    result: dict[str, Any] = {}
    for srv in servers:
        w = srv["server"].rsplit(", ", 1)[1]
        result[srv["server"]] = {
            "vs_mlflow_onnx": against(srv, by.get(f"mlflow onnx, {w}")),
            "vs_ceiling": against(srv, by.get(f"ceiling (bare ASGI), {w}")),
        }
    return result


def _x(r: dict[str, Any] | None, key: str, digits: int = 2) -> str:
    return "" if r is None or key not in r else f"{r[key]:.{digits}f}"


def _request_path_rows(ip: dict[str, Any]) -> list[str]:
    """The in-process rows of the columnar core and the request path (absent from runs
    made before they were measured)."""
    if "request_path_1000rows" not in ip:
        return []
    return [
        f"| core `Scorer.score_columns` (decoded `dataframe_split`) | "
        f"| {ip['core_score_columns_1000rows']['p50_us']} |",
        f"| score_columns / raw | | {ip['columns_over_raw_1000rows']}x |",
        f"| request path: body bytes -> `decode_invocations` -> `score_columns` -> "
        f"`encode_invocations` | | {ip['request_path_1000rows']['p50_us']} |",
        f"| request path / raw | | {ip['request_over_raw_1000rows']}x |",
    ]


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
            *_request_path_rows(ip),
            "",
            "| over HTTP, 1-row and 1,000-row requests | p50 ms c=1 | p99 ms c=1 | req/s c=1 "
            "| req/s c=16 | req/s c=64 | rows/s, 1,000-row requests | RSS MB | errors |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for srv in entry["servers"]:
            errors = sum(srv[k]["errors"] for k in ("c1", "c16", "c64", "rows1000_c4"))
            lines.append(
                f"| {srv['server']} | {srv['c1']['p50_ms']} | {srv['c1']['p99_ms']} "
                f"| {srv['c1']['requests_per_s']:.0f} "
                f"| {srv['c16']['requests_per_s']:.0f} | {srv['c64']['requests_per_s']:.0f} "
                f"| {srv['rows1000_c4']['rows_per_s']:,} | {srv['rss_mb']} | {errors} |"
            )
        lines += [
            "",
            "| ratios, same number of workers | req/s c=16 ÷ MLflow onnx | req/s c=64 ÷ MLflow "
            "onnx | p50 c=1 ÷ MLflow onnx | rows/s ÷ MLflow onnx | RSS ÷ MLflow onnx "
            "| req/s c=1 ÷ ceiling | req/s c=16 ÷ ceiling | req/s c=64 ÷ ceiling |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for srv in entry["servers"]:
            r = entry["ratios"].get(srv["server"], {})
            m, c = r.get("vs_mlflow_onnx"), r.get("vs_ceiling")
            lines.append(
                f"| {srv['server']} | {_x(m, 'c16_rps_x')} | {_x(m, 'c64_rps_x')} "
                f"| {_x(m, 'p50_x', 3)} | {_x(m, 'rows1000_x')} | {_x(m, 'rss_x')} "
                f"| {_x(c, 'c1_rps_x')} | {_x(c, 'c16_rps_x')} | {_x(c, 'c64_rps_x')} |"
            )
        for failure in entry.get("failed", []):
            lines.append(f"\nNot measured: {failure}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        print(report(json.loads(RESULTS.read_text())))
        sys.exit(0)
    sys.exit(main())
