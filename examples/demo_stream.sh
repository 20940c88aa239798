#!/usr/bin/env bash
# The online path on a laptop: a moto server on 127.0.0.1 stands in for Kinesis, DynamoDB
# and SQS; `dsc stream run` plays Lambda's event source mapping and calls the real handler.
# Needs DSC_ARCHIVE holding churn@production (examples/demo.sh makes one) and `dsc` and
# `moto_server` on PATH (the venv). Takes a few seconds.
set -euo pipefail
: "${DSC_ARCHIVE:?set DSC_ARCHIVE to an archive holding churn@production (see examples/demo.sh)}"
export DSC_ARCHIVE
PY="${PYTHON:-python}"
work="$(mktemp -d)"
moto_pid=""
cleanup() {
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
unset AWS_PROFILE AWS_SESSION_TOKEN
"$PY" - "$port" <<'PYEOF'
import socket, sys, time
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("moto server did not start on 127.0.0.1:" + sys.argv[1])
PYEOF
echo "moto server on $AWS_ENDPOINT_URL"

echo "-- create the stream, the predictions table, the rejects and on-failure queues"
dsc stream create --stream events --table predictions \
  --rejects-queue rejects.fifo --failures-queue stream-failures >"$work/resources.json"
cat "$work/resources.json"
rejects="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rejects_queue_url"])' "$work/resources.json")"
failures="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["failures_queue_url"])' "$work/resources.json")"

echo "-- put 20 churn events and 2 poison records on the stream"
dsc stream put --stream events --example 20 --poison 2

echo "-- run the event source mapping until the stream is drained"
dsc stream run --stream events --model churn@production --table predictions \
  --rejects-queue-url "$rejects" --on-failure "$failures" \
  --batch-size 8 --bisect-batch-on-error --report-batch-item-failures \
  --retry-attempts 3 --max-record-age 3600 --timeout 60 \
  2> >(grep -v '"level"' >&2) | grep -v '^{"level"\|"_aws"' || true

echo "-- the predictions table, the rejects queue and the on-failure queue"
dsc stream show --table predictions --queue "$rejects" --queue "$failures"
