// The node actor (DESIGN.md §3 step 3): one per process. It knows the models and the device
// workers; for each request it picks a worker (runtime/worker_loads.h: the least outstanding
// work among the workers with room for another request of its model) and spawns a request actor
// bound to it. Unknown models are answered NOT_FOUND here, at once.
// Stop protocol (LocalCluster drives it): stop_atom -> new requests are answered UNAVAILABLE;
// cancel_all_atom -> every worker cancels what it holds with UNAVAILABLE; shutdown_atom -> the node
// stops every request actor and worker it knows, then itself.
// A worker that ends on its own (an exception in it, a bug) is watched for: it gets no more
// requests, each request placed on it is answered UNAVAILABLE (its worker may have dropped the
// request unanswered), and on_worker_lost is called (not for the stop protocol's own ends).
// Ownership: models are shared; the clock is borrowed and must outlive the actor.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/messages.h"
#include "monitoring/metrics.h"
#include "runtime/clock.h"
#include "runtime/heap_trim.h"
#include "runtime/model.h"

namespace cellserve::actors {

struct NodeOptions {
  std::vector<std::shared_ptr<const Model>> models;  // served, by spec().name
  const Clock* clock = nullptr;                      // required: request deadlines are on it
  std::shared_ptr<ClusterCounters> counters;         // may be null
  // Per worker index: its device's metrics, where each placement is counted
  // (cellserve_placements_total). Borrowed; empty (or a null entry) = not counted.
  std::vector<monitoring::DeviceMetrics*> device_metrics;
  // Each worker's admission bound per model (SchedulerOptions::max_requests): placement prefers
  // workers under it. <= 0: not known (placement by load alone).
  int64_t max_requests_per_worker_model = 0;
  // When its last request finished, the node gives the heap they freed back to the system, at
  // most once per this interval (runtime/heap_trim.h). 0 = never.
  int64_t idle_heap_trim_interval_us = IdleHeapTrim::kDefaultIntervalUs;
  // Called on the node's thread when a worker ends other than by the stop protocol: its index
  // and why. Must not block. Empty = not told.
  std::function<void(int worker, const std::string& why)> on_worker_lost;
  // Health's probes (actors/messages.h, Liveness): a probe_atom is marked read in `node` and passed
  // on to every worker whose last probe was read. Null: probes are ignored.
  std::shared_ptr<Liveness> liveness;
};

// Whether an actor ended the way the stop protocol ends it (user_shutdown, or a normal quit): any
// other end is a failure.
inline bool EndedByStopProtocol(const caf::error& reason) {
  return reason == caf::exit_reason::user_shutdown || reason == caf::exit_reason::normal;
}

// Workers join afterwards: (add_worker_atom, int index, caf::actor worker).
caf::actor SpawnNode(caf::actor_system& system, NodeOptions options);

}  // namespace cellserve::actors
