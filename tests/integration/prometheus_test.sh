#!/usr/bin/env bash
# Prometheus end to end, with Debian's real `prometheus` server (issue 6):
#   - `cellserve serve --metrics-port P` on a small model repository serves /metrics (scraped here
#     with python3's urllib: no curl or wget needed); every metric of the contract
#     (monitoring/metrics.h) is there, and `promtool check metrics` accepts the exposition;
#   - a real Prometheus scrapes it every second; after a known number of requests sent with
#     `cellserve infer` (OK, INVALID_ARGUMENT from the cluster, INVALID_ARGUMENT refused by the RPC
#     server itself), its HTTP API (/api/v1/query) reads back exactly that number in
#     sum(cellserve_requests_total) and sum(cellserve_request_duration_seconds_count), and the
#     per-code counts;
#   - SIGTERM stops both; every process this script starts is killed on exit.
# Fails (never skips) if prometheus or promtool is missing: `./cellserve.sh deps` installs the
# Debian package `prometheus`.
# Usage: prometheus_test.sh PATH/TO/cellserve   (ctest passes it). Every wait is bounded.
set -uo pipefail
CELLSERVE="$1"
source "$(dirname "$0")/lib.sh"

for tool in prometheus promtool python3; do
  if ! command -v "$tool" >/dev/null; then
    die "'$tool' is not installed" \
      "this test needs Debian's prometheus server and promtool: apt-get install prometheus (./cellserve.sh deps installs it)"
  fi
done

# prom_query EXPR: the value of a one-sample instant query through Prometheus's HTTP API,
# "none" if the result is empty.
# logs_tail: the ends of the server's and Prometheus's logs ($WORK goes when the script ends, so a
# failure shows them).
logs_tail() {
  echo "--- serve.log:"; tail -8 "$WORK/serve.log" 2>/dev/null
  echo "--- prometheus.log:"; tail -8 "$WORK/prometheus.log" 2>/dev/null
}
prom_query() {
  python3 - "$PROM_URL" "$1" <<'EOF'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
except Exception as e:
    print(f"error: {e}")
    sys.exit(1)
if body.get("status") != "success":
    print(f"error: {body}")
    sys.exit(1)
result = body["data"]["result"]
if not result:
    print("none")
else:
    v = float(result[0]["value"][1])
    print(int(v) if v == int(v) else v)
EOF
}

REPO="$WORK/models"
"$CELLSERVE" model init --repo "$REPO" --name sentiment --kind lstm --hidden 32 --embed 32 --layers 1 \
  --vocab 1000 --classes 2 --seed 1 >"$WORK/model.log" 2>&1 || die "model init" "$(cat "$WORK/model.log")"

# --- cellserve serve with metrics (a free port is picked, then bound: retried if it was taken) ---
SERVE_PID=""
for attempt in 1 2 3; do
  METRICS_PORT="$(free_port)"
  rm -f "$WORK/rpc.port"
  "$CELLSERVE" serve --model-repo "$REPO" --listen 127.0.0.1:0 --port-file "$WORK/rpc.port" \
    --metrics-port "$METRICS_PORT" --max-tokens 16 2>"$WORK/serve.log" &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  wait_for 60 or_exited "$SERVE_PID" test -s "$WORK/rpc.port"
  [[ -s "$WORK/rpc.port" ]] && break
  grep -q "cannot serve metrics" "$WORK/serve.log" || break
done
[[ -s "$WORK/rpc.port" ]] || die "cellserve serve --metrics-port did not start" "$(cat "$WORK/serve.log")"
ADDR="127.0.0.1:$(cat "$WORK/rpc.port")"
grep -q "metrics on http://127.0.0.1:$METRICS_PORT/metrics" "$WORK/serve.log" ||
  bad "serve does not say where its metrics are" "$(cat "$WORK/serve.log")"

# --- /metrics as served ---
if ! http_get "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/scrape.txt" 2>"$WORK/scrape.err"; then
  die "GET /metrics" "$(cat "$WORK/scrape.err")"
fi
missing=()
for family in cellserve_requests_total cellserve_request_duration_seconds cellserve_queue_wait_seconds \
  cellserve_batch_size cellserve_cells_total cellserve_batches_total cellserve_padding_rows_total \
  cellserve_device_busy_seconds_total cellserve_device_busy_ratio cellserve_state_slots_in_use \
  cellserve_state_slots cellserve_requests_in_flight cellserve_rounds_in_flight cellserve_placements_total \
  cellserve_node_up cellserve_rpc_errors_total cellserve_rpc_connections cellserve_rpc_calls_in_flight \
  cellserve_rpc_client_cancels_total cellserve_rpc_connections_refused_total cellserve_build_info \
  cellserve_memory_headroom_bytes cellserve_memory_limit_bytes cellserve_log_lines_dropped_total \
  process_resident_memory_bytes process_virtual_memory_bytes \
  process_cpu_seconds_total process_open_fds process_max_fds process_start_time_seconds; do
  grep -q "^# TYPE $family " "$WORK/scrape.txt" || missing+=("$family")
