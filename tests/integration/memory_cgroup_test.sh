#!/usr/bin/env bash
# A memory limit as Kubernetes sets one (a cgroup), for real: `cellserve serve` in a child memory
# cgroup of this process's, limited to 768 MiB, CPU devices of 128 MiB of state slots each.
#   - 2 devices (they fit): it serves (health says so), and exits 0 at SIGTERM;
#   - 8 devices (each fits alone, not all together): it refuses at start, exit 1, with
#     RESOURCE_EXHAUSTED naming the device and --state-slots; the cgroup's OOM killer never ran.
#     (Before the check counted what earlier devices took, it did: killed at start, exit 137.)
#   - a model whose folded token table (781 MiB) does not fit: refused naming --fold-max-mib,
#     not killed.
# Swap is turned off in the cgroup where the kernel allows, so too much memory is an OOM kill,
# not swapping. Skipped (77) where no memory cgroup can be made here: not root, no writable cgroup
# v1 memory hierarchy or v2 mount, a v2 cgroup whose parent holds processes (v2 lets only leaves
# hold them), or a limit above it (or the machine) under 1.5 GiB, which would be tested instead.
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
  ROOT=/sys/fs/cgroup/memory FS=cgroupfs LIMIT_FILE=memory.limit_in_bytes OOM_FILE=memory.oom_control
  SWAP_FILE=memory.memsw.limit_in_bytes SWAP_VALUE=$((768 << 20))  # memory and swap together
  PARENT="$ROOT${line##*:}"
elif line="$(grep '^0::' /proc/self/cgroup)"; then
  ROOT=/sys/fs/cgroup FS=cgroup2fs LIMIT_FILE=memory.max OOM_FILE=memory.events
  SWAP_FILE=memory.swap.max SWAP_VALUE=0
  PARENT="$ROOT${line#0::}"
else
  skip "no memory cgroup in /proc/self/cgroup"
fi
PARENT="${PARENT%/}"
[[ "$(stat -fc %T "$PARENT" 2>/dev/null)" == "$FS" ]] || skip "$PARENT is not on a $FS mount"
# A limit above (or a small machine) would be what is tested: skip under 1.5 GiB.
machine_kb="$(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)"
((machine_kb >= 1536 * 1024)) || skip "the machine has under 1.5 GiB"
dir="$PARENT"
while [[ "$dir" == "$ROOT"* ]]; do
  limit="$(cat "$dir/$LIMIT_FILE" 2>/dev/null)"
  if [[ "$limit" =~ ^[0-9]+$ ]] && ((limit < (1536 << 20))); then
    skip "$dir limits memory to $((limit >> 20)) MiB, under 1.5 GiB"
  fi
  [[ "$dir" == "$ROOT" ]] && break
  dir="${dir%/*}"
done
CG="$PARENT/cellserve_memtest_$$"
mkdir "$CG" 2>/dev/null || skip "cannot make a cgroup under $PARENT (needs root and a writable hierarchy)"
# At exit: lib.sh's cleanup kills and reaps what this script started; then whatever is left in
# the cgroup, and the cgroup itself.
remove_cgroup() {
  local pid
  for pid in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  for _ in $(seq 50); do [[ -s "$CG/cgroup.procs" ]] || break; sleep 0.1; done
  rmdir "$CG" 2>/dev/null || echo "memory_cgroup_test: could not remove $CG" >&2
}
trap 'cleanup; remove_cgroup' EXIT
echo $((768 << 20)) >"$CG/$LIMIT_FILE" 2>/dev/null || skip "cannot set $CG/$LIMIT_FILE"
[[ -f "$CG/cgroup.procs" ]] || skip "$CG has no cgroup.procs"
[[ -f "$CG/$SWAP_FILE" ]] && echo "$SWAP_VALUE" >"$CG/$SWAP_FILE" 2>/dev/null  # best effort

# oom_kills: how many times the cgroup's OOM killer ran ("oom_kill N"; 0 where not reported).
oom_kills() { awk '$1 == "oom_kill" {n = $2} END {print n + 0}' "$CG/$OOM_FILE" 2>/dev/null; }

REPO="$WORK/models"
"$CELLSERVE" model init --repo "$REPO" --name wide --kind lstm --hidden 512 --embed 64 --layers 1 \
  --vocab 1000 --classes 2 --seed 1 >"$WORK/model.log" 2>&1 || die "model init" "$(cat "$WORK/model.log")"

