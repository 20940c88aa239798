#!/usr/bin/env bash
# `make demo`, batch part: score a generated Parquet file of users in 2 shards, as two
# children of an AWS Batch array job would (AWS_BATCH_JOB_ARRAY_INDEX=0 and 1), then show
# the run manifest. Needs DSC_ARCHIVE holding churn@production and `dsc` on PATH.
set -euo pipefail
: "${DSC_ARCHIVE:?set DSC_ARCHIVE to an archive holding churn@production}"
work="${DSC_DEMO_DIR:-.dsc/demo-batch}"
rm -rf "$work"
mkdir -p "$work"

echo "-- 20,000 example users -> $work/users.parquet"
if dsc example data --help >/dev/null 2>&1; then
  dsc example data --rows 20000 --out "$work/users.parquet"
else
  python -c "import sys; from dscloud.example import churn_data; \
churn_data(20000, seed=11).drop(columns=['churned']).to_parquet(sys.argv[1], row_group_size=2500)" \
    "$work/users.parquet"
fi

echo "-- two array-job children, one shard each (the last to finish writes _SUCCESS)"
for i in 0 1; do
  AWS_BATCH_JOB_ARRAY_INDEX=$i DSC_SHARD_COUNT=2 \
    dsc score churn@production --input "$work/users.parquet" --output "$work/scores"
done

echo "-- the output"
(cd "$work/scores" && find . -type f | sort)

echo "-- the run manifest ($work/scores/_SUCCESS)"
python - "$work/scores/_SUCCESS" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
run.pop("shards", None)
drift = run.pop("drift", None)  # the drift report: examples/demo_monitor.sh reads it
print(json.dumps(run, indent=2))
if drift:
    print(f"drift: worst feature {drift['worst_feature']} PSI {drift['worst_feature_psi']:.3f}")
PY

echo "-- the first predictions"
python - "$work/scores" <<'PY'
import sys
import pyarrow.parquet as pq
table = pq.read_table(f"{sys.argv[1]}/part-00000-of-00002.parquet")
print(table.slice(0, 5).drop_columns(["model_sha256"]).to_pandas().to_string(index=False))
PY
