#!/usr/bin/env bash
# The RPC front door against real server processes on 127.0.0.1, as a user runs it:
#   - every model kind end to end through `cellserve infer`, equal to the in-process path
#     (`cellserve serve --stdin` on the same text);
#   - streaming delivers every decoder token in order, then the result;
#   - each error code reached by a real bad request: unknown model (NOT_FOUND), token out of the
#     vocabulary, malformed tree, too many tokens (INVALID_ARGUMENT), a deadline (DEADLINE_EXCEEDED),
#     overload (RESOURCE_EXHAUSTED);
#   - a client killed mid-call leaves no requests or state slots behind (the server's own counters);
#   - loadgen answers every request it sends; SIGTERM drains and exits 0.
# Usage: rpc_test.sh PATH/TO/cellserve   (ctest passes it). Every wait is bounded; every server
# process is killed on exit.
set -uo pipefail
CELLSERVE="$1"
PY=python3
source "$(dirname "$0")/lib.sh"

# start_server NAME FLAGS...: starts `cellserve serve` on a free port; sets ADDR and SERVER_PID.
start_server() {
  local name="$1"
  shift
  rm -f "$WORK/$name.port"
  "$CELLSERVE" serve --model-repo "$REPO" --listen 127.0.0.1:0 --port-file "$WORK/$name.port" "$@" \
    2>"$WORK/$name.log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_for 60 or_exited "$SERVER_PID" test -s "$WORK/$name.port"
  if [[ ! -s "$WORK/$name.port" ]]; then
    bad "server $name did not start" "$(cat "$WORK/$name.log")"
    return 1
  fi
  ADDR="127.0.0.1:$(cat "$WORK/$name.port")"
}

# stop_server PID NAME: SIGTERM, expect exit 0 within 60 s.
stop_server() {
  local pid="$1" name="$2"
  if ! stop_and_wait "$pid" 60; then
    bad "$name: still running 60 s after SIGTERM" "$(cat "$WORK/$name.log")"
    return
  fi
  if grep -qE "memory: [0-9]+ MiB resident( \(and [0-9]+ MiB of state slots reserved, taken as they fill\))?; [0-9]+ MiB more may be taken, of a [0-9]+ MiB limit" "$WORK/$name.log"
  then ok "$name: said at start how much memory it holds and may take"
  else bad "$name: no memory line at start" "$(cat "$WORK/$name.log")"; fi
  if [[ $EXIT == 0 ]] && grep -q "draining" "$WORK/$name.log"; then ok "$name: SIGTERM drains and exits 0"
  else bad "$name: exit $EXIT after SIGTERM" "$(cat "$WORK/$name.log")"; fi
}


REPO="$WORK/models"
init_models "$REPO" &&
  # For the deadline: tens of ms per request, far past a 1 ms deadline even when the deadline's
  # timer runs late on a loaded machine (mt took 1.7 ms and answered OK once: a flaky check).
  "$CELLSERVE" model init --repo "$REPO" --name slow --kind lstm --hidden 384 --layers 2 --vocab 5000 \
    --classes 2 --seed 7 --init-scale 0.3 >/dev/null || { echo "FAIL model init"; exit 1; }

for sub in infer health models loadgen; do
  check "$sub --help" 0 "usage: cellserve $sub" -- "$CELLSERVE" $sub --help
done
check "infer with no server: UNAVAILABLE, says what to do" 1 "UNAVAILABLE|cannot connect" -- \
  "$CELLSERVE" infer --addr 127.0.0.1:1 --model cls "hello"

start_server main --devices 2 --max-tokens 64 || exit 1
MAIN_PID=$SERVER_PID
check "health: serving" 0 "serving" -- "$CELLSERVE" health --addr "$ADDR"
for m in cls mt tree slow; do  # each on its own line of the table (one pattern for all passed with any)
  check "models lists $m" 0 "^$m +1 " -- "$CELLSERVE" models --addr "$ADDR"
