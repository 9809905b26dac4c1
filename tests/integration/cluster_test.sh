#!/usr/bin/env bash
# A cluster of real processes on 127.0.0.1 (`cellserve router` + `cellserve node`), driven by the
# real clients (loadgen --answers, infer, health) as a user runs them:
#   f. the router's health is not_ready (exit != 0) until a node joined, serving (exit 0) after;
#      a node's own metrics name it as it registered (cellserve_node_up{node="n1"}, nothing else);
#   a. 1 router + 2 nodes serve an lstm and a seq2seq model: every request answered once, OK, and
#      equal to the in-process path (`cellserve serve --stdin` on the same corpus lines); both
#      nodes ran some;
#   b. kill -9 of a node mid-burst loses no request: each is answered exactly once, OK (and
#      correct) or UNAVAILABLE, none unanswered; the router says the node was lost;
#   c. a node started mid-burst registers and receives work while the burst goes on;
#   d. SIGTERM of a node mid-burst: it exits 0 in bounded time, the router logs "draining" and
#      "left", and the burst sees no error at all (the other node takes the rest);
#   e. kill -9 of the router, a new one on the same ports: the surviving nodes re-register,
#      `cellserve infer` through it works again (and is correct), and both nodes get work;
#   g. SIGSTOP of a node mid-burst (cut off, its connection still open): the router drops it as
#      silent within --report-timeout-ms, its requests run on the other node, every request is
#      answered once and OK; after SIGCONT it joins again;
#   and at the end every process started here has exited and been reaped.
# Self-tests: the answer checker (cluster_check.py) rejects a corrupted reference (logits off by
# 1e-4, a wrong token), another model's reference, a missing, a duplicated and a misattributed answer.
# Usage: cluster_test.sh PATH/TO/cellserve   (ctest passes it). Every wait is bounded; every
# process is killed on exit. About 35-45 s on 2 cores.
set -uo pipefail
CELLSERVE="$1"
source "$(dirname "$0")/lib.sh"
CHECK=(/usr/bin/python3 "$(dirname "$0")/cluster_check.py")
T0=$SECONDS

has_line() { grep -qE -- "$2" "$1" 2>/dev/null; }
# registered_times NAME N: node NAME's log says "registered with router $CADDR" at least N times.
registered_times() { (($(grep -c "registered with router $CADDR" "$WORK/$1.log" 2>/dev/null) >= $2)); }
# joined_times NAME ROUTER_LOG N: the router says "node NAME joined" at least N times.
joined_times() { (($(grep -c "node $1 joined" "$2" 2>/dev/null) >= $3)); }

# start_router NAME CLUSTER_ADDR LISTEN_ADDR [FLAGS...]: sets ROUTER_PID, RADDR (clients), CADDR (nodes).
start_router() {
  local name="$1"
  rm -f "$WORK/$name.port" "$WORK/$name.cport"
  "$CELLSERVE" router --cluster "$2" --listen "$3" --port-file "$WORK/$name.port" \
    --cluster-port-file "$WORK/$name.cport" "${@:4}" 2>"$WORK/$name.log" &
  ROUTER_PID=$!
  PIDS+=("$ROUTER_PID")
  if ! wait_for 30 test -s "$WORK/$name.port"; then
    die "router $name did not start" "$(cat "$WORK/$name.log")"
  fi
  RADDR="127.0.0.1:$(cat "$WORK/$name.port")"
  CADDR="127.0.0.1:$(cat "$WORK/$name.cport")"
}

# start_node NAME [FLAGS...]: a node joining $CADDR (its own RPC port in $WORK/NAME.port); sets
# NODE_PID. Does not wait for it to register (wait_registered does).
start_node() {
  local name="$1"
  rm -f "$WORK/$name.port"
  "$CELLSERVE" node --join "$CADDR" --model-repo "$REPO" --listen 127.0.0.1:0 --port-file "$WORK/$name.port" \
    --node-name "$name" --devices 1 --backend cpu "${@:2}" 2>"$WORK/$name.log" &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
}
# wait_registered NAME ROUTER_LOG [N]: the node says it registered (the N-th time; default 1) and
# the router that it joined.
wait_registered() {
  local name="$1" log="$2" times="${3:-1}"
  if wait_for 30 registered_times "$name" "$times" && wait_for 10 has_line "$log" "node $name joined"; then
    ok "node $name registered with the router$( ((times > 1)) && echo " again") (router log: $(basename "$log" .log): joined)"
  else
    die "node $name did not register" "node: $(cat "$WORK/$name.log")" "router: $(cat "$log")"
  fi
}
# completed_on NAME: requests the node completed so far (its own health; router runs count).
completed_on() {
  "$CELLSERVE" health --addr "127.0.0.1:$(cat "$WORK/$1.port")" --json 2>/dev/null |
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["completed"])' 2>/dev/null || echo -1
}
# runs_at_exit NAME: N of the node's exit line "N run(s) for routers" (-1 if absent).
runs_at_exit() {
  local n
  n="$(grep -oE '[0-9]+ run\(s\) for routers' "$WORK/$1.log" | grep -oE '^[0-9]+')"
  echo "${n:--1}"
}

