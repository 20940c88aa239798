"""Batch scoring throughput and memory, side by side with its baselines (run by hand).

    .venv/bin/python bench/batch.py                    # ~2 minutes on 2 cores
    .venv/bin/python bench/batch.py --rows 500000 --rss-rows 500000,1000000   # quick

For the example pipeline (ColumnTransformer + LogisticRegression, string inputs) and a
100-tree random forest (one float matrix input), on the same rows:

- raw ONNX Runtime: ``session.run`` on feeds prepared in memory beforehand, in the same
  chunks the batch job uses (the ceiling: no validation, no IO);
- the scoring step: ``Scorer.score_columns`` on the same in-memory columns (validation,
  conversion, ONNX Runtime, shaping the predictions);
- scikit-learn ``predict_proba`` on the same rows as a DataFrame / array;
- ``dsc score`` end to end in a fresh process (Parquet in, Parquet out, model load and
  golden check included), 1 and 2 workers;
- peak RSS of ``dsc score`` (1 worker) as the input grows.

Writes ``bench/results/batch.json``; ``bench/batch.md`` discusses the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.batch.reader import columns_for_scoring
from dscloud.scorer import Scorer, session_options

ROOT = Path(__file__).resolve().parents[1]
DSC = str(Path(sys.executable).with_name("dsc"))
CHUNK = 100_000


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def write_users(path: Path, rows: int, *, fill_age: bool = False) -> None:
    """``rows`` example users in 1M-row pieces (bounded memory), row groups of 100k."""
    writer: pq.ParquetWriter | None = None
    piece = 1_000_000
    for start in range(0, rows, piece):
        frame = example.churn_data(min(piece, rows - start), seed=start, start_id=start)
        frame = frame.drop(columns=[example.LABEL])
        if fill_age:
            frame["age"] = frame["age"].fillna(0.0)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=CHUNK)
    assert writer is not None
    writer.close()


def publish_models(archive: Archive) -> dict[str, Any]:
    """Train and publish churn and forest; returns the fitted estimators by name."""
    from sklearn.ensemble import RandomForestClassifier

    ex = example.train(seed=0, rows=5000)
    churn = dscloud.package(
        ex.estimator, ex.X_test, name="churn", training_data=ex.X_train, y=ex.y_train
    )
    dscloud.publish(churn, archive)
    X = ex.X_train[example.NUMERIC].fillna(0.0)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    forest.fit(X, ex.y_train)
    sample = ex.X_test[example.NUMERIC].fillna(0.0)
    dscloud.publish(
        dscloud.package(forest, sample, name="forest", training_data=X, y=ex.y_train), archive
    )
    return {"churn": ex.estimator, "forest": forest}


def in_memory(name: str, data: Path, archive: Archive, estimator: Any) -> dict[str, Any]:
    """Raw ONNX Runtime, the scoring step and scikit-learn on the same in-memory rows."""
    artifact = archive.load(f"{name}@1")
    scorer = Scorer(artifact)
    schema = scorer.schema
    table = pq.read_table(data, columns=schema.names)
    rows = table.num_rows
    batches = table.to_batches(max_chunksize=CHUNK)
    chunks = [(columns_for_scoring(b, schema), b.num_rows) for b in batches]

    session = ort.InferenceSession(
        artifact.model, sess_options=session_options(1), providers=["CPUExecutionProvider"]
    )
    outputs = [o.name for o in schema.outputs]

    def feeds(columns: dict[str, Any], kind: str) -> dict[str, np.ndarray[Any, Any]]:
        arrays = {}
        for c in schema.columns:
            v = np.asarray(columns[c.name])
            if c.numeric:
                arrays[c.name] = v.astype(np.float32)
            else:
                arrays[c.name] = v.astype(object) if kind == "object" else v
        if schema.matrix_input is not None:
            return {schema.matrix_input: np.stack(list(arrays.values()), axis=1)}
        return {k: a.reshape(-1, 1) for k, a in arrays.items()}

    prepared = {kind: [feeds(c, kind) for c, _ in chunks] for kind in ("str", "object")}
    frames = [b.to_pandas() for b in batches]
    if schema.matrix_input is not None:
        frames = [f[schema.names] for f in frames]  # the forest was fitted on these columns

    # Interleaved, best of 3 each: on a shared machine, load drifts between measurements.
    raw = {"str": float("inf"), "object": float("inf")}
    step = decode = float("inf")
    for _ in range(3):
        for kind, fs in prepared.items():
            raw[kind] = min(
                raw[kind], best_of(1, lambda fs=fs: [session.run(outputs, f) for f in fs])
            )
        step = min(step, best_of(1, lambda: [scorer.score_columns(c, n) for c, n in chunks]))
        decode = min(decode, best_of(1, lambda: [columns_for_scoring(b, schema) for b in batches]))
    sklearn = best_of(1, lambda: [estimator.predict_proba(f) for f in frames])
    ceiling = min(raw.values())
    return {
        "rows": rows,
        "rows_per_s": {
            "raw_onnxruntime": rows / ceiling,
            "raw_onnxruntime_object_strings": rows / raw["object"],
            "scoring_step": rows / step,
            "arrow_decode_plus_scoring_step": rows / (step + decode),
            "sklearn_predict_proba": rows / sklearn,
        },
        "ratios": {
            "scoring_step_vs_raw": ceiling / step,
            "sklearn_vs_raw": ceiling / sklearn,
        },
    }


def run_dsc(
    args: list[str], env: dict[str, str], *, measure_rss: bool = False
) -> tuple[float, float | None]:
    """Wall seconds of ``dsc ARGS`` in a fresh process, and its peak RSS in MB."""
    if measure_rss:
        wrapper = (
            "import resource, subprocess, sys; "
            "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(done.returncode)"
        )
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", wrapper, DSC, *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - started, int(out.stdout.split()[-1]) / 1024
    started = time.perf_counter()
    subprocess.run([DSC, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, None


def end_to_end(
    name: str, data: Path, work: Path, env: dict[str, str], rows: int, raw: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in (1, 2):
        target = work / f"out-{name}-{workers}"
        shutil.rmtree(target, ignore_errors=True)
        seconds, _ = run_dsc(
            [
                "score",
                f"{name}@1",
                "--input",
                str(data),
                "--output",
                str(target),
                "--workers",
                str(workers),
                "--chunk-rows",
                str(CHUNK),
            ],
            env,
        )
        success = json.loads((target / "_SUCCESS").read_text())
        assert success["rows"]["in"] == rows, success["rows"]
        out[f"workers_{workers}"] = {
            "seconds": seconds,
            "rows_per_s": rows / seconds,
            "vs_raw_onnxruntime_1_thread": rows / seconds / raw,
            "rows": success["rows"],
        }
    return out


def memory(
    work: Path, env: dict[str, str], sizes: list[int], model: str = "churn"
) -> list[dict[str, Any]]:
    results = []
    for rows in sizes:
        data = work / f"rss-{rows}.parquet"
        write_users(data, rows)
        target = work / f"rss-out-{rows}"
        seconds, rss = run_dsc(
            ["score", f"{model}@1", "--input", str(data), "--output", str(target)],
            env,
            measure_rss=True,
        )
        results.append(
            {"rows": rows, "peak_rss_mb": rss, "seconds": seconds, "rows_per_s": rows / seconds}
        )
        print(f"  rss {rows:>11,} rows: {rss:,.0f} MB peak, {rows / seconds:,.0f} rows/s")
        data.unlink()
        shutil.rmtree(target)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rss-rows", default="1000000,3000000,10000000")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dsc-bench-batch-") as tmp:
        work = Path(tmp)
        archive = Archive.open(work / "archive")
        # Bytecode cached as in the batch image, where pip compiled it at install time
        # (this checkout is an editable install and the shell sets PYTHONDONTWRITEBYTECODE,
        # which would recompile dscloud, ~40 ms, in every timed process).
        env = {**os.environ, "DSC_ARCHIVE": str(work / "archive")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        print("training and publishing churn and forest ...")
        estimators = publish_models(archive)
        data = {"churn": work / "users.parquet", "forest": work / "users-filled.parquet"}
        write_users(data["churn"], args.rows)
        write_users(data["forest"], args.rows, fill_age=True)

        warm = work / "warm"
        run_dsc(["score", "churn@1", "--input", str(data["churn"]), "--output", str(warm)], env)
        shutil.rmtree(warm)

        models: dict[str, Any] = {}
        for name in ("churn", "forest"):
            print(f"{name}: in memory ...")
            result = in_memory(name, data[name], archive, estimators[name])
            print(f"{name}: dsc score end to end ...")
            raw = result["rows_per_s"]["raw_onnxruntime"]
            result["end_to_end"] = end_to_end(name, data[name], work, env, args.rows, raw)
            models[name] = result
            print(json.dumps(result, indent=2))
        print("peak RSS as the input grows ...")
        sizes = [int(s) for s in args.rss_rows.split(",") if s]
        rss = memory(work, env, sizes)

    report = {
        "benchmark": "batch",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "pyarrow": pa.__version__,
        },
        "chunk_rows": CHUNK,
        "onnxruntime_threads": 1,
        "dsc_score_threads": "per process: 1 reading, 1 scoring (ONNX Runtime, 1 thread), 1 writing",
        "models": models,
        "memory": rss,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
