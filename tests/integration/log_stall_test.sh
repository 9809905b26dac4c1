#!/usr/bin/env bash
# A log pipe that nobody reads (a log collector that fell behind) must not stop serving. A router
# runs with standard error into a pipe whose reader never reads, filled to the brim first, as
# 64 KiB of lines written since the collector stalled leave it. Then a node joins: the router logs
# "node ... joined" on its actor, which runs on CAF's network thread. The node registers, and
# `infer` and `health` through the router answer; once the pipe is read, the line arrives. Before
# (every line a blocking write on the thread that logged), the router's actor blocked in that
# write and every call through it failed. The RPC loop's lines (`serve`) go the same way
# (monitoring/log.h; its unit tests stall a pipe directly).
# Usage: log_stall_test.sh PATH/TO/cellserve   (ctest passes it). Every wait is bounded.
set -uo pipefail
CELLSERVE="$1"
source "$(dirname "$0")/lib.sh"
T0=$SECONDS
REPO="$WORK/repo"
init_models "$REPO" || die "model init failed"

# fill_pipe PID: fills the pipe behind PID's standard error until it takes nothing more.
fill_pipe() {
  /usr/bin/python3 - "$1" <<'PY'
import errno, os, sys
fd = os.open(f"/proc/{sys.argv[1]}/fd/2", os.O_WRONLY | os.O_NONBLOCK)
line = b"filler: a log line the collector has not read yet\n"
n = 0
try:
    while True:
        n += os.write(fd, line)
except BlockingIOError:
    pass
print(n)
PY
}
# read_pipe READER_PID SECONDS: what the pipe read by READER_PID (which never reads) holds, read
# for SECONDS (the writer refills it as it drains).
read_pipe() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, sys, time
fd = os.open(f"/proc/{sys.argv[1]}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
out, end = b"", time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        chunk = os.read(fd, 65536)
        out += chunk
    except BlockingIOError:
        time.sleep(0.05)
sys.stdout.write(out.decode(errors="replace"))
PY
}

# --- a. the router ---
mkfifo "$WORK/router.fifo"
sleep 100000 <"$WORK/router.fifo" &
ROUTER_READER=$!
PIDS+=("$ROUTER_READER")
"$CELLSERVE" router --cluster 127.0.0.1:0 --listen 127.0.0.1:0 --port-file "$WORK/router.port" \
  --cluster-port-file "$WORK/router.cport" 2>"$WORK/router.fifo" &
ROUTER_PID=$!
PIDS+=("$ROUTER_PID")
wait_for 30 test -s "$WORK/router.cport" || die "the router did not start"
RADDR="127.0.0.1:$(cat "$WORK/router.port")"
CADDR="127.0.0.1:$(cat "$WORK/router.cport")"
filled=$(fill_pipe "$ROUTER_PID")
((filled > 0)) || die "could not fill the router's log pipe"
"$CELLSERVE" node --join "$CADDR" --model-repo "$REPO" --listen 127.0.0.1:0 --node-name n1 --devices 1 \
  --backend cpu 2>"$WORK/n1.log" &
PIDS+=("$!")
if wait_for 30 grep -q "registered with router" "$WORK/n1.log"; then ok "a node registers with a router whose log pipe is full"
else bad "the node did not register" "$(cat "$WORK/n1.log")"; fi
check "infer through a router whose log pipe is full" 0 '"label"' -- \
  "$CELLSERVE" infer --addr "$RADDR" --model cls --json --connect-timeout-ms 5000 --timeout-ms 10000 "The log is full."
check "health of a router whose log pipe is full" 0 "serving" -- \
  "$CELLSERVE" health --addr "$RADDR" --timeout-ms 5000
got="$(read_pipe "$ROUTER_READER" 2)"
if grep -q "node n1 joined" <<<"$got"; then ok "the router's line arrives once the pipe is read"
else bad "no 'node n1 joined' after the pipe was read" "$(tail -5 <<<"$got")"; fi

echo "$pass passed, $failures failed ($((SECONDS - T0)) s)"
[[ $failures == 0 ]]