# loadgen NAME RATE SECONDS: an open-loop burst through the router in the background, of the
# model NAME ends with (_cls, _mt); its answers in $WORK/NAME.ans, summary in NAME.json, stderr in
# NAME.lg. Each burst has its own seed (the same every run). Sets LG_PID.
SEED=0
loadgen() {
  local name="$1" rate="$2" secs="$3"
  SEED=$((SEED + 1))
  "$CELLSERVE" loadgen --addr "$RADDR" --model "${name##*_}" --corpus "$WORK/corpus.txt" --rate "$rate" \
    --duration-s "$secs" --drain-s 20 --seed "$SEED" --answers "$WORK/$name.ans" \
    --json "$WORK/$name.json" >/dev/null 2>"$WORK/$name.lg" &
  LG_PID=$!
  PIDS+=("$LG_PID")
}
# finish_loadgen NAME PID WANT_EXIT [--allow CODE]...: waits (bounded) for its exit status, then
# checks its answers (cluster_check.py).
finish_loadgen() {
  local name="$1" pid="$2" want="$3"
  shift 3
  local model="${name##*_}" out
  if ! wait_exit "$pid" 60 || [[ "$EXIT" != "$want" ]]; then
    bad "$name: loadgen exit $EXIT (want $want)" "$(tail -5 "$WORK/$name.lg")"
  fi
  if out="$("${CHECK[@]}" answers "$WORK/$name.ans" "$WORK/ref_$model.jsonl" "$WORK/$name.json" "$@" 2>&1)"; then
    ok "$name: $out"
  else
    bad "$name: answers" "$out" "$(tail -3 "$WORK/$name.lg")"
    return 1
  fi
}
# summary_is NAME PYTHON_EXPR: the expression over the loadgen summary `j` is true.
summary_is() {
  [[ "$(/usr/bin/python3 -c "import json, sys; j = json.load(open(sys.argv[1])); print(bool($2))" "$WORK/$1.json" 2>&1)" == True ]]
}

# Two small models, a corpus of distinct sentences (one blank line, so corpus lines and requests
# are numbered differently), and the in-process reference for every line.
REPO="$WORK/models"
"$CELLSERVE" model init --repo "$REPO" --name cls --kind lstm --hidden 64 --layers 2 --vocab 5000 \
  --classes 3 --seed 4 --init-scale 0.3 >/dev/null &&
  "$CELLSERVE" model init --repo "$REPO" --name mt --kind seq2seq --hidden 48 --layers 2 --vocab 5000 \
    --target-vocab 300 --max-decode-len 20 --seed 5 --init-scale 0.3 >/dev/null || die "model init"
/usr/bin/python3 - "$WORK/corpus.txt" <<'EOF'
import random, sys
words = ("the state of our union is strong we will build a future worthy children and do it together people "
         "congress nation freedom peace work jobs tax health care america world years ago fellow citizens "
         "government law trade war hope justice").split()
rng = random.Random(11)
lines = set()
with open(sys.argv[1], "w") as f:
    for i in range(80):
        if i == 3:
            f.write("\n")
            continue
        while True:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(2, 30))).capitalize() + "."
            if s not in lines:
                break
        lines.add(s)
        f.write(s + "\n")
EOF
for model in cls mt; do
  sed "s/^/$model\t/" "$WORK/corpus.txt" > "$WORK/in_$model.txt"
  timeout 60 "$CELLSERVE" serve --stdin --model-repo "$REPO" --models "$model" < "$WORK/in_$model.txt" \
    > "$WORK/ref_$model.jsonl" 2>"$WORK/ref_$model.log" || die "serve --stdin ($model)" "$(cat "$WORK/ref_$model.log")"
done
[[ "$(grep -c '"label"' "$WORK/ref_cls.jsonl")" == 79 && "$(grep -c '"tokens"' "$WORK/ref_mt.jsonl")" == 79 ]] ||
  die "reference: want 79 results per model" "$(head -3 "$WORK/ref_cls.jsonl" "$WORK/ref_mt.jsonl")"

