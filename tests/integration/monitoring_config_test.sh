#!/usr/bin/env bash
# monitoring/ as operators get it, checked with Prometheus's own tools and a live server (issue 6):
#   - promtool check rules and promtool test rules (monitoring/prometheus/alerts_test.yml: every
#     alert fires on bad input, stays quiet on healthy input, honours its `for:`);
#   - promtool check config on prometheus.yml. Debian's promtool and prometheus are built without
#     Kubernetes service discovery, so there the kubernetes_sd_configs block's fields are checked
#     against upstream's schema and the rest of the config by promtool with the block swapped for
#     file_sd_configs;
#   - the Grafana dashboard parses and is complete (variables, descriptions, units, grid), and every
#     metric name in its queries and in the rules is one a live `cellserve serve --metrics-port`
#     exports (checked against its /metrics, after requests, by # TYPE lines and bucket bounds);
#     promtool parses every dashboard query;
#   - Debian's real Prometheus loads that config with fake Kubernetes pods (file_sd labels as the
#     Kubernetes discovery sets them) pointing at the live server: the annotation relabeling keeps and
#     drops the right pods, every target is up, every rule evaluates without error, every dashboard
#     query returns data, every dashboard variable has values, no alert fires on the healthy server;
#   - podmonitor.yaml (the prometheus-operator alternative) selects and labels pods as prometheus.yml;
#   - every alert's runbook anchor (docs/OPERATIONS.md#alert-...) exists once OPERATIONS.md does;
#   - self-test: the checks reject a dashboard with a metric that is not exported, a bare histogram
#     name and a wrong bucket bound, rules naming an unknown metric, a rule file that does not parse,
#     an alert threshold changed under its unit tests, a misspelt kubernetes_sd_configs field and a
#     PodMonitor whose labels differ.
# Fails (never skips) without promtool/prometheus: `./cellserve.sh deps` installs Debian's prometheus.
# Usage: monitoring_config_test.sh PATH/TO/cellserve   (ctest passes it). Every wait is bounded.
set -uo pipefail
CELLSERVE="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MON="$ROOT/monitoring"
DASH="$MON/grafana/cellserve.json"
PROM_YML="$MON/prometheus/prometheus.yml"
RULES="$MON/prometheus/alerts.yml"
RULES_TEST="$MON/prometheus/alerts_test.yml"
PODMONITOR="$MON/prometheus/podmonitor.yaml"
CHECK=(python3 "$HERE/monitoring_check.py")
source "$(dirname "$0")/lib.sh"
# run NAME COMMAND...: ok if it exits 0, else FAIL with its output. The checker's own ok/FAIL lines
# are printed either way (indented).
run() {
  local name="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    ok "$name"
    grep -E '^(ok|note) ' <<<"$out" | sed 's/^/       /'
  else
    bad "$name" "$out"
  fi
}
# must_fail NAME PATTERN COMMAND...: the command must exit non-zero and say PATTERN.
must_fail() {
  local name="$1" pattern="$2" out
  shift 2
  if out="$("$@" 2>&1)"; then
    bad "self-test: $name was accepted" "$out"
  elif ! grep -qE -- "$pattern" <<<"$out"; then
    bad "self-test: $name rejected, but without /$pattern/" "$out"
  else
    ok "self-test: $name is rejected"
  fi
}

for tool in promtool prometheus python3; do
  command -v "$tool" >/dev/null ||
    die "'$tool' is not installed" \
      "this test needs promtool and prometheus from Debian's package 'prometheus' (./cellserve.sh deps installs it)"
done
for f in "$DASH" "$PROM_YML" "$RULES" "$RULES_TEST" "$PODMONITOR"; do
  [[ -s "$f" ]] || die "$f is missing"
done

# --- rules -------------------------------------------------------------------------------------
run "promtool check rules alerts.yml" promtool check rules "$RULES"
run "promtool test rules alerts_test.yml (each alert fires on bad input, not on healthy input)" \
  promtool test rules "$RULES_TEST"
run "alerts: severity, for:, summary, description, runbook anchors" \
  "${CHECK[@]}" runbooks "$RULES" --operations "$ROOT/docs/OPERATIONS.md"

# --- scrape config -----------------------------------------------------------------------------
K8S_PROMTOOL=1
if out="$(promtool check config "$PROM_YML" 2>&1)"; then
  ok "promtool check config prometheus.yml (offline: it connects to nothing)"
elif grep -q "field kubernetes_sd_configs not found" <<<"$out"; then
  K8S_PROMTOOL=0
  echo "note this promtool has no Kubernetes service discovery (Debian removes it); checking the" \
    "kubernetes_sd_configs block against upstream's fields and the rest with file_sd_configs"
else
  bad "promtool check config prometheus.yml" "$out"
fi

run "podmonitor.yaml: selects and labels the pods as prometheus.yml does" \
  "${CHECK[@]}" podmonitor "$PODMONITOR" "$PROM_YML"

