// Where a node's threads run (--pin-threads): each device thread gets a core of its own, the last
// ones of the CPUs this process may use; every other thread (the RPC front door, the actors, CAF,
// timers, the client in a bench) shares the rest. Why: a front-door thread woken on a core where
// other work has just run finds its caches cold; kept on their own cores, the front door and the
// actors hand requests to each other warm (measured in docs/BENCHMARKS.md, RPC section).
// PlanCpus is pure. PinThisThreadApartFromDevices pins the caller (threads it starts later
// inherit that), so call it first thing in main, before any thread is started.
#pragma once

#include <string>
#include <vector>

#include "runtime/status.h"

namespace cellserve {

struct CpuPlan {
  std::vector<int> device_cpus;  // one per device thread, in device order
  std::vector<int> other_cpus;   // every other thread
};

// `allowed`: the CPUs this process may use (any order, no repeats). INVALID_ARGUMENT when
// device_threads < 1 or there are not at least device_threads + 1 CPUs (say how many there are).
StatusOr<CpuPlan> PlanCpus(std::vector<int> allowed, int device_threads);

// "CPU 3", "CPUs 0-2", "CPUs 0, 2, 5" (for a sorted list); "no CPUs" for none.
std::string DescribeCpus(const std::vector<int>& cpus);

// "device threads on CPUs 3, 4; everything else on CPUs 0-2", or "not pinned" for an empty plan.
std::string DescribeCpuPlan(const CpuPlan& plan);

// Plans from the caller's CPUs and pins the caller to other_cpus. Errors as PlanCpus, or the
// OS's refusal.
StatusOr<CpuPlan> PinThisThreadApartFromDevices(int device_threads);

}  // namespace cellserve
