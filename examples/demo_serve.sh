#!/usr/bin/env bash
# `make demo`, serve part: `dsc serve churn@production` on a free port of 127.0.0.1, score a
# few rows over HTTP with both protocols, show a refused request, then SIGTERM the server.
# Needs DSC_ARCHIVE holding churn@production and the venv on PATH.
set -euo pipefail
: "${DSC_ARCHIVE:?set DSC_ARCHIVE to an archive holding churn@production}"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
log=$(mktemp)
dsc serve churn@production --host 127.0.0.1 --port "$port" --refresh-seconds 0 >"$log" 2>&1 &
pid=$!
stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$log"
}
trap stop EXIT

for _ in $(seq 1 150); do   # at most 30 s
  if python - "$url" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/v2/health/ready", timeout=1)
PY
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.2
done

# POST a body; print the status and the answer, one line each.
post() {
  python - "$url$1" "$2" "$3" <<'PY'
import sys, urllib.error, urllib.request
url, content_type, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(f"  -> {status} {text}")
PY
}

rows='[
  {"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "age": 29, "data_gb": 12.0,
   "plan": "premium", "region": "south", "payment_method": "invoice"},
  {"tenure_months": 60, "monthly_charges": 31.2, "support_calls": 0, "age": null, "data_gb": 4.5,
   "plan": "basic", "region": "north", "payment_method": "card"}
]'
echo "serving on $url (SageMaker /invocations and Open Inference Protocol v2)"
echo "POST /invocations  dataframe_records, two rows"
post /invocations application/json "{\"dataframe_records\": $rows}"
echo "POST /invocations  text/csv with a header row"
post /invocations text/csv "$(printf 'tenure_months,monthly_charges,support_calls,age,data_gb,plan,region,payment_method\n12,70,1,45,8.5,standard,east,bank')"
echo "POST /v2/models/churn/infer  one tensor per column"
post /v2/models/churn/infer application/json '{"id": "demo", "inputs": [
  {"name": "tenure_months", "shape": [1], "datatype": "FP32", "data": [24]},
  {"name": "monthly_charges", "shape": [1], "datatype": "FP32", "data": [55.0]},
  {"name": "support_calls", "shape": [1], "datatype": "FP32", "data": [2]},
  {"name": "age", "shape": [1], "datatype": "FP32", "data": [51]},
  {"name": "data_gb", "shape": [1], "datatype": "FP32", "data": [20.1]},
  {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["standard"]},
  {"name": "region", "shape": [1], "datatype": "BYTES", "data": ["west"]},
  {"name": "payment_method", "shape": [1], "datatype": "BYTES", "data": ["card"]}]}'
echo "POST /invocations  a wrong type is refused with the field and the expected schema"
post /invocations application/json '{"dataframe_records": [{"tenure_months": "long", "monthly_charges": 40,
  "support_calls": 1, "age": 30, "data_gb": 2, "plan": "basic", "region": "east", "payment_method": "card"}]}'
echo "GET /metrics (excerpt)"
python - "$url/metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("dsc_requests_total", "dsc_model_info")):
        print("  " + line)
PY
echo "one JSON log line per request, e.g.:"
grep -m 1 '"path":"/invocations"' "$log" | sed 's/^/  /'
