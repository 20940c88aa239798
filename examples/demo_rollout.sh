#!/usr/bin/env bash
# `make demo`, rollout part: the staging version put behind churn@production in shadow and
# scored in batch with its comparison, then a canary at 20% routed by user, then promoted,
# and the audit trail. Needs DSC_ARCHIVE holding churn@production and churn@staging (two
# versions with the same interface) and `dsc` on PATH.
set -euo pipefail
: "${DSC_ARCHIVE:?set DSC_ARCHIVE to an archive holding churn@production and churn@staging}"
work="${DSC_DEMO_DIR:-.dsc/demo-rollout}"
rm -rf "$work"
mkdir -p "$work"

version_of() {
  dsc show --json "$1" | python -c 'import json, sys; print(json.load(sys.stdin)["identity"]["version"])'
}
serving=$(version_of churn@production)
candidate=$(version_of churn@staging)
if [ "$serving" = "$candidate" ]; then
  echo "churn@production and churn@staging are the same version ($serving): nothing to roll out"
  exit 0
fi

echo "-- 5,000 users to score -> $work/users.parquet"
python -c "import sys; from dscloud.example import churn_data; \
churn_data(5000, seed=31, start_id=700000).drop(columns=['churned']).to_parquet(sys.argv[1])" \
  "$work/users.parquet"

echo "-- start: churn@$candidate in shadow behind churn@production (serving $serving)"
dsc rollout start churn --alias production --candidate "$candidate" --shadow \
  --max-error-rate 0.01 --max-disagreement 0.25 --reason "retrained with C=0.1"

echo "-- dsc score follows the rollout: both versions score every row, 2 shards"
dsc score churn@production --input "$work/users.parquet" --output "$work/shadow" --workers 2

echo "-- the serving columns as without a rollout, the candidate's beside them (candidate_*)"
python - "$work/shadow" <<'PY'
import sys
import pyarrow.parquet as pq
table = pq.read_table(f"{sys.argv[1]}/part-00000-of-00002.parquet")
shown = ["user_id", "label", "probability_1", "model_version",
         "candidate_label", "candidate_probability_1", "candidate_model_version"]
print(table.select(shown).slice(0, 5).to_pandas().to_string(index=False))
PY

echo "-- the comparison, merged from what every runtime recorded"
dsc rollout status churn@production

echo "-- change: a canary at 20% (the same user always gets the same version)"
dsc rollout change churn@production --canary 20 --reason "shadow agrees closely enough"
dsc score churn@production --input "$work/users.parquet" --output "$work/canary" --key user_id
python - "$work/canary" <<'PY'
import sys
import pyarrow.parquet as pq
rows = pq.read_table(f"{sys.argv[1]}/part-00000-of-00001.parquet").to_pandas()
counts = rows["model_version"].value_counts().sort_index()
print("rows answered per version:", ", ".join(f"v{v}: {n}" for v, n in counts.items()))
PY

echo "-- promote: churn@production -> $candidate (verified again first)"
dsc rollout promote churn@production --reason "canary fine for a day"

echo "-- the alias and its audit trail"
dsc rollout status churn@production --audit
