#!/usr/bin/env bash
# `make demo`, monitoring part: a shifted data set scored in batch (drift counted as it
# scores), its drift report and plot, then live metrics from outcomes recorded in the
# archive and shown beside the offline ones. Needs DSC_ARCHIVE holding churn@production.
set -euo pipefail
: "${DSC_ARCHIVE:?set DSC_ARCHIVE to an archive holding churn@production}"
work="${DSC_DEMO_DIR:-.dsc/demo-monitor}"
rm -rf "$work"
mkdir -p "$work"

echo "-- 20,000 new users, shifted: age up one standard deviation, 'standard' plan share doubled"
python - "$work" <<'PY'
import sys
import numpy as np
from dscloud.example import churn_data
users = churn_data(20000, seed=21, start_id=500000)
rng = np.random.default_rng(21)
users["age"] = users["age"] + users["age"].std()
others = np.flatnonzero(users["plan"].to_numpy() != "standard")
wanted = int(0.6 * len(users)) - int((users["plan"] == "standard").sum())
users.loc[rng.choice(others, wanted, replace=False), "plan"] = "standard"
users.drop(columns=["churned"]).to_parquet(f"{sys.argv[1]}/shifted.parquet")
users[["user_id", "churned"]].to_csv(f"{sys.argv[1]}/outcomes.csv", index=False)
PY

echo "-- dsc score counts drift as it scores; _SUCCESS carries the run's report"
dsc score churn@production --input "$work/shifted.parquet" --output "$work/scores"
python - "$work/scores/_SUCCESS" <<'PY'
import json, sys
drift = json.load(open(sys.argv[1]))["drift"]
print(f"rows {drift['rows']}, worst feature {drift['worst_feature']} "
      f"(PSI {drift['worst_feature_psi']:.3f}), prediction PSI {drift['prediction']['psi']:.3f}")
PY

echo "-- dsc drift: features ranked by PSI, training vs now side by side in the plot"
dsc drift churn@production --input "$work/shifted.parquet" --plot "$work/drift.png"

echo "-- outcomes arrived: dsc evaluate records live metrics of the version that scored"
dsc evaluate churn@production --predictions "$work/scores" --labels "$work/outcomes.csv" \
  --key user_id --label-column churned

echo "-- offline and live metrics over versions"
dsc history churn --metric auc --plot "$work/history.png"
echo "plots: $work/drift.png $work/history.png"
