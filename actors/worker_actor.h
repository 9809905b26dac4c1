// The worker actor (DESIGN.md §3 step 5): one per device. It owns one Scheduler per model served
// on its device and drives the Device; the scheduling logic is all in runtime::Scheduler, the
// actor only turns messages into calls:
//   admit       -> Scheduler::Admit (a refusal is answered at once), then pump
//   pump        -> while NextRound(): Device::Submit, whose completion callback (on the device
//                  thread) only posts (round_done_atom, completion) back to this actor, so the
//                  scheduler is never touched off the actor
//   round_done  -> OnRoundDone; the events go out grouped, one message per request per round
//   cancel      -> Scheduler::Cancel;  wakeup (a timer at NextWakeupMicros) -> ExpireDeadlines
// Every admitted request hears exactly one terminal event (kDone or kFailed) from its worker; a
// refused admission hears one kFailed with `rejected` set. Load (outstanding cells, requests in)
// goes to the node on change, at most once per `load_report_interval_us` or every
// `load_report_rounds` rounds, with a delayed flush so the last change is never lost.
// Several models on one device: one scheduler each; runtime/device_share.h decides whose round
// goes next (the model charged the least device time) and, while two or more models hold
// requests, keeps the device's queue to `shared_device_depth` rounds, so a small model's step
// waits behind about one round of a big one, not behind its whole lookahead. A model alone has
// its scheduler's `lookahead`. Device round ids carry the model's index in their top 16 bits.
// Metrics (options.metrics, optional): updated where the event happens, from pre-resolved
// handles: a submitted round (batch size, cells, batches, padding, each started request's queue
// wait), a completed round (busy time), and after every message (rounds in flight, slots in use).
// Ownership: the device, the clock and the models are borrowed and must outlive the actor (the
// device must also outlive its last completion callback). Runs on CAF threads only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <caf/all.hpp>

#include "actors/messages.h"
#include "monitoring/metrics.h"
#include "runtime/clock.h"
#include "runtime/device.h"
#include "runtime/model.h"
#include "runtime/scheduler.h"

namespace cellserve::actors {

struct WorkerOptions {
  int index = 0;                         // this worker's index at the node (in load reports)
  Device* device = nullptr;              // required; borrowed
  const Clock* clock = nullptr;          // required; the schedulers' clock (deadlines are on it)
  std::vector<std::shared_ptr<const Model>> models;  // served here; at least one
  // Per model: policy, lookahead, bounds. state_slots is registered on the device per model.
  SchedulerOptions scheduler;
  caf::actor node;                       // load reports go here; none if invalid
  std::shared_ptr<ClusterCounters> counters;  // `accepted` is counted here; may be null
  int64_t load_report_interval_us = 2000;     // at most one load report per interval ...
  int load_report_rounds = 16;                // ... unless this many rounds finished since
  // Rounds the device may hold (running and queued) while two or more models hold requests
  // (runtime/device_share.h); at least 1.
  int shared_device_depth = 2;
  // Per device: batch size, cells, batches, padding rows, busy time, rounds in flight, state
  // slots; per model: queue wait. Borrowed, must outlive the actor; null = no metrics.
  monitoring::ServingMetrics* metrics = nullptr;
  // Health's view (actors/messages.h, Liveness): this worker's probes are marked read in
  // worker[index], and its device's rounds are counted in device[index] (Began at Submit, Ended in
  // the completion callback, before the completion is posted), on its own clock. Null: not
  // counted.
  std::shared_ptr<Liveness> liveness;
  // Asked before each model is registered on the device (folding a large vocabulary's table takes
  // seconds): true ends SpawnWorker with CANCELLED. Empty: never asked.
  std::function<bool()> stop_requested;
};

// Validates the options, registers every model on the device, creates the schedulers, then
// spawns the actor. INVALID_ARGUMENT for bad options, or the device's or scheduler's error;
// CANCELLED when stop_requested said so.
StatusOr<caf::actor> SpawnWorker(caf::actor_system& system, WorkerOptions options);

}  // namespace cellserve::actors