done
# The operator is told what folding took: cls's first layer, 5000 x 4 x 64 floats.
check "serve says which token inputs it folded" 0 "cpu: cls: token inputs folded \(lstm.0 5 MiB" -- \
  cat "$WORK/main.log"

# Every kind through RPC equals the in-process path on the same text.
SENTENCES=("The state of the Union is strong." "We will build a future worthy of our children, and we will do it together."
  "Thank you.")
for model in cls mt tree; do
  for i in "${!SENTENCES[@]}"; do
    printf '%s\t%s\n' "$model" "${SENTENCES[$i]}"
  done > "$WORK/in_$model.txt"
  "$CELLSERVE" serve --stdin --model-repo "$REPO" --models "$model" < "$WORK/in_$model.txt" \
    > "$WORK/local_$model.jsonl" 2>/dev/null
  same=1
  for i in "${!SENTENCES[@]}"; do
    "$CELLSERVE" infer --addr "$ADDR" --model "$model" --json "${SENTENCES[$i]}" > "$WORK/rpc.json" 2>&1 || same=0
    $PY - "$WORK/local_$model.jsonl" "$WORK/rpc.json" "$((i + 1))" <<'EOF' || same=0
import json, sys
local = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
want = next(x for x in local if x["line"] == int(sys.argv[3]))
got = json.load(open(sys.argv[2]))
for key in ("label", "logits", "tokens"):
    if key in want and want[key] != got.get(key):
        sys.exit(f"{key}: in process {want[key]} != rpc {got.get(key)}")
if not any(k in want for k in ("label", "tokens")):
    sys.exit(f"in-process answer has no result: {want}")
EOF
  done
  if [[ $same == 1 ]]; then ok "$model: RPC results equal the in-process path"
  else bad "$model: RPC differs from in process" "$(cat "$WORK/rpc.json")"; fi
done

# `cellserve tokenize` gives the ids the server gives the text: sent as ids, the same answer.
TEXT="We will build a future worthy of our children, and we will do it together."
for model in cls mt tree; do
  if [[ $model == tree ]]; then
    as_ids=(--tree "$("$CELLSERVE" tokenize --model-repo "$REPO" --model tree --tree "$TEXT")")
  else
    as_ids=(--tokens "$("$CELLSERVE" tokenize --model-repo "$REPO" --model "$model" "$TEXT" | tr ' ' ,)")
  fi
  "$CELLSERVE" infer --addr "$ADDR" --model "$model" --json "$TEXT" > "$WORK/by_text.json" 2>&1
  "$CELLSERVE" infer --addr "$ADDR" --model "$model" --json "${as_ids[@]}" > "$WORK/by_ids.json" 2>&1
  if [[ "$(json_get "$WORK/by_text.json" 'json.dumps({k: j.get(k) for k in ("label", "logits", "tokens")})')" == \
        "$(json_get "$WORK/by_ids.json" 'json.dumps({k: j.get(k) for k in ("label", "logits", "tokens")})')" ]] &&
     grep -q '"model"' "$WORK/by_ids.json"; then
    ok "$model: tokenize's ids give the answer the text gives"
  else
    bad "$model: tokenize's ids differ from the server's" "$(cat "$WORK/by_text.json" "$WORK/by_ids.json")"
  fi
done

# Streaming: every token in order, then the result.
"$CELLSERVE" infer --addr "$ADDR" --model mt --stream --json "${SENTENCES[1]}" > "$WORK/stream.json" 2>&1
if [[ "$(json_get "$WORK/stream.json" 'j["streamed"] == j["tokens"] and len(j["tokens"]) > 0')" == "True" ]]; then
  ok "stream: every decoder token, in order, then the result"
else bad "stream" "$(cat "$WORK/stream.json")"; fi
check "stream prints tokens as they come" 0 "^streamed token 0: [0-9]+" -- \
  "$CELLSERVE" infer --addr "$ADDR" --model mt --stream "Hello there."
