#!/usr/bin/env bash
# A memory limit as Kubernetes sets one (a cgroup), for real: `cellserve serve` in a child memory
# cgroup of this process's, limited to 768 MiB, CPU devices of 128 MiB of state slots each.
#   - 2 devices (they fit): it serves (health says so), and exits 0 at SIGTERM;
#   - 8 devices (each fits alone, not all together): it refuses at start, exit 1, with
#     RESOURCE_EXHAUSTED naming the device and --state-slots; the cgroup's OOM killer never ran.
#     (Before the check counted what earlier devices took, it did: killed at start, exit 137.)
# Skipped (77) where no memory cgroup can be made here: not root, no writable cgroup v1 memory
# hierarchy, or a v2 cgroup whose parent holds processes (v2 lets only leaves hold them).
# Usage: memory_cgroup_test.sh PATH/TO/cellserve   (ctest passes it). Every wait is bounded.
set -uo pipefail
CELLSERVE="$1"
source "$(dirname "$0")/lib.sh"

skip() {
  echo "skipped: $1"
  exit 77
}

# This process's memory cgroup folder: v1 ("4:memory:/a/b") or v2 ("0::/a/b").
if line="$(grep -E '^[0-9]+:([^:]*,)?memory(,[^:]*)?:' /proc/self/cgroup)"; then
  PARENT="/sys/fs/cgroup/memory${line##*:}" LIMIT_FILE=memory.limit_in_bytes OOM_FILE=memory.oom_control
elif line="$(grep '^0::' /proc/self/cgroup)"; then
  PARENT="/sys/fs/cgroup${line#0::}" LIMIT_FILE=memory.max OOM_FILE=memory.events
else
  skip "no memory cgroup in /proc/self/cgroup"
fi
CG="$PARENT/cellserve_memtest_$$"
mkdir "$CG" 2>/dev/null || skip "cannot make a cgroup under $PARENT (needs root and a writable hierarchy)"
trap 'cleanup; rmdir "$CG" 2>/dev/null' EXIT  # lib.sh's cleanup kills and reaps first
echo $((768 << 20)) >"$CG/$LIMIT_FILE" 2>/dev/null || skip "cannot set $CG/$LIMIT_FILE"
[[ -f "$CG/cgroup.procs" ]] || skip "$CG has no cgroup.procs"

# oom_kills: how many times the cgroup's OOM killer ran ("oom_kill N"; 0 where not reported).
oom_kills() { awk '$1 == "oom_kill" {n = $2} END {print n + 0}' "$CG/$OOM_FILE" 2>/dev/null; }

REPO="$WORK/models"
"$CELLSERVE" model init --repo "$REPO" --name wide --kind lstm --hidden 512 --embed 64 --layers 1 \
  --vocab 1000 --classes 2 --seed 1 >"$WORK/model.log" 2>&1 || die "model init" "$(cat "$WORK/model.log")"

# serve_in_cgroup NAME DEVICES: starts serve in the cgroup, in the background (PID in $SERVE_PID).
serve_in_cgroup() {
  rm -f "$WORK/$1.port"
  sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$CG" \
    "$CELLSERVE" serve --model-repo "$REPO" --devices "$2" --state-slots 32768 --listen 127.0.0.1:0 \
    --port-file "$WORK/$1.port" 2>"$WORK/$1.log" &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
}

# --- 2 devices: 256 MiB of state, the weights and the rest fit in 768 MiB ---
kills_before="$(oom_kills)"
serve_in_cgroup fits 2
if wait_for 60 or_exited "$SERVE_PID" test -s "$WORK/fits.port" && ! exited "$SERVE_PID"; then
  ADDR="127.0.0.1:$(cat "$WORK/fits.port")"
  check "2 devices in 768 MiB: serving" 0 "serving" -- "$CELLSERVE" health --addr "$ADDR"
  check "2 devices in 768 MiB: an answer" 0 "label" -- "$CELLSERVE" infer --addr "$ADDR" --model wide 1 2 3
  if stop_and_wait "$SERVE_PID" 30 && [[ "$EXIT" == 0 ]]; then ok "2 devices in 768 MiB: SIGTERM, exit 0"
  else bad "2 devices in 768 MiB: exit $EXIT after SIGTERM" "$(tail -5 "$WORK/fits.log")"; fi
else
  wait_exit "$SERVE_PID" 5
  bad "2 devices in 768 MiB did not start (exit $EXIT)" "$(tail -5 "$WORK/fits.log")"
fi

# --- 8 devices: 1 GiB of state, each device's 128 MiB fitting alone ---
serve_in_cgroup too_many 8
if wait_exit "$SERVE_PID" 60; then
  out="$(cat "$WORK/too_many.log")"
  if [[ "$EXIT" == 1 && "$out" == *RESOURCE_EXHAUSTED*"device cpu:"*"may still take"*"--state-slots"* ]]; then
    ok "8 devices in 768 MiB: refused at start, naming the device and --state-slots"
  else
    bad "8 devices in 768 MiB: exit $EXIT, not the refusal expected" "$(tail -5 "$WORK/too_many.log")"
  fi
else
  bad "8 devices in 768 MiB: still running after 60 s" "$(tail -5 "$WORK/too_many.log")"
fi
kills="$(oom_kills)"
if [[ "$kills" == "$kills_before" ]]; then ok "the cgroup's OOM killer never ran"
else bad "the cgroup's OOM killer ran $((kills - kills_before)) time(s)"; fi

echo "memory_cgroup_test: $pass passed, $failures failed"
((failures == 0))
