#!/usr/bin/env bash
# `cellserve serve` under valgrind memcheck while every error path of the serving stack runs at
# least once, then SIGTERM: no invalid read or write, no use of uninitialised memory, and no
# leaked block (definite or indirect) anywhere in the process (CAF actors, Cap'n Proto front door,
# runtime, CPU kernels), on the paths the happy-path tests never take:
#   - traffic of every model kind (lstm and seq2seq through loadgen, treelstm through infer);
#   - deadlines that pass mid-request (DEADLINE_EXCEEDED: cells leave the queues, slots freed);
#   - a client killed with calls in flight (CANCELLED inside the server);
#   - a flood beyond --max-requests (RESOURCE_EXHAUSTED);
#   - bad input: a token outside the vocabulary, too many tokens, a malformed tree, an unknown
#     model;
#   - the SIGTERM drain.
# bench/soak.py runs the same mix for many minutes and watches RSS; this is its short, exact
# counterpart. About 15 s; exit 77 (skipped) without valgrind.
# Usage: serve_valgrind.sh PATH/TO/cellserve   (ctest passes it).
set -uo pipefail
CELLSERVE="$1"
source "$(dirname "$0")/lib.sh"
if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed: skipped"
  exit 77
fi

REPO="$WORK/models"
init_models "$REPO" || die "model init"
cat > "$WORK/corpus.txt" <<'EOF'
The state of the Union is strong.
We will build a future worthy of our children, and we will do it together.
Thank you.
Tonight I want to talk about the work ahead of us, the jobs we must create and the debts we must pay.
God bless America.
EOF

valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --num-callers=30 --log-file="$WORK/valgrind.log" \
  "$CELLSERVE" serve --model-repo "$REPO" --listen 127.0.0.1:0 --port-file "$WORK/port" --devices 1 \
  --max-requests 16 --max-tokens 64 2>"$WORK/serve.log" &
SERVER=$!
PIDS+=("$SERVER")
# The port file, not the "serving" line: serve writes it after that line (and valgrind is slow).
wait_for 120 or_exited "$SERVER" test -s "$WORK/port"
[[ -s "$WORK/port" ]] || die "the server under valgrind did not start within 120 s" \
  "$(cat "$WORK/serve.log")" "$(tail -30 "$WORK/valgrind.log")"
ADDR="127.0.0.1:$(cat "$WORK/port")"
LG=("$CELLSERVE" loadgen --addr "$ADDR" --corpus "$WORK/corpus.txt" --drain-s 120)  # valgrind is slow

"${LG[@]}" --model cls --rate 20 --duration-s 8 --json "$WORK/cls.json" >/dev/null 2>&1 &
CLS=$!
"${LG[@]}" --model mt --rate 10 --duration-s 8 --json "$WORK/mt.json" >/dev/null 2>&1 &
MT=$!
PIDS+=("$CLS" "$MT")
check "treelstm through infer" 0 "label" -- "$CELLSERVE" infer --addr "$ADDR" --model tree --json "Thank you."
"${LG[@]}" --model mt --rate 20 --duration-s 2 --timeout-ms 1 --json "$WORK/deadline.json" >/dev/null 2>&1
"${LG[@]}" --model cls --closed-loop 64 --duration-s 2 --json "$WORK/flood.json" >/dev/null 2>&1
check "token outside the vocabulary: INVALID_ARGUMENT" 1 "INVALID_ARGUMENT" -- \
  "$CELLSERVE" infer --addr "$ADDR" --model cls --tokens 5,99999
check "too many tokens: INVALID_ARGUMENT" 1 "INVALID_ARGUMENT" -- \
  "$CELLSERVE" infer --addr "$ADDR" --model cls --tokens "$(seq -s, 10 80)"
check "malformed tree: INVALID_ARGUMENT" 1 "INVALID_ARGUMENT" -- \
  "$CELLSERVE" infer --addr "$ADDR" --model tree --tree "((5 6) 99999)"
check "unknown model: NOT_FOUND" 1 "NOT_FOUND" -- "$CELLSERVE" infer --addr "$ADDR" --model nope --tokens 5,6
wait "$CLS" "$MT"
"${LG[@]}" --model mt --closed-loop 8 --duration-s 60 >/dev/null 2>&1 &
KILLED=$!
PIDS+=("$KILLED")
wait_calls "$ADDR" 8 "$KILLED" "$WORK/busy.json"  # the other clients are done: the 8 are its own
kill -9 "$KILLED" 2>/dev/null
{ wait "$KILLED"; } 2>/dev/null

json_ok() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$1"; }
for f in cls mt; do
  if json_ok "$WORK/$f.json" 'j["completed"] > 0 and j["unanswered"] == 0'; then ok "$f traffic: answered, none lost"
  else bad "$f traffic" "$(cat "$WORK/$f.json" 2>&1)"; fi
done
if json_ok "$WORK/deadline.json" 'j["errors"].get("DEADLINE_EXCEEDED", 0) > 0 and j["unanswered"] == 0'; then
  ok "deadlines passed mid-request: DEADLINE_EXCEEDED"
else bad "deadlines" "$(cat "$WORK/deadline.json" 2>&1)"; fi
if json_ok "$WORK/flood.json" 'j["errors"].get("RESOURCE_EXHAUSTED", 0) > 0 and j["unanswered"] == 0'; then
  ok "flood beyond --max-requests: RESOURCE_EXHAUSTED"
else bad "flood" "$(cat "$WORK/flood.json" 2>&1)"; fi
# nothing_in_flight: no request, slot or call in flight (health into health.json).
nothing_in_flight() {
  "$CELLSERVE" health --addr "$ADDR" --json > "$WORK/health.json" 2>&1
  json_ok "$WORK/health.json" 'j["requests_in_flight"] == 0 and j["slots_in_use"] == 0 and j["calls_in_flight"] == 0'
}
if wait_for 30 nothing_in_flight; then ok "after the load (a client killed mid-call among it): no request, slot or call left"
else bad "left in flight after the load" "$(cat "$WORK/health.json")"; fi

stop_and_wait "$SERVER" 120 || bad "SIGTERM: still running 120 s later" "$(tail -5 "$WORK/serve.log")"
status=$EXIT
if grep -qE "[1-9][0-9]* cancelled by clients" "$WORK/serve.log"; then ok "the killed client's calls were cancelled in the server"
else bad "no call cancelled by the killed client" "$(tail -3 "$WORK/serve.log")"; fi
if [[ $status == 0 ]]; then ok "SIGTERM: drained and exited 0 under valgrind"
elif [[ $status == 9 ]]; then bad "valgrind found errors or leaks" "$(grep -A25 -E 'Invalid|uninitialised|definitely lost in|indirectly lost in' "$WORK/valgrind.log" | head -80)"
else bad "the server's exit status $status" "$(tail -20 "$WORK/serve.log")" "$(tail -30 "$WORK/valgrind.log")"; fi
if grep -q "ERROR SUMMARY: 0 errors" "$WORK/valgrind.log" && grep -qE "definitely lost: 0 bytes|no leaks are possible" "$WORK/valgrind.log"; then
  ok "valgrind: 0 errors, nothing definitely or indirectly lost"
else bad "valgrind summary" "$(grep -E 'ERROR SUMMARY|lost:' "$WORK/valgrind.log")"; fi

echo "serve_valgrind: $pass passed, $failures failed"
[[ $failures == 0 ]]