check "stream with a deadline is answered" 0 '"streamed"' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model mt --stream --timeout-ms 20000 --json "Hello there."

# Each error code from a real bad request.
check "unknown model: NOT_FOUND" 1 '"code": *"NOT_FOUND"' -- "$CELLSERVE" infer --addr "$ADDR" --model nope --json --tokens 5,6
check "wrong version: NOT_FOUND" 1 '"code": *"NOT_FOUND"' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model cls --version 9 --json --tokens 5,6
check "token out of vocabulary: INVALID_ARGUMENT" 1 '"code": *"INVALID_ARGUMENT".*vocabulary' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model cls --json --tokens 5,99999
check "malformed tree: INVALID_ARGUMENT" 1 '"code": *"INVALID_ARGUMENT"' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model tree --json --tree "((5 6) 99999)"
check "unbalanced --tree, caught before sending: exit 2 and, with --json, an INVALID_ARGUMENT object" 2 \
  '^\{"error":\{"code":"INVALID_ARGUMENT","message":"--tree: unbalanced' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model tree --json --tree "((5 6) 7"
check "a tree of ids given as text is answered as text, with a note naming --tree" 0 \
  'note: the text looks like a tree of token ids.*--tree "\(\(5 6\) 7\)"' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model tree "((5 6) 7)"
check "tree for an lstm model: INVALID_ARGUMENT" 1 '"code": *"INVALID_ARGUMENT"' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model cls --json --tree "((5 6) 7)"
LONG=$(seq -s, 10 80)  # 71 tokens > --max-tokens 64
check "too many tokens: INVALID_ARGUMENT" 1 '"code": *"INVALID_ARGUMENT".*64' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model cls --json --tokens "$LONG"
check "deadline: DEADLINE_EXCEEDED" 1 '"code": *"DEADLINE_EXCEEDED"' -- \
  "$CELLSERVE" infer --addr "$ADDR" --model slow --json --timeout-ms 1 --tokens "$(seq -s, 10 70)"
check "the server lives on after bad requests" 0 "serving" -- "$CELLSERVE" health --addr "$ADDR"

# A client killed mid-call leaves nothing behind: loadgen keeps 32 long calls in flight; kill -9.
printf '%s\n' "${SENTENCES[@]}" > "$WORK/corpus.txt"
# cleaned_up: nothing in flight and `failed` past its count before the kill (health into after.json).
# nothing_left: after.json shows no request, slot or call in flight.
nothing_left() {
  [[ "$(json_get "$WORK/after.json" "j['requests_in_flight'] == 0 and j['slots_in_use'] == 0 and j['calls_in_flight'] == 0")" == "True" ]]
}
cleaned_up() {
  "$CELLSERVE" health --addr "$ADDR" --json > "$WORK/after.json" 2>&1
  nothing_left && [[ "$(json_get "$WORK/after.json" "j['failed'] > ${failed_before:-0}")" == "True" ]]
}
killed_ok=0
for attempt in 1 2 3; do
  "$CELLSERVE" loadgen --addr "$ADDR" --model mt --corpus "$WORK/corpus.txt" --closed-loop 32 --duration-s 30 \
    --json "$WORK/killed.json" >/dev/null 2>&1 &
  LG=$!
  PIDS+=("$LG")
  wait_calls "$ADDR" 8 "$LG" "$WORK/busy.json"
  kill -9 "$LG" 2>/dev/null
  { wait "$LG"; } 2>/dev/null
  forget_pid "$LG"
  # Its calls are cancelled (answered CANCELLED inside the server, counted as failed), not run out.
  # `failed` moves after the workers let go (the request actors count the answers), so it is
  # waited for with the rest, from its count before the kill.
  failed_before=$(json_get "$WORK/busy.json" 'j["failed"]')
  if wait_for 10 cleaned_up && [[ "$(json_get "$WORK/busy.json" 'j["calls_in_flight"] > 0')" == "True" ]]; then
    killed_ok=1
    break
  fi
  # Nothing cancelled but nothing left behind: a loaded machine held loadgen back long enough for
  # every call in flight to be answered before the kill. Inconclusive: again. Anything left
  # behind fails at once.
  nothing_left || break
