#!/usr/bin/env bash
# A client that vanishes without closing its connections (its machine loses power, a network
# partition) is found by TCP keepalive and dropped: its connection slots are freed and its call in
# flight is cancelled, where before they were held for good. To vanish for real, the test runs in
# a network namespace of its own (unshare -n, root) and takes its loopback down for a while:
# nothing reaches the clients and no RST comes back, as when a machine is gone. Then the loopback
# comes back and the server's own counters are read. About 15 s. Skipped (77) where no network
# namespace can be made.
# Usage: vanished_peer_test.sh PATH/TO/cellserve   (ctest passes it).
set -uo pipefail
CELLSERVE="$1"
if [[ "${CELLSERVE_IN_NETNS:-}" != 1 ]]; then
  if ! unshare -n true 2>/dev/null; then
    echo "skipped: cannot make a network namespace (unshare -n needs root)"
    exit 77
  fi
  exec env CELLSERVE_IN_NETNS=1 unshare -n "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"
ip link set lo up || die "cannot bring up the namespace's loopback"

REPO="$WORK/models"
init_models "$REPO" || die "model init"
# Rounds of 10 s (the most a profile takes): the call below is still in flight when its client vanishes.
printf '{"name": "slow", "default": {"a_us": 0, "c_us": 10000000}}\n' > "$WORK/slow_profile.json"
"$CELLSERVE" serve --model-repo "$REPO" --models cls --devices 1 --backend sim \
  --sim-profile "$WORK/slow_profile.json" --stall-after-ms 0 --tcp-keepalive-s 1 \
  --listen 127.0.0.1:0 --port-file "$WORK/port" 2>"$WORK/serve.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_for 60 or_exited "$SERVER_PID" test -s "$WORK/port"
[[ -s "$WORK/port" ]] || die "serve did not start" "$(cat "$WORK/serve.log")"
ADDR="127.0.0.1:$(cat "$WORK/port")"
wait_for 60 "$CELLSERVE" health --addr "$ADDR" >/dev/null || die "serve is not serving" "$(cat "$WORK/serve.log")"

# health_is FIELD VALUE: the server's own count, read with one health call (which is a connection
# itself, so `connections` counts it).
health_is() {
  "$CELLSERVE" health --addr "$ADDR" --json > "$WORK/health.json" 2>&1 &&
    [[ "$(json_get "$WORK/health.json" "j['$1']")" == "$2" ]]
}

# Two clients that will vanish: an idle connection that sent the start of a message (a segment
# table: one segment of 1,000 words), so it is no silent socket, and `cellserve infer` waiting on
# its call.
python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall((0).to_bytes(4, "little") + (1000).to_bytes(4, "little"))
time.sleep(600)' "${ADDR##*:}" &
PIDS+=($!)
"$CELLSERVE" infer --addr "$ADDR" --model cls "Thanks." >"$WORK/infer.txt" 2>&1 &
PIDS+=($!)
# Both at once: the python client may connect after the call is in flight.
both_connected() { health_is calls_in_flight 1 && health_is connections 3; }
if wait_for 20 both_connected; then
  ok "two clients connected, one call in flight"
else
  die "the clients did not connect" "$(cat "$WORK/health.json")"
fi

# The clients vanish: the loopback goes down. With --tcp-keepalive-s 1 the server probes after 1 s
# of silence, every second, 6 times: about 7 s. Wait 12, then bring the loopback back.
ip link set lo down
sleep 12
ip link set lo up
if wait_for 5 health_is connections 1; then
  ok "the vanished clients' connections are closed (only the health call's is open)"
else
  bad "connections still held after the clients vanished" "$(cat "$WORK/health.json")"
fi
if health_is calls_in_flight 0; then ok "the vanished client's call was cancelled"
else bad "the vanished client's call is still in flight" "$(cat "$WORK/health.json")"; fi
health_is requests_in_flight 0 && ok "the cluster holds no request for it" ||
  bad "the cluster still holds the vanished client's request" "$(cat "$WORK/health.json")"

echo "$pass passed, $failures failed"
[[ $failures == 0 ]]