# --- the dashboard, statically -----------------------------------------------------------------
run "dashboard: parses, variables, panels (description, unit, datasource, grid)" "${CHECK[@]}" static "$DASH"
"${CHECK[@]}" promql-rules "$DASH" "$WORK/dashboard_queries.yml" >/dev/null
run "promtool parses every dashboard query" promtool check rules "$WORK/dashboard_queries.yml"

# --- a live server's /metrics ------------------------------------------------------------------
# (The help is read whole first: `grep -q` in a pipe stops reading at its match, and under
# pipefail the SIGPIPE that gives a longer help then fails the check.)
grep -q -- "--metrics-port" <<<"$("$CELLSERVE" serve --help 2>&1)" ||
  die "cellserve serve has no --metrics-port: cannot scrape the metrics the dashboard must match"
REPO="$WORK/models"
"$CELLSERVE" model init --repo "$REPO" --name cls --kind lstm --hidden 32 --embed 32 --layers 1 \
  --vocab 1000 --classes 2 --seed 1 >"$WORK/model.log" 2>&1 &&
  "$CELLSERVE" model init --repo "$REPO" --name tree --kind treelstm --hidden 16 --vocab 1000 \
    --classes 3 --seed 2 >>"$WORK/model.log" 2>&1 || die "model init" "$(cat "$WORK/model.log")"
SERVE_PID=""
for attempt in 1 2 3; do
  METRICS_PORT="$(free_port)"
  rm -f "$WORK/rpc.port"
  "$CELLSERVE" serve --model-repo "$REPO" --devices 2 --listen 127.0.0.1:0 --port-file "$WORK/rpc.port" \
    --metrics-port "$METRICS_PORT" --max-tokens 16 2>"$WORK/serve.log" &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  for _ in $(seq 600); do
    [[ -s "$WORK/rpc.port" ]] && break
    kill -0 "$SERVE_PID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -s "$WORK/rpc.port" ]] && break
done
[[ -s "$WORK/rpc.port" ]] || die "cellserve serve --metrics-port did not start" "$(cat "$WORK/serve.log")"
ADDR="127.0.0.1:$(cat "$WORK/rpc.port")"
# Requests that touch every family: OK answers of both models (batches of every cell type), client
# errors from the cluster and from the RPC server.
for text in "The state of the Union is strong." "We will do it together." "Thank you."; do
  "$CELLSERVE" infer --addr "$ADDR" --model cls "$text" >/dev/null 2>&1 || bad "infer cls: '$text' failed"
  "$CELLSERVE" infer --addr "$ADDR" --model tree "$text" >/dev/null 2>&1 || bad "infer tree: '$text' failed"
done
"$CELLSERVE" infer --addr "$ADDR" --model nope "hello" >/dev/null 2>&1
"$CELLSERVE" infer --addr "$ADDR" --model cls --tokens 5,99999 >/dev/null 2>&1
"$CELLSERVE" infer --addr "$ADDR" --model cls --tokens "$(seq -s, 10 40)" >/dev/null 2>&1
http_get "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/scrape.txt" 2>"$WORK/scrape.err" ||
  die "GET /metrics of the live server" "$(cat "$WORK/scrape.err")"
run "every metric in the dashboard, alerts.yml and alerts_test.yml is exported by the live server" \
  "${CHECK[@]}" names --exposition "$WORK/scrape.txt" --dashboard "$DASH" --rules "$RULES" --rules-test "$RULES_TEST"

# --- self-test: the checks can fail ------------------------------------------------------------
# mutate IN OUT FROM TO: OUT is IN with the first FROM replaced by TO. FROM must be there: if it is
# not (the file changed), that is a failure, or the self-test after it would be skipped unseen.
mutate() {
  local out
  out="$(python3 - "$@" 2>&1 <<'EOF'
import sys
src, dst, a, b = sys.argv[1:5]
s = open(src).read()
if a not in s:
    sys.exit(f"mutate: {a!r} not in {src}")
open(dst, "w").write(s.replace(a, b, 1))
EOF
)" && return 0
  bad "self-test setup: the text to change is no longer in $(basename "$1")" "$out"
  return 1
}
mutate "$DASH" "$WORK/bogus.json" 'sum by (model, code) (rate(cellserve_requests_total{' \
  'sum by (model, code) (rate(cellserve_bogus_requests_total{' &&
  must_fail "a dashboard panel querying cellserve_bogus_requests_total" "cellserve_bogus_requests_total \(not exported\)" \
    "${CHECK[@]}" names --exposition "$WORK/scrape.txt" --dashboard "$WORK/bogus.json"
mutate "$DASH" "$WORK/bare.json" 'cellserve_queue_wait_seconds_bucket{' 'cellserve_queue_wait_seconds{' &&
  must_fail "a dashboard selecting a histogram by its bare name" "a histogram" \
    "${CHECK[@]}" names --exposition "$WORK/scrape.txt" --dashboard "$WORK/bare.json"
mutate "$DASH" "$WORK/le.json" 'le=\"0.25\"' 'le=\"0.3\"' &&
  must_fail "a dashboard selecting a bucket bound that does not exist" "no such bucket" \
    "${CHECK[@]}" names --exposition "$WORK/scrape.txt" --dashboard "$WORK/le.json"