done
if ((killed_ok)); then
  ok "client killed mid-call: its calls are cancelled; no requests, slots or calls left behind"
else bad "client killed mid-call (attempt $attempt)" "busy: $(cat "$WORK/busy.json")" "after: $(cat "$WORK/after.json")"; fi

# loadgen: open loop, every request answered.
check "loadgen: every request answered" 0 "answered" -- "$CELLSERVE" loadgen --addr "$ADDR" --model cls \
  --corpus "$WORK/corpus.txt" --rate 100 --duration-s 2 --json "$WORK/lg.json"
if [[ "$(json_get "$WORK/lg.json" 'j["sent"] > 100 and j["answered"] == j["sent"] and j["completed"] == j["sent"] and j["unanswered"] == 0 and 0 <= j["send_lag_p99_ms"] <= j["send_lag_max_ms"] and j["error_fraction"] == 0')" == "True" ]]; then
  ok "loadgen JSON: sent = answered = completed, none unanswered, its own send lag and no errors said"
else bad "loadgen JSON" "$(cat "$WORK/lg.json")"; fi
# Errors among the answers: the latencies are the OK answers' only, and loadgen says so.
# (every other corpus line is over --max-tokens 64: INVALID_ARGUMENT)
{ echo "A short one."; printf 'word %.0s' $(seq 80); echo; } > "$WORK/half_bad.txt"
check "loadgen: latencies of OK answers only, said when errors are many" 0 \
  "% of the answers were errors: the latencies above are of the [0-9]+ OK answers only" -- \
  "$CELLSERVE" loadgen --addr "$ADDR" --model cls --corpus "$WORK/half_bad.txt" --rate 50 --duration-s 1

stop_server "$MAIN_PID" main

# Overload: a server that admits one request per device answers the rest RESOURCE_EXHAUSTED at once.
start_server small --devices 1 --max-requests 1 || exit 1
"$CELLSERVE" loadgen --addr "$ADDR" --model mt --corpus "$WORK/corpus.txt" --closed-loop 16 --duration-s 2 \
  --json "$WORK/overload.json" >/dev/null 2>&1
if [[ "$(json_get "$WORK/overload.json" 'j["errors"].get("RESOURCE_EXHAUSTED", 0) > 0 and j["completed"] > 0 and j["unanswered"] == 0')" == "True" ]]; then
  ok "overload: RESOURCE_EXHAUSTED at once, the rest complete"
else bad "overload" "$(cat "$WORK/overload.json")"; fi
stop_server "$SERVER_PID" small

# --pin-threads --idle-poll: the same answers; the spinning thread runs on the front door's core.
# (Under a cgroup CPU limit below the CPUs it may use, the server refuses --idle-poll: a failure here.)
if (( $(nproc) < 2 )); then
  echo "skip pinned, idle poll (needs 2 CPUs, this test may use $(nproc))"
