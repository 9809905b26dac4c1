# The shared harness of the integration scripts (source it; it sets `set -uo pipefail`):
#   WORK    a temp folder, removed on exit
#   PIDS    processes to kill -9 on exit (append the ones you start)
#   ok / bad / die / check   report a check and count failures (and passes)
#   free_port, http_get URL  a free TCP port on 127.0.0.1; a body over HTTP (python3, 5 s bound)
#   json_get FILE EXPR       a Python expression over the JSON object `j` read from FILE
#   wait_for SECONDS COMMAND...  polls COMMAND until it succeeds (on timeout: the last try's status)
#   exited PID / or_exited PID COMMAND...  predicates for wait_for: PID has exited / or COMMAND succeeds
#   wait_exit PID SECONDS    waits (bounded) for a child to exit: its status in EXIT, or "timeout"
#   stop_and_wait PID SECONDS  SIGTERM, then wait_exit
#   wait_calls ADDR N PID OUT  until the server at ADDR holds N calls (health to OUT), PID exits or
#                              30 s pass (needs $CELLSERVE)
#   init_models REPO         the small models the RPC-level tests share (needs $CELLSERVE)
# Scripts end with their own summary from $pass and $failures.
set -uo pipefail
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
# bash runs no EXIT trap when a signal kills it: turn them into exits, so a cancelled run or a
# `timeout` still kills the servers it started and removes $WORK.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
failures=0
pass=0

ok() { echo "ok   $1"; pass=$((pass + 1)); }
# bad NAME [OUTPUT...]: a failed check, with its output indented.
bad() {
  echo "FAIL $1"
  shift
  [[ $# -gt 0 ]] && sed 's/^/    /' <<<"$*" | head -40
  failures=$((failures + 1))
}
# die NAME [OUTPUT...]: a failure after which nothing else can be checked.
die() {
  bad "$@"
  echo "$(basename "$0" .sh): stopped at the failure above"
  exit 1
}
# check NAME EXPECTED_STATUS PATTERN -- COMMAND...: the command's exit status and output.
check() {
  local name="$1" want="$2" pattern="$3"
  shift 4
  local out status
  out="$("$@" 2>&1)"
  status=$?
  if [[ "$status" != "$want" ]] || ! grep -qE -- "$pattern" <<<"$out"; then
    bad "$name: exit $status (want $want), output lacks /$pattern/:" "$out"
  else
    ok "$name"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# http_get URL: the body on stdout; non-zero exit on any failure.
http_get() {
  python3 - "$1" <<'PYEOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.stdout.write(r.read().decode())
except Exception as e:
    sys.stderr.write(f"GET {sys.argv[1]}: {e}\n")
    sys.exit(1)
PYEOF
}

# init_models REPO: cls (lstm, 3 classes), mt (seq2seq, up to 40 tokens out) and tree (treelstm,
# 5 classes), small and fixed-seed, into the model repository REPO. Non-zero exit if one fails.
init_models() {
  "$CELLSERVE" model init --repo "$1" --name cls --kind lstm --hidden 64 --layers 2 --vocab 5000 \
    --classes 3 --seed 4 --init-scale 0.3 >/dev/null &&
    "$CELLSERVE" model init --repo "$1" --name mt --kind seq2seq --hidden 48 --layers 2 --vocab 5000 \
      --target-vocab 300 --max-decode-len 40 --seed 5 --init-scale 0.3 >/dev/null &&
    "$CELLSERVE" model init --repo "$1" --name tree --kind treelstm --hidden 32 --vocab 5000 \
      --classes 5 --seed 6 --init-scale 0.3 >/dev/null
}

# json_get FILE EXPR: evaluates a Python expression over the JSON object `j` read from FILE.
json_get() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds, for SECONDS (to SECONDS
# + 1: $SECONDS counts whole seconds) of wall time however long COMMAND takes; on timeout, the
# status of a last try.
wait_for() {
  local deadline=$((SECONDS + $1 + 1))
  shift
  while ((SECONDS < deadline)); do
    "$@" && return 0
    sleep 0.1
  done
  "$@"
}
# exited PID: the process PID is no longer running.
exited() { ! kill -0 "$1" 2>/dev/null; }
# or_exited PID COMMAND...: COMMAND succeeds or PID has exited (for wait_for: stop early when the
# process waited on died; check the condition again after).
or_exited() {
  local pid="$1"
  shift
  "$@" || exited "$pid"
}
# wait_exit PID SECONDS: waits for PID (a child) to exit; sets EXIT to its status, or to "timeout"
# (then kills it with -9 and reaps it). Status 0 when it exited by itself.
wait_exit() {
  local pid="$1"
  if ! wait_for "$2" exited "$pid"; then
    kill -9 "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null
    forget_pid "$pid"
    EXIT=timeout
    return 1
  fi
  { wait "$pid"; } 2>/dev/null  # no "Killed" line from the shell for the ones killed on purpose
  EXIT=$?
  forget_pid "$pid"
  return 0
}
# forget_pid PID: takes a reaped PID off PIDS, so cleanup's kill -9 cannot hit a process that
# has taken its number since.
forget_pid() {
  local kept=() p
  for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}
# stop_and_wait PID SECONDS: SIGTERM to PID (a child), then wait_exit PID SECONDS: EXIT is its exit
# status, or "timeout" (killed with -9). Status 0 when it exited within SECONDS.
stop_and_wait() {
  kill -TERM "$1" 2>/dev/null
  wait_exit "$1" "$2"
}

# calls_at_least ADDR N OUT: the server at ADDR holds N calls in flight (its `health --json` into OUT).
calls_at_least() {
  "$CELLSERVE" health --addr "$1" --json > "$3" 2>/dev/null
  [[ "$(json_get "$3" "j[\"calls_in_flight\"] >= $2")" == "True" ]]
}
# wait_calls ADDR N PID OUT: polls `health --json` (into OUT) until the server holds N calls in
# flight, the client PID has exited, or 30 s have passed (status 1; callers go on): a client to be
# killed mid-call is killed once its calls are there, however slowly a loaded machine started it.
wait_calls() { wait_for 30 or_exited "$3" calls_at_least "$1" "$2" "$4"; }