# f. Health: not_ready before any node joined.
start_router r1 127.0.0.1:0 127.0.0.1:0
check "router health before any node joined: not_ready, exit != 0" 1 "not_ready" -- \
  "$CELLSERVE" health --addr "$RADDR"
N1_METRICS="$(free_port)"
start_node n1 --metrics-port "$N1_METRICS" --metrics-host 127.0.0.1
N1=$NODE_PID
start_node n2
N2=$NODE_PID
wait_registered n1 "$WORK/r1.log"
wait_registered n2 "$WORK/r1.log"
# A node's own node_up series has the name it registered under (as its router's has), and only it.
if up="$(http_get "http://127.0.0.1:$N1_METRICS/metrics" 2>&1 | grep '^cellserve_node_up')" &&
  [[ "$up" == 'cellserve_node_up{node="n1"} 1' ]]; then
  ok "node n1's own metrics: node_up under its registered name only"
else bad "node n1's own metrics: want cellserve_node_up{node=\"n1\"} 1 alone" "$up" "$(tail -3 "$WORK/n1.log")"; fi
if wait_for 10 "$CELLSERVE" health --addr "$RADDR" >/dev/null 2>&1; then
  check "router health once nodes joined: serving, exit 0" 0 "serving" -- "$CELLSERVE" health --addr "$RADDR"
else bad "router health never became serving" "$("$CELLSERVE" health --addr "$RADDR" 2>&1)"; fi

# a. ~200 requests of each model through the router: all OK, equal to the in-process path.
loadgen a_cls 100 2
A1=$LG_PID
loadgen a_mt 100 2
A2=$LG_PID
finish_loadgen a_cls "$A1" 0
finish_loadgen a_mt "$A2" 0
if summary_is a_cls 'j["sent"] >= 120 and j["completed"] == j["sent"]' &&
  summary_is a_mt 'j["sent"] >= 120 and j["completed"] == j["sent"]'; then
  ok "a: about 200 requests of each model, all completed"
else bad "a: loadgen summaries" "$(cat "$WORK/a_cls.json" "$WORK/a_mt.json")"; fi
c1="$(completed_on n1)"
c2="$(completed_on n2)"
if ((c1 > 0 && c2 > 0)); then ok "a: both nodes ran requests (n1 $c1, n2 $c2)"
else bad "a: a node got no work (n1 $c1, n2 $c2)"; fi

# Self-tests: the checker catches a wrong reference, a missing, a duplicated and a misattributed answer.
for m in cls mt; do  # a corrupted reference that was never written would be "rejected" too
  "${CHECK[@]}" corrupt "$WORK/ref_$m.jsonl" "$WORK/bad_$m.jsonl" && [[ -s "$WORK/bad_$m.jsonl" ]] ||
    die "self-test setup: cluster_check.py corrupt wrote no $WORK/bad_$m.jsonl"
done
if ! "${CHECK[@]}" answers "$WORK/a_cls.ans" "$WORK/bad_cls.jsonl" "$WORK/a_cls.json" >/dev/null 2>&1 &&
  ! "${CHECK[@]}" answers "$WORK/a_mt.ans" "$WORK/bad_mt.jsonl" "$WORK/a_mt.json" >/dev/null 2>&1 &&
  ! "${CHECK[@]}" answers "$WORK/a_mt.ans" "$WORK/ref_cls.jsonl" "$WORK/a_mt.json" >/dev/null 2>&1; then
  ok "self-test: the checker rejects a corrupted (logits + 1e-4, last token + 1) or wrong model's reference"
else bad "self-test: the checker accepted a corrupted reference"; fi
sed 1d "$WORK/a_cls.ans" > "$WORK/dropped.ans"
{ cat "$WORK/a_cls.ans"; head -1 "$WORK/a_cls.ans"; } > "$WORK/twice.ans"
sed -E 's/"line":([0-9]+)/"line":1\1/' "$WORK/a_cls.ans" > "$WORK/shifted.ans"  # line k -> 1k: another sentence
if ! "${CHECK[@]}" answers "$WORK/dropped.ans" "$WORK/ref_cls.jsonl" "$WORK/a_cls.json" >/dev/null 2>&1 &&
  ! "${CHECK[@]}" answers "$WORK/twice.ans" "$WORK/ref_cls.jsonl" "$WORK/a_cls.json" >/dev/null 2>&1 &&
  ! "${CHECK[@]}" answers "$WORK/shifted.ans" "$WORK/ref_cls.jsonl" "$WORK/a_cls.json" >/dev/null 2>&1; then
  ok "self-test: the checker rejects a missing, a duplicated and a misattributed (wrong corpus line) answer"
