"""The serving hot path in one process: what a 1-row request costs the app, stage by stage.

No socket and no uvicorn: each ASGI app is called directly on an event loop (uvloop, as
``dsc serve`` runs) with a ``receive`` that hands over the whole body in one message and a
``send`` that keeps nothing, the way uvicorn's httptools protocol calls it for a small
request. Side by side, in the same run:

- ``ceiling``: ``bench/ceiling.py`` (reads the body, answers a fixed document);
- ``invocations``: ``dsc``'s app on ``POST /invocations``, one ``dataframe_split`` row;
- ``infer``: ``dsc``'s app on ``POST /v2/models/{name}/infer``, one row (one tensor per
  column, or the ``[1, k]`` matrix tensor for the forest);

then the stages of the invocations path timed alone (decode, score, encode, drift count,
metrics, access line). ``--profile`` prints a cProfile of the invocations path. What
uvicorn itself costs per request (parsing, the transport, building the scope) is the same
for every app and is not here: ``bench/serve.py`` measures it over real sockets.

``--rollout`` measures instead what a rollout adds to a 1-row ``/invocations`` request of
churn (a retrained candidate, requests without a routing key, as ``bench/serve.py
--rollout-cost`` sends them): apps with no rollout (twice: the second is the A/A control,
what two identical apps differ by), a canary at 0% (routing only), a canary at 20% (with
its comparisons, and without: ``DSC_ROLLOUT_COMPARE_SHARE=0``) and a shadow, taking turns
for ``--rounds`` rounds; medians of CPU µs per request and their ratios to no rollout
(``results/hotpath_rollout.json``).

    .venv/bin/python bench/hotpath.py [--requests 20000] [--profile] [--models churn,forest]
    .venv/bin/python bench/hotpath.py --rollout [--requests 10000] [--rounds 15]

Not a test: timings are never asserted. Figures are CPU µs per request
(``time.process_time``: on a shared machine, time spent descheduled is not counted), best
of ``--rounds`` (``--rollout``: medians).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.live import ModelSet
from dscloud.server import invocations
from dscloud.server.app import create_app
from dscloud.server.logs import configure_logging
from dscloud.server.protocols import loads
from dscloud.settings import Settings

HERE = Path(__file__).resolve().parent
ROLLOUT_RESULTS = HERE / "results" / "hotpath_rollout.json"
sys.path.insert(0, str(HERE))

import ceiling  # noqa: E402
import rollout_setup  # noqa: E402

App = Callable[..., Any]
_DATATYPE = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}


def build_models(work: Path) -> tuple[Archive, dict[str, tuple[list[str], dict[str, Any]]]]:
    """An archive holding churn@1 and forest@1 (as ``bench/serve.py`` builds them), and
    per model its columns and one test row."""
    from sklearn.ensemble import RandomForestClassifier

    ex = example.train(seed=0, rows=3000)
    Xn = ex.X_train[example.NUMERIC].fillna(0.0)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    forest.fit(Xn, ex.y_train)
    test = ex.X_test.dropna()
    archive = Archive.open(work / "archive")
    rows: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name, estimator, train_X, columns in (
        ("churn", ex.estimator, ex.X_train, example.FEATURES),
        ("forest", forest, Xn, example.NUMERIC),
    ):
        sample = test[columns]
        artifact = dscloud.package(estimator, sample.head(200), name=name, training_data=train_X)
        dscloud.publish(artifact, archive)
        archive.promote(name, 1, "production", by="bench")
        row = {c: (v.item() if hasattr(v, "item") else v) for c, v in sample.iloc[0].items()}
        rows[name] = (list(columns), row)
    return archive, rows


def split_body(columns: list[str], row: dict[str, Any]) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}}
    ).encode()


def infer_body(app: Any, name: str, columns: list[str], row: dict[str, Any]) -> bytes:
    schema = app.models.get(name).scorer.schema
    if schema.matrix_input is not None:
        dtype = _DATATYPE[schema.columns[0].dtype]
        tensor = {"name": schema.matrix_input, "shape": [1, len(columns)], "datatype": dtype}
        inputs = [{**tensor, "data": [row[c] for c in schema.names]}]
    else:
        inputs = [
            {"name": c.name, "shape": [1], "datatype": _DATATYPE[c.dtype], "data": [row[c.name]]}
            for c in schema.columns
        ]
    return json.dumps({"inputs": inputs}).encode()


def scope_of(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"wrk"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


async def drive(app: App, path: str, body: bytes, n: int) -> tuple[float, int]:
    """µs per request of ``n`` requests through ``app``, and the last status."""
    message = {"type": "http.request", "body": body, "more_body": False}
    status = 0

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        nonlocal status
        if event["type"] == "http.response.start":
            status = event["status"]

    scope = scope_of(path, body)
    started = time.process_time()
    for _ in range(n):
        await app(dict(scope), receive, send)  # uvicorn builds a new scope per request
    return (time.process_time() - started) / n * 1e6, status


def timed(
    loop: asyncio.AbstractEventLoop, app: App, path: str, body: bytes, n: int, rounds: int
) -> float:
    """CPU µs per request through ``app``, best of ``rounds`` runs of ``n`` requests."""
    return best(lambda: loop.run_until_complete(drive(app, path, body, n))[0], rounds)


def best(fn: Callable[[], float], rounds: int) -> float:
    return round(min(fn() for _ in range(rounds)), 2)


def per_call(fn: Callable[[], Any], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n * 1e6


def stages(app: Any, name: str, body: bytes, n: int) -> dict[str, Callable[[], float]]:
    """Each stage of the invocations path alone, on the same body."""
    scorer = app.models.get(name).scorer
    batch = invocations.decode_invocations(body, "application/json", scorer.schema)
    preds = scorer.score_columns(batch.columns, 1)
    names = [o.name for o in scorer.schema.outputs]
    feeds = scorer.schema.encode_one({c: v[0] for c, v in batch.columns.items()})
    assert feeds is not None, "the test row should take the one-row path"
    fields = {"method": "POST", "path": "/invocations", "status": 200, "latency_ms": 0.1}
    fields.update(model=name, version=1, rows=1)

    def access() -> None:
        app.access.request(fields)
        app.access._lines.clear()  # measured: the line; not measured: stdout

    return {
        "json loads": lambda: per_call(lambda: loads(body), n),
        "decode (loads + layout)": lambda: per_call(
            lambda: invocations.decode_invocations(body, "application/json", scorer.schema), n
        ),
        "encode_one (feeds)": lambda: per_call(
            lambda: scorer.schema.encode_one({c: v[0] for c, v in batch.columns.items()}), n
        ),
        "session.run": lambda: per_call(lambda: scorer.session.run(names, feeds), n),
        "score_columns (feeds + run)": lambda: per_call(
            lambda: scorer.score_columns(batch.columns, 1), n
        ),
        "encode answer": lambda: per_call(lambda: invocations.encode_invocations(preds, scorer), n),
        "drift add (amortised flush)": lambda: per_call(
            lambda: app.drift.add(scorer, batch.columns, preds), n
        ),
        "metrics observe": lambda: per_call(
            lambda: app.metrics.observe("invocations", name, "1", 200, 0.0002, 1), n
        ),
        "access line": lambda: per_call(access, n),
    }


def rollout_cost(
    loop: asyncio.AbstractEventLoop, work: Path, n: int, rounds: int
) -> dict[str, Any]:
    """CPU µs per 1-row request of churn through the app with each rollout (see the module
    docstring), medians of ``rounds`` turns, and each over no rollout."""
    archives, row = rollout_setup.archives(work)
    body = split_body(example.FEATURES, row)
    apps = {}
    for mode, archive in archives.items():
        env = {"DSC_ARCHIVE": archive.uri, **rollout_setup.ENV.get(mode, {})}
        app = create_app(ModelSet(archive, ["churn@production"], threads=1), Settings.from_env(env))
        _, status = loop.run_until_complete(drive(app, "/invocations", body, 2000))
        assert status == 200, f"{mode}: {status}"
        apps[mode] = app
    runs: dict[str, list[float]] = {mode: [] for mode in apps}
    for _ in range(rounds):
        for mode, app in apps.items():
            # The canary's budget fills with wall time, most of which the other apps take
            # here: forget it, as a process saturated all along would have no idle time.
            app.rollouts.budget._at = app.rollouts.budget._clock()
            runs[mode].append(loop.run_until_complete(drive(app, "/invocations", body, n))[0])
            app.access._lines.clear()
    base = statistics.median(runs["none"])
    summary: dict[str, dict[str, Any]] = {}
    for mode, us in runs.items():
        series = apps[mode].rollouts.series()
        summary[mode] = {
            "us_per_request": round(statistics.median(us), 2),
            "extra_us": round(statistics.median(us) - base, 2),
            "x_none": round(statistics.median(us) / base, 3),
            # of every request this app answered, warm-up included
            "rows_compared": sum(figures["rows_compared"] for _, figures, _ in series),
            "skipped": sum(skipped for _, _, skipped in series),
        }
    return {"requests_per_run": n, "rounds": rounds, "summary": summary, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="churn,forest")
    ap.add_argument("--profile", action="store_true", help="cProfile the invocations path")
    ap.add_argument("--sort", default="tottime", help="cProfile order: tottime, cumulative")
    ap.add_argument(
        "--rollout",
        action="store_true",
        help="measure what a canary and a shadow add (results/hotpath_rollout.json)",
    )
    args = ap.parse_args()
    report = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access log's lines go nowhere
    configure_logging()  # the server's logging: access lines at INFO, to (here) nowhere
    uvloop.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    out: dict[str, Any] = {}
    if args.rollout:
        with tempfile.TemporaryDirectory(prefix="dsc-hotpath-") as tmp:
            cost = rollout_cost(loop, Path(tmp), args.requests, args.rounds)
        print(json.dumps(cost["summary"], indent=1), file=report, flush=True)
        ROLLOUT_RESULTS.write_text(json.dumps(cost, indent=2) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="dsc-hotpath-") as tmp:
        archive, rows = build_models(Path(tmp))
        for name in args.models.split(","):
            columns, row = rows[name]
            settings = Settings.from_env({"DSC_ARCHIVE": archive.uri})
            models = ModelSet(archive, [f"{name}@production"], threads=1)
            app = create_app(models, settings)
            one = split_body(columns, row)
            infer = infer_body(app, name, columns, row)
            infer_path = f"/v2/models/{name}/infer"
            n = args.requests
            for path, body in (("/invocations", one), (infer_path, infer)):
                _, status = loop.run_until_complete(drive(app, path, body, 200))
                assert status == 200, f"{path}: {status}"
            entry: dict[str, Any] = {
                "ceiling": timed(loop, ceiling.app, "/", one, n, args.rounds),
                "invocations": timed(loop, app, "/invocations", one, n, args.rounds),
                "infer": timed(loop, app, infer_path, infer, n, args.rounds),
            }
            entry["stages"] = {
                k: best(fn, args.rounds) for k, fn in stages(app, name, one, n).items()
            }
            app.access._lines.clear()
            out[name] = entry
            print(name, json.dumps(entry, indent=1), file=report, flush=True)
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                loop.run_until_complete(drive(app, "/invocations", one, n))
                prof.disable()
                pstats.Stats(prof, stream=report).sort_stats(args.sort).print_stats(40)
            app.access._lines.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