done
if [[ ${#missing[@]} -eq 0 ]]; then ok "/metrics exposes every metric of the contract"
else bad "/metrics lacks: ${missing[*]}" "$(head -40 "$WORK/scrape.txt")"; fi
if out="$(promtool check metrics <"$WORK/scrape.txt" 2>&1)"; then ok "promtool check metrics accepts the exposition"
else bad "promtool check metrics" "$out"; fi

# --- a real Prometheus scraping it every second ---
# prom_ready: Prometheus at $PROM_URL says it is ready (then sets ready=1).
# Ours, alive: another test's Prometheus could hold a port ours failed to bind.
prom_ready() { kill -0 "$PROM_PID" 2>/dev/null && http_get "$PROM_URL/-/ready" >/dev/null 2>&1 && ready=1; }
PROM_PID=""
for attempt in 1 2 3; do
  PROM_PORT="$(free_port)"
  PROM_URL="http://127.0.0.1:$PROM_PORT"
  cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  scrape_timeout: 2s  # a timed-out scrape marks every series stale: check_query retries
  evaluation_interval: 1s
scrape_configs:
  - job_name: cellserve
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
EOF
  if [[ $attempt == 1 ]]; then
    if out="$(promtool check config "$WORK/prometheus.yml" 2>&1)"; then ok "promtool check config"
    else die "promtool check config" "$out"; fi
  fi
  rm -rf "$WORK/tsdb"
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
  PROM_PID=$!
  PIDS+=("$PROM_PID")
  ready=0
  wait_for 30 or_exited "$PROM_PID" prom_ready
  [[ $ready == 1 ]] && break
  kill -9 "$PROM_PID" 2>/dev/null
done
[[ $ready == 1 ]] || die "prometheus did not become ready" "$(tail -20 "$WORK/prometheus.log")"
ok "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') is up on $PROM_URL"

# Prometheus sees the target up before anything is sent (bounded: 90 s; the first scrape comes
# about 5 s after start on an idle machine).
up=none
for _ in $(seq 180); do
  up="$(prom_query 'up{job="cellserve"}')"
  [[ "$up" == 1 ]] && break
  sleep 0.5
done
[[ "$up" == 1 ]] && ok "the cellserve target is up" || die "the cellserve target is not up: $up" "$(logs_tail)"

# --- a known number of requests ---
N_OK=6 N_BAD_VOCAB=3 N_BAD_RPC=2
N=$((N_OK + N_BAD_VOCAB + N_BAD_RPC))
sent_ok=0 sent_bad=0
for i in $(seq "$N_OK"); do
  "$CELLSERVE" infer --addr "$ADDR" --model sentiment "Request number $i to the server." >/dev/null 2>&1 &&
    sent_ok=$((sent_ok + 1))
done
for i in $(seq "$N_BAD_VOCAB"); do  # token 5000 is outside the vocabulary: the cluster answers INVALID_ARGUMENT
  "$CELLSERVE" infer --addr "$ADDR" --model sentiment --tokens "4,5000,$i" >/dev/null 2>&1 || sent_bad=$((sent_bad + 1))
done
for i in $(seq "$N_BAD_RPC"); do  # 20 tokens > --max-tokens 16: the RPC server refuses it itself
  "$CELLSERVE" infer --addr "$ADDR" --model sentiment --tokens "$(seq -s, 4 23)" >/dev/null 2>&1 ||
    sent_bad=$((sent_bad + 1))
done
if [[ $sent_ok == "$N_OK" && $sent_bad == $((N_BAD_VOCAB + N_BAD_RPC)) ]]; then
  ok "sent $N requests: $N_OK answered OK, $((N_BAD_VOCAB + N_BAD_RPC)) INVALID_ARGUMENT"
else
  bad "sent $N requests: $sent_ok OK (want $N_OK), $sent_bad errors (want $((N_BAD_VOCAB + N_BAD_RPC)))" "$(logs_tail)"
fi

# --- read back through Prometheus (bounded: 30 s for a scrape that has them all) ---
total=none
for _ in $(seq 60); do
  total="$(prom_query 'sum(cellserve_requests_total)')"
  [[ "$total" == "$N" ]] && break
  sleep 0.5
done
[[ "$total" == "$N" ]] && ok "Prometheus: sum(cellserve_requests_total) = $N" ||
  bad "Prometheus: sum(cellserve_requests_total) = $total, want $N" "$(http_get "http://127.0.0.1:$METRICS_PORT/metrics" | grep requests_total)"
check_query() {  # check_query EXPR WANT: retried for 30 s (a scrape that timed out on a loaded machine)
  local got
  for _ in $(seq 60); do
    got="$(prom_query "$1")"
    [[ "$got" == "$2" ]] && break
    sleep 0.5
  done
  [[ "$got" == "$2" ]] && ok "Prometheus: $1 = $2" || bad "Prometheus: $1 = $got, want $2" "$(logs_tail)"
}
check_query 'sum(cellserve_request_duration_seconds_count)' "$N"
check_query 'sum(cellserve_request_duration_seconds_bucket{le="+Inf"})' "$N"
check_query 'sum(cellserve_requests_total{code="OK"})' "$N_OK"
check_query 'sum(cellserve_requests_total{model="sentiment",code="INVALID_ARGUMENT"})' "$N_BAD_VOCAB"
check_query 'sum(cellserve_requests_total{model="(unknown)",code="INVALID_ARGUMENT"})' "$N_BAD_RPC"
check_query 'sum(cellserve_rpc_errors_total)' "$((N_BAD_VOCAB + N_BAD_RPC))"
check_query 'sum(cellserve_queue_wait_seconds_count)' "$N_OK"
check_query 'sum(cellserve_placements_total)' "$((N_OK + N_BAD_VOCAB))"
check_query 'sum(cellserve_requests_in_flight)' 0
check_query 'sum(cellserve_node_up)' 1

# --- shut down: SIGTERM, both exit within 30 s ---
stop() {  # stop PID NAME
  if ! stop_and_wait "$1" 30; then bad "$2: still running 30 s after SIGTERM"; return; fi
  [[ $EXIT == 0 ]] && ok "$2 exits 0 on SIGTERM" || bad "$2 exited $EXIT on SIGTERM"
}
stop "$SERVE_PID" "cellserve serve"
stop "$PROM_PID" "prometheus"

if [[ $failures -gt 0 ]]; then
  echo "prometheus_test: $failures failure(s)"
  exit 1
fi
echo "prometheus_test: all passed"
