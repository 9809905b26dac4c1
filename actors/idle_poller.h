// IdlePoller (--idle-poll): keeps CPUs out of the kernel's idle loop, as booting with idle=poll
// would, but for this process's cores only and only while it runs. On each CPU it runs one thread
// in the SCHED_IDLE class that spins on the pause instruction: any other thread woken there
// preempts it at once, so it yields to real work, but the CPU never halts. While an optional
// `hold` says so (LocalCluster: "N or more requests unanswered", --idle-poll-below), the threads
// sleep instead: busy cores do not halt anyway, and spinning in their short gaps costs throughput.
// Why: a halted CPU takes long to wake, most of all a virtual one (the hypervisor deschedules a
// vCPU that halts; guests often have halt polling off), and at low load every request waits for
// several such wake-ups (its call, each round's completion, its answer). Measured in
// docs/BENCHMARKS.md (RPC section): with --pin-threads, what RPC adds at p50 fell from +87-196 µs
// to +54-90 µs on a 2-vCPU VM.
// The cost: each polled CPU shows 100% busy in top at low load (threads named cs-idle-poll:N),
// burns power and slows an SMT sibling a little. Off by default; docs/OPERATIONS.md says when.
// Threads: Start starts one thread per CPU; the destructor stops and joins them. Not copyable.
// Errors: INVALID_ARGUMENT for no CPUs or a repeated one; the OS's error when a thread cannot be
// pinned or put in SCHED_IDLE (no thread is left running then).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/status.h"

namespace cellserve {

namespace actors {
struct ClusterCounters;
}

class IdlePoller {
 public:
  // `hold`, when given, is asked every 1024 pauses (10-150 µs, by CPU) from the polling threads
  // (so it must be thread-safe and cheap): while it says true they sleep instead, waking each millisecond to ask
  // again. E.g. "the node is busy": its cores do not idle then, and spinning in the gaps only
  // takes from the work.
  static StatusOr<std::unique_ptr<IdlePoller>> Start(const std::vector<int>& cpus,
                                                     std::function<bool()> hold = nullptr);
  ~IdlePoller();
  IdlePoller(const IdlePoller&) = delete;
  IdlePoller& operator=(const IdlePoller&) = delete;

  const std::vector<int>& cpus() const { return cpus_; }

 private:
  IdlePoller() = default;
  void Poll();  // a polling thread's loop, until stop_
  std::vector<int> cpus_;
  std::function<bool()> hold_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// --idle-poll's quota check (runtime/cpu_quota.h): this process may keep the calling thread's CPUs
// busy spinning, plus `other_cpus` more (device threads pinned apart from it); its cgroup's CPU
// quota must cover them all. INVALID_ARGUMENT saying what to do when it does not.
Status CheckIdlePollQuota(int other_cpus);

// --idle-poll in a serving process (LocalCluster, cluster::Router): the quota check above, then
// an IdlePoller on the calling thread's CPUs, held while `below` or more of `counters`' requests
// are unanswered (0: never held; the cores are busy anyway then).
StatusOr<std::unique_ptr<IdlePoller>> StartServingIdlePoller(std::shared_ptr<actors::ClusterCounters> counters,
                                                             int64_t below, int other_cpus);

}  // namespace cellserve