mutate "$DASH" "$WORK/nodesc.json" '"description": "Requests answered per second (throughput)' \
  '"description": "", "was": "' &&
  must_fail "a dashboard panel without a description" "no description" "${CHECK[@]}" static "$WORK/nodesc.json"
cp "$RULES_TEST" "$WORK/"
mutate "$RULES" "$WORK/alerts.yml" 'rate(cellserve_requests_total{code="RESOURCE_EXHAUSTED"}' \
  'rate(cellserve_request_total{code="RESOURCE_EXHAUSTED"}' &&
  must_fail "alerts.yml naming cellserve_request_total" "cellserve_request_total \(not exported\)" \
    "${CHECK[@]}" names --exposition "$WORK/scrape.txt" --rules "$WORK/alerts.yml"
mutate "$PROM_YML" "$WORK/k8s_bad.yml" '        namespaces:' '        namespace:' &&
  must_fail "a kubernetes_sd_configs block with a misspelt field" "unknown field 'namespace'" \
    "${CHECK[@]}" k8s-config "$WORK/k8s_bad.yml" "$WORK/k8s_bad_out.yml" --targets-file "$WORK/x.json" \
    --metrics-port 1 --rules "$RULES"
mutate "$PODMONITOR" "$WORK/podmonitor.yaml" 'targetLabel: component' 'targetLabel: app_component' &&
  must_fail "a PodMonitor labelling differently from prometheus.yml" "differ from" \
    "${CHECK[@]}" podmonitor "$WORK/podmonitor.yaml" "$PROM_YML"
mutate "$RULES" "$WORK/alerts.yml" 'cellserve_node_up == 0' 'cellserve_node_up == == 0' &&
  must_fail "promtool check rules on a rule that does not parse" "parse error|unexpected" \
    promtool check rules "$WORK/alerts.yml"
mutate "$RULES" "$WORK/alerts.yml" '(14.4 * 0.01)' '(30 * 0.01)' &&
  must_fail "promtool test rules with the fast-burn threshold raised to 30x" "FAILED" \
    promtool test rules "$WORK/alerts_test.yml"

# --- Debian's real Prometheus on the scrape config, against the live server ---------------------
"${CHECK[@]}" k8s-targets "$WORK/pods.json" --metrics-port "$METRICS_PORT" >/dev/null
run "kubernetes_sd_configs: fields and role; the config with file_sd in its place" \
  "${CHECK[@]}" k8s-config "$PROM_YML" "$WORK/prometheus.yml" --targets-file "$WORK/pods.json" \
  --metrics-port "$METRICS_PORT" --rules "$RULES"
if [[ $K8S_PROMTOOL == 0 ]]; then
  run "promtool check config on prometheus.yml with file_sd for kubernetes_sd (relabeling, rules)" \
    promtool check config "$WORK/prometheus.yml"
fi
# Traffic while Prometheus scrapes, so that rates have something to show.
printf '%s\n' "The state of the Union is strong." "We will do it together." "Thank you." >"$WORK/corpus.txt"
"$CELLSERVE" loadgen --addr "$ADDR" --model cls --corpus "$WORK/corpus.txt" --rate 20 --duration-s 40 \
  >"$WORK/loadgen.log" 2>&1 &
LOADGEN_PID=$!
PIDS+=("$LOADGEN_PID")
PROM_URL=""
PROM_PID=""
for attempt in 1 2 3; do
  PROM_PORT="$(free_port)"
  rm -rf "$WORK/tsdb"
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
  PROM_PID=$!
  PIDS+=("$PROM_PID")
  for _ in $(seq 100); do
    http_get "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 && { PROM_URL="http://127.0.0.1:$PROM_PORT"; break; }
    kill -0 "$PROM_PID" 2>/dev/null || break
    sleep 0.2
  done
  [[ -n "$PROM_URL" ]] && break
  { kill -9 "$PROM_PID"; wait "$PROM_PID"; } 2>/dev/null
done
if [[ -z "$PROM_URL" ]]; then
  bad "prometheus did not start on the config" "$(tail -20 "$WORK/prometheus.log")"
else
  ok "Debian's prometheus runs the config (kubernetes job on fake pods, alerts.yml)"
  run "real Prometheus: relabeling, targets up, rules evaluate, dashboard queries and variables have data, no alerts" \
    "${CHECK[@]}" live "$PROM_URL" --dashboard "$DASH" --rules "$RULES" --metrics-port "$METRICS_PORT" \
    --model cls
fi

# Stop what runs (SIGTERM: Prometheus shuts down, serve drains); cleanup kills what is left.
for pid in "${PROM_PID:-}" "$LOADGEN_PID" "$SERVE_PID"; do
  [[ -n "$pid" ]] || continue
  stop_and_wait "$pid" 10  # bounded: one that does not stop is killed
done
if [[ $failures -gt 0 ]]; then
  echo "monitoring_config_test: $failures failure(s)"
  exit 1
fi
echo "monitoring_config_test: all passed"
