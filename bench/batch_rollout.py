"""What following a rollout costs `dsc score` (run by hand), as ratios to the same run
without one.

    .venv/bin/python bench/batch_rollout.py               # ~1 minute on 2 cores
    .venv/bin/python bench/batch_rollout.py --rows 100000 --repeat 1

On the same Parquet input, one process, one shard, best of ``--repeat``:

- ``none``: churn@production without a rollout (the baseline);
- ``shadow``: churn@2 in shadow (both versions score every chunk; candidate_* columns);
- ``canary``: churn@2 in canary at 20%, routed by ``user_id`` (both versions score; each
  row's key is hashed);
- ``no-rollout``: the shadow rollout ignored with ``--no-rollout``.

Expected: shadow and canary cost about one more scoring step per chunk (the scoring step
is part of the run, beside reading and writing), canary a little more for hashing the keys,
``no-rollout`` nothing. Writes ``bench/results/batch_rollout.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.batch import ScoreJob, run_local
from dscloud.rollout import abort, start

RESULTS = Path(__file__).resolve().parent / "results" / "batch_rollout.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = Archive.open(root / "archive")
        for seed, c in ((1, 1.0), (2, 0.1)):
            ex = example.train(seed=seed, rows=3000, C=c)
            dscloud.publish(
                dscloud.package(ex.estimator, ex.X_test, name="churn", training_data=ex.X_train),
                archive,
            )
        archive.promote("churn", 1, "production", by="bench")
        data = root / "users.parquet"
        example.churn_data(args.rows, seed=3).drop(columns=["churned"]).to_parquet(data)
        job = ScoreJob(
            model="churn@production",
            archive=archive.uri,
            input=str(data),
            output=str(root / "out"),
            log_seconds=3600.0,
        )

        def best(mode: str, run_job: ScoreJob) -> float:
            times = []
            for i in range(args.repeat):
                t = time.perf_counter()
                run_local(replace(run_job, output=str(root / f"out-{mode}-{i}")), workers=1)
                times.append(time.perf_counter() - t)
            return min(times)

        seconds = {"none": best("none", job)}
        start(archive, "churn", "production", 2, mode="shadow", by="bench")
        seconds["shadow"] = best("shadow", job)
        seconds["no-rollout"] = best("no-rollout", replace(job, rollout=False))
        abort(archive, "churn", "production", reason="bench", by="bench")
        start(archive, "churn", "production", 2, mode="canary", share=0.2, by="bench")
        seconds["canary"] = best("canary", job)

    result = {
        "rows": args.rows,
        "repeat": args.repeat,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "rows_per_second": {k: round(args.rows / v) for k, v in seconds.items()},
        "ratio_to_none": {k: round(v / seconds["none"], 2) for k, v in seconds.items()},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