else bad "self-test: the checker accepted a missing, duplicated or misattributed answer"; fi

# b. kill -9 of n1 in the middle of a 300 req/s burst: nothing lost.
loadgen b_cls 200 4
B1=$LG_PID
loadgen b_mt 100 4
B2=$LG_PID
sleep 2
kill -9 "$N1"
wait_exit "$N1" 10
finish_loadgen b_cls "$B1" 0 --allow UNAVAILABLE
finish_loadgen b_mt "$B2" 0 --allow UNAVAILABLE
if wait_for 10 has_line "$WORK/r1.log" "node n1 was lost"; then
  ok "b: router log: $(grep -oE 'node n1 was lost.*' "$WORK/r1.log")"
else bad "b: the router did not notice n1 was killed" "$(cat "$WORK/r1.log")"; fi

# c. n3 started in the middle of a burst registers and receives work while the burst runs (15 s
# at a moderate rate: n3's start and registration may take several seconds on a loaded machine).
loadgen c_cls 40 15
C1=$LG_PID
loadgen c_mt 25 15
C2=$LG_PID
sleep 1
CT0=$SECONDS
start_node n3
N3=$NODE_PID
wait_registered n3 "$WORK/r1.log"
c3=0
while kill -0 "$C1" 2>/dev/null || kill -0 "$C2" 2>/dev/null; do
  c3="$(completed_on n3)"
  ((c3 > 0)) && break
  sleep 0.5
done
if ((c3 > 0)); then ok "c: n3, started mid-burst, registered and ran requests while the burst went on"
else bad "c: n3 got no work during the burst (registered $((SECONDS - CT0)) s after it started)" "$(cat "$WORK/n3.log")"; fi
finish_loadgen c_cls "$C1" 0
finish_loadgen c_mt "$C2" 0

# d. SIGTERM of n3 in the middle of a burst: it drains and leaves; the burst sees no error.
loadgen d_cls 150 4
D1=$LG_PID
loadgen d_mt 80 4
D2=$LG_PID
sleep 1.5
if stop_and_wait "$N3" 20 && [[ "$EXIT" == 0 ]]; then ok "d: n3 exited 0 within 20 s of SIGTERM"
else bad "d: n3 after SIGTERM: exit $EXIT" "$(cat "$WORK/n3.log")"; fi
finish_loadgen d_cls "$D1" 0
finish_loadgen d_mt "$D2" 0
if summary_is d_cls 'j["errors"] == {} and j["unanswered"] == 0' &&
  summary_is d_mt 'j["errors"] == {} and j["unanswered"] == 0'; then
  ok "d: the burst during the drain saw 0 errors, 0 unanswered"
else bad "d: errors during the drain" "$(cat "$WORK/d_cls.json" "$WORK/d_mt.json")"; fi
if wait_for 10 has_line "$WORK/r1.log" "node n3 is draining" && wait_for 10 has_line "$WORK/r1.log" "node n3 left"; then
  ok "d: router log: n3 is draining, then left"
else bad "d: router log lacks n3 draining/left" "$(cat "$WORK/r1.log")"; fi
r3="$(runs_at_exit n3)"
if ((r3 > 0)); then ok "c/d: n3's exit line: $r3 run(s) for routers"
else bad "c/d: n3's exit line" "$(tail -3 "$WORK/n3.log")"; fi