elif start_server polled --devices 1 --pin-threads --idle-poll; then
  "$CELLSERVE" infer --addr "$ADDR" --model cls --json "${SENTENCES[0]}" > "$WORK/polled.json" 2>&1
  if [[ "$($PY - "$WORK/local_cls.jsonl" "$WORK/polled.json" <<'EOF'
import json, sys
want = next(json.loads(l) for l in open(sys.argv[1]) if l.strip() and json.loads(l)["line"] == 1)
print(json.load(open(sys.argv[2])).get("logits") == want["logits"])
EOF
)" == "True" ]]; then ok "pinned, idle poll: the same result as in process"
  else bad "pinned, idle poll: result" "$(cat "$WORK/polled.json")"; fi
  if grep -q "cs-idle-poll" /proc/"$SERVER_PID"/task/*/comm && grep -q -- "--idle-poll: CPU" "$WORK/polled.log"; then
    ok "pinned, idle poll: says which CPUs it keeps awake, and a cs-idle-poll thread runs"
  else bad "pinned, idle poll: no cs-idle-poll thread or no line saying so" "$(cat "$WORK/polled.log")"; fi
  stop_server "$SERVER_PID" polled
fi

# SIGTERM while the models load (a rollout that moved on): it stops between models, exits 0, and
# never serves (no port file, no "serving" line).
for i in 1 2 3 4; do
  "$CELLSERVE" model init --repo "$WORK/loading" --name "m$i" --kind lstm --hidden 512 --layers 2 --vocab 20000 \
    --classes 2 --seed "$i" >/dev/null || die "model init for the loading test"
done
rm -f "$WORK/loading.port"
"$CELLSERVE" serve --model-repo "$WORK/loading" --listen 127.0.0.1:0 --port-file "$WORK/loading.port" \
  2>"$WORK/loading.log" &
loading_pid=$!
PIDS+=("$loading_pid")
wait_for 30 or_exited "$loading_pid" grep -q "loading models" "$WORK/loading.log"
kill -TERM "$loading_pid"
wait_exit "$loading_pid" 60
if [[ $EXIT == 0 ]] && grep -q "stopped (SIGTERM or SIGINT) while loading the models; served nothing" "$WORK/loading.log" &&
  ! grep -q "serving" "$WORK/loading.log" && [[ ! -e "$WORK/loading.port" ]]; then
  ok "SIGTERM while loading: exits 0 without serving"
else bad "SIGTERM while loading: exit $EXIT" "$(cat "$WORK/loading.log")"; fi

# --stall-after-ms: a device whose round does not finish (the sim's rounds of a second stand in for
# a hung GPU's) makes health say not_ready (exit 1) and the log say which part; once its rounds
# finish, serving again. The readiness probe takes such a pod out of its Service meanwhile.
printf '{"name": "hung", "default": {"a_us": 0, "c_us": 1000000}}\n' > "$WORK/hung_profile.json"
stuck_health() {  # health exits 1, saying which part is stuck (between rounds it says serving)
  local out
  out="$("$CELLSERVE" health --addr "$ADDR" 2>&1)"
  [[ $? == 1 ]] && grep -q ": not_ready " <<<"$out" &&
    grep -qE "why: device sim:0 has had a round running without finishing one for [0-9.]+ s: it is stuck" <<<"$out"
}
if start_server hung --devices 1 --models cls --backend sim --sim-profile "$WORK/hung_profile.json" \
    --stall-after-ms 300; then
  check "stall: health says serving before any round" 0 "serving" -- "$CELLSERVE" health --addr "$ADDR"
  "$CELLSERVE" infer --addr "$ADDR" --model cls "Thanks." > "$WORK/hung_infer.txt" 2>&1 &
  infer_pid=$!
  if wait_for 20 stuck_health; then ok "stall: health exits 1 while a round is stuck, and says which part"
  else bad "stall: health never said not_ready and why while a round took 1 s" "$(cat "$WORK/hung.log")"; fi
  wait "$infer_pid"
  infer_status=$?
  if [[ $infer_status == 0 ]]; then ok "stall: the request is answered once its rounds finish"
  else bad "stall: infer exit $infer_status" "$(cat "$WORK/hung_infer.txt")"; fi
  check "stall: health says serving again once the device moves" 0 "serving" -- "$CELLSERVE" health --addr "$ADDR"
  if wait_for 5 grep -q "device sim:0 moves again; health says serving" "$WORK/hung.log" &&
    grep -q "device sim:0 has had a round running without finishing one" "$WORK/hung.log"; then
    ok "stall: the log says which part was stuck and when it moved again"
  else bad "stall: no line naming the stuck device" "$(cat "$WORK/hung.log")"; fi
  stop_server "$SERVER_PID" hung
fi

echo "$pass passed, $failures failed"
[[ $failures == 0 ]]
