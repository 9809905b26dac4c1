// The machine's own floor under any RPC: a raw TCP round trip on 127.0.0.1 (TCP_NODELAY, a
// 64-byte message to an echo thread and back, no Cap'n Proto, no actors), back to back and after
// some idleness (both threads asleep, as at low load while a device computes). Whatever a front
// door adds over an in-process call, it cannot add less than this: the call crosses the socket
// twice and wakes the two threads this wakes. Used by bench_rpc.
// Threads: starts and joins one echo thread per call. Errors: the failing socket call and errno.
#pragma once

#include <vector>

#include "runtime/status.h"

namespace cellserve::bench {

struct LoopbackRtt {
  std::vector<double> back_to_back_us;  // one per round trip, in order
  std::vector<double> after_idle_us;
};

// `back_to_back` round trips one after the other, then `after_idle` each after `idle_ms` of sleep.
StatusOr<LoopbackRtt> MeasureLoopbackRtt(int back_to_back, int after_idle, int idle_ms);

}  // namespace cellserve::bench