# e. kill -9 of the router; a new one on the same ports gets both surviving nodes (n2 and n4, a
# new one) back and serves again.
start_node n4
N4=$NODE_PID
wait_registered n4 "$WORK/r1.log"
RPORT="${RADDR##*:}"
CPORT="${CADDR##*:}"
kill -9 "$ROUTER_PID"
wait_exit "$ROUTER_PID" 10
# The new router keeps its cores awake (--idle-poll; a cgroup CPU limit below them would refuse it).
start_router r2 "127.0.0.1:$CPORT" "127.0.0.1:$RPORT" --idle-poll
if grep -q "cs-idle-poll" /proc/"$ROUTER_PID"/task/*/comm && grep -q -- "--idle-poll: CPU" "$WORK/r2.log"; then
  ok "e: the new router says which CPUs it keeps awake, and a cs-idle-poll thread runs"
else bad "e: router --idle-poll: no cs-idle-poll thread or no line saying so" "$(cat "$WORK/r2.log")"; fi
wait_registered n2 "$WORK/r2.log" 2
wait_registered n4 "$WORK/r2.log" 2
if wait_for 15 "$CELLSERVE" health --addr "$RADDR" >/dev/null 2>&1; then
  ok "e: the new router serves again"
else bad "e: the new router is not serving" "$("$CELLSERVE" health --addr "$RADDR" 2>&1)" "$(cat "$WORK/r2.log")"; fi
LINE=10  # 0-based corpus line
"$CELLSERVE" infer --addr "$RADDR" --model cls --json "$(sed -n "$((LINE + 1))p" "$WORK/corpus.txt")" \
  > "$WORK/e.json" 2>&1
/usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print(json.dumps({"i": 0, "line": int(sys.argv[2]), "code": "OK", "label": j.get("label"), "logits": j.get("logits")}))
' "$WORK/e.json" "$LINE" > "$WORK/e.ans" 2>/dev/null
echo '{"sent": 1, "completed": 1, "errors": {}, "unanswered": 0}' > "$WORK/e_summary.json"
if out="$("${CHECK[@]}" answers "$WORK/e.ans" "$WORK/ref_cls.jsonl" "$WORK/e_summary.json" 2>&1)"; then
  ok "e: cellserve infer through the restarted router equals the in-process result"
else bad "e: infer through the restarted router" "$(cat "$WORK/e.json")" "$out"; fi

# Both re-registered nodes take work from the new router.
b2="$(completed_on n2)"
b4="$(completed_on n4)"
loadgen e_cls 60 1.5
finish_loadgen e_cls "$LG_PID" 0
e2="$(completed_on n2)"
e4="$(completed_on n4)"
if ((e2 > b2 && e4 > b4)); then ok "e: both nodes run requests from the new router"
else bad "e: a node got no work from the new router (completed: n2 $b2 -> $e2, n4 $b4 -> $e4)"; fi

# g. SIGSTOP of n4 in the middle of a burst: a node cut off with its connection open. The router
# drops it as silent (the default --report-timeout-ms, 3 s) and runs its requests on n2: all
# answered, once, OK. After SIGCONT, n4's next load report is answered "register again", and it
# joins again.
joined="$(grep -c "node n4 joined" "$WORK/r2.log")"
loadgen g_cls 40 5
sleep 0.5
kill -STOP "$N4"
if wait_for 10 has_line "$WORK/r2.log" "node n4 went silent"; then
  line="$(grep -m1 "node n4 went silent" "$WORK/r2.log")"
  moved="$(grep -oE '[0-9]+ request\(s\) in flight' <<<"$line" | grep -oE '^[0-9]+')"
  if ((${moved:-0} > 0)); then ok "g: router log: ${line#cellserve router: }"
  else bad "g: the stopped n4 held no request, so nothing was retried" "$line"; fi
else bad "g: the router did not drop the stopped n4" "$(tail -5 "$WORK/r2.log")"; fi
finish_loadgen g_cls "$LG_PID" 0
kill -CONT "$N4"
if wait_for 15 joined_times n4 "$WORK/r2.log" $((joined + 1)); then ok "g: n4 joined again after SIGCONT"
else bad "g: n4 did not join again after SIGCONT" "$(tail -5 "$WORK/r2.log")" "$(tail -5 "$WORK/n4.log")"; fi

# The end: n2, n4 and the router drain and exit 0; nothing started here is left running.
kill -TERM "$N2" "$N4"
for n in n2 n4; do
  pid=$N2
  [[ $n == n4 ]] && pid=$N4
  if wait_exit "$pid" 20 && [[ "$EXIT" == 0 ]]; then ok "$n: SIGTERM, exit 0 ($(runs_at_exit $n) run(s) for routers)"
  else bad "$n after SIGTERM: exit $EXIT" "$(tail -5 "$WORK/$n.log")"; fi
done
if stop_and_wait "$ROUTER_PID" 20 && [[ "$EXIT" == 0 ]]; then ok "router r2: SIGTERM, exit 0"
else bad "router r2 after SIGTERM: exit $EXIT" "$(tail -5 "$WORK/r2.log")"; fi
alive=()  # PIDS holds those not reaped by wait_exit yet (a zombie answers kill -0 too)
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null && alive+=("$pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)")
done
if ((${#alive[@]} == 0)); then ok "every process started here has exited and been reaped"
else bad "processes still alive (or not reaped)" "${alive[@]}"; fi

echo "$pass passed, $failures failed ($((SECONDS - T0)) s)"
[[ $failures == 0 ]]
