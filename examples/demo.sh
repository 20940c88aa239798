#!/usr/bin/env bash
# `make demo`: the model lifecycle on the embedded default archive (.dsc/archive), then the
# three runtimes over the same artifact. Run from the repository root with the venv on PATH.
set -euo pipefail
export DSC_ARCHIVE="${DSC_ARCHIVE:-.dsc/archive}"
here="$(cd "$(dirname "$0")" && pwd)"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "train and publish two versions of the bundled churn example"
first=$(dsc example train --seed 1 | tee /dev/stderr | sed -E 's/^published churn@([0-9]+).*/\1/')
second=$(dsc example train --seed 2 --C 0.1 | tee /dev/stderr | sed -E 's/^published churn@([0-9]+).*/\1/')

say "promote churn@$first to production, churn@$second to staging"
dsc promote churn "$first" --alias production
dsc promote churn "$second" --alias staging

say "what is in the archive"
dsc list
dsc list churn

say "show churn@production"
dsc show churn@production

say "what changed between churn@$first and churn@$second"
dsc diff "churn@$first" "churn@$second" | head -n 30

say "metrics over time"
mkdir -p .dsc
dsc history churn --metric auc --plot .dsc/churn-auc.png

say "verify churn@production (integrity + golden replay)"
dsc verify churn@production

for part in serve stream batch monitor rollout; do
  if [ -x "$here/demo_$part.sh" ]; then
    say "$part"
    bash "$here/demo_$part.sh"
  fi
done

say "where everything is"
echo "archive:        $DSC_ARCHIVE  (models/churn/versions, aliases, audit)"
echo "history chart:  .dsc/churn-auc.png"
[ -d .dsc/demo ] && echo "demo outputs:   .dsc/demo/"
[ -d .dsc/demo-monitor ] && echo "drift report:   .dsc/demo-monitor/drift.png, history.png"
[ -d .dsc/demo-rollout ] && echo "rollout runs:   .dsc/demo-rollout/shadow, canary"
echo "envelope:       $DSC_ARCHIVE/models/churn/versions/$first/envelope.json"