# A vocabulary of 100000: a folded table of 100000 x 2048 gates x 4 bytes, 781 MiB.
"$CELLSERVE" model init --repo "$WORK/big_vocab" --name big --kind lstm --hidden 512 --embed 64 --layers 1 \
  --vocab 100000 --classes 2 --seed 1 >"$WORK/model.log" 2>&1 || die "model init (big)" "$(cat "$WORK/model.log")"

# serve_in_cgroup NAME REPO DEVICES [FLAGS...]: starts serve in the cgroup, in the background
# (PID in $SERVE_PID).
serve_in_cgroup() {
  local name="$1" repo="$2" devices="$3"
  shift 3
  rm -f "$WORK/$name.port"
  sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$CG" \
    "$CELLSERVE" serve --model-repo "$repo" --devices "$devices" --state-slots 32768 --listen 127.0.0.1:0 \
    --port-file "$WORK/$name.port" "$@" 2>"$WORK/$name.log" &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
}

# --- 2 devices: 256 MiB of state, the weights and the rest fit in 768 MiB ---
kills_before="$(oom_kills)"
serve_in_cgroup fits "$REPO" 2
if wait_for 60 or_exited "$SERVE_PID" test -s "$WORK/fits.port" && ! exited "$SERVE_PID"; then
  ADDR="127.0.0.1:$(cat "$WORK/fits.port")"
  check "2 devices in 768 MiB: serving" 0 "serving" -- "$CELLSERVE" health --addr "$ADDR" --timeout-ms 10000
  check "2 devices in 768 MiB: an answer" 0 "label" -- "$CELLSERVE" infer --addr "$ADDR" --model wide \
    --timeout-ms 10000 1 2 3
  if grep -q "more may be taken, of a 768 MiB limit (the cgroup's)" "$WORK/fits.log"; then
    ok "2 devices in 768 MiB: the start-up memory line names the cgroup's limit"
  else bad "2 devices in 768 MiB: no memory line naming the cgroup's limit" "$(cat "$WORK/fits.log")"; fi
  if stop_and_wait "$SERVE_PID" 30 && [[ "$EXIT" == 0 ]]; then ok "2 devices in 768 MiB: SIGTERM, exit 0"
  else bad "2 devices in 768 MiB: exit $EXIT after SIGTERM" "$(tail -5 "$WORK/fits.log")"; fi
else
  wait_exit "$SERVE_PID" 5
  bad "2 devices in 768 MiB did not start (exit $EXIT)" "$(tail -5 "$WORK/fits.log")"
fi

# --- 8 devices: 1 GiB of state, each device's 128 MiB fitting alone ---
serve_in_cgroup too_many "$REPO" 8
if wait_exit "$SERVE_PID" 30; then
  out="$(cat "$WORK/too_many.log")"
  if [[ "$EXIT" == 1 && "$out" == *RESOURCE_EXHAUSTED*"device cpu:"*"may still take"*"--state-slots"* ]]; then
    ok "8 devices in 768 MiB: refused at start, naming the device and --state-slots"
  else
    bad "8 devices in 768 MiB: exit $EXIT, not the refusal expected" "$(tail -5 "$WORK/too_many.log")"
  fi
else
  bad "8 devices in 768 MiB: still running after 30 s" "$(tail -5 "$WORK/too_many.log")"
fi
# --- one device, a folded table larger than the limit (--fold-max-mib raised to allow it) ---
serve_in_cgroup big_table "$WORK/big_vocab" 1 --fold-max-mib 1024
if wait_exit "$SERVE_PID" 30; then
  if [[ "$EXIT" == 1 && "$(cat "$WORK/big_table.log")" == *"folded token tables"*"--fold-max-mib"* ]]; then
    ok "a 781 MiB folded table in 768 MiB: refused at start, naming --fold-max-mib"
  else
    bad "a 781 MiB folded table in 768 MiB: exit $EXIT, not the refusal expected" "$(tail -5 "$WORK/big_table.log")"
  fi
else
  bad "a 781 MiB folded table in 768 MiB: still running after 30 s" "$(tail -5 "$WORK/big_table.log")"
fi
kills="$(oom_kills)"
if [[ "$kills" == "$kills_before" ]]; then ok "the cgroup's OOM killer never ran"
else bad "the cgroup's OOM killer ran $((kills - kills_before)) time(s)"; fi

echo "memory_cgroup_test: $pass passed, $failures failed"
((failures == 0))
