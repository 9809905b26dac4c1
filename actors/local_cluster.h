// LocalCluster: the whole serving stack in one process (DESIGN.md §6, "cellserve serve"): a CAF
// actor system with one node actor, one worker actor per device (each owning a Scheduler and a
// Device) and one request actor per request. This class is the C++ entry point to it for the CLI,
// the benchmark, tests and the RPC front door (schema/), which all call the same Infer.
// Thread-safe: Infer may be called from any thread; `done` runs once on an actor thread and must
// not block. Stop (and the destructor) stop admitting, answer every accepted request (results
// still in flight finish; nothing is dropped), then shut the actors down.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/device_factory.h"
#include "actors/serving_backend.h"
#include "runtime/cell_graph.h"
#include "runtime/cpu_plan.h"
#include "runtime/scheduler.h"
#include "runtime/status.h"

namespace cellserve {

namespace monitoring {
class ServingMetrics;
}

// The devices (DeviceOptions, actors/device_factory.h: backend, devices, sim_profile,
// the cpu and cuda settings, device_cpus; each device gets its own worker), and the rest.
// "cpu": each device a thread running our CPU kernels. "sim": kernels/sim devices that compute
// nothing and take the time `sim_profile` (a JSON file) says; answers are meaningless. "cuda": one
// device per GPU (kernels/cuda), when this build has CUDA. device_cpus: from
// PinCallerApartFromDevices, or empty.
struct LocalClusterOptions : DeviceOptions {
  std::string model_repo;                  // folder of models (DIR/NAME/spec.json, weights)
  std::vector<std::string> models;         // names to load; empty = every model in the repo
  SchedulerOptions scheduler;              // policy, lookahead, bounds (state_slots per device)
  int caf_threads = 0;                     // CAF scheduler threads; 0 = one per CPU this process may use
  // Stop: requests already accepted may take this long to finish; those still running then are
  // cancelled and answered UNAVAILABLE (a router retries them on another node).
  int64_t stop_grace_ms = 30000;
  // Prometheus metrics (monitoring/metrics.h): every answer, each device's rounds, the node's
  // placements. Borrowed: must outlive the cluster. nullptr = no metrics (and no cost).
  monitoring::ServingMetrics* metrics = nullptr;
  // --idle-poll (actors/idle_poller.h): while the cluster runs, keep the CPUs of the thread that
  // calls Start out of the idle loop. With --pin-threads those are the front door's and actors'
  // cores (PinCallerApartFromDevices pinned the caller to them); else every core it may use.
  bool idle_poll = false;
  // With idle_poll: the pollers spin only while fewer requests than this are unanswered; from
  // there on the cores are busy anyway, spinning in their short gaps only takes from the work
  // (measured: 0.82-0.86x the most requests/s in process), so the pollers sleep. 0: always spin.
  int64_t idle_poll_below = 8;
  // Called once, on a CAF thread (or Start's), if the node actor or a device worker ends other
  // than by Stop (an exception in it: a bug, or memory running out). From then on state() is
  // kStopped and new requests are answered UNAVAILABLE at once; the requests on a lost worker are
  // answered UNAVAILABLE. `cellserve serve` and `node` stop and exit 1 so that they are
  // restarted with every device. Must not block.
  std::function<void(const std::string& why)> on_actor_failure;
  // A stuck part (docs/OPERATIONS.md, "A stuck node"): while a device has had a round outstanding
  // and finished none for longer than this, or the node or a worker actor has not read a probe
  // for as long, state() says kStopped (health: not ready) and a line says which part; it says
  // kServing again once the part moves. A busy part that keeps finishing work is never stuck.
  // 0 = never say so.
  int64_t stall_after_ms = 10000;
  // Asked between the models it loads and before each model's registration on each device: true
  // (a SIGTERM while loading) ends Start with CANCELLED, starting nothing. Empty: never asked.
  std::function<bool()> stop_requested;
};

class LocalCluster final : public NodeBackend {
 public:
  // Loads the models, starts the devices and actors. Errors: NOT_FOUND (model or repo),
  // INVALID_ARGUMENT (bad options or weights), UNAVAILABLE (an unreadable repository; --backend
  // cuda without a usable GPU), RESOURCE_EXHAUSTED (weights or state slots beyond the memory this
  // process may use), CANCELLED (options.stop_requested said so).
  static StatusOr<std::unique_ptr<LocalCluster>> Start(const LocalClusterOptions& options);
  ~LocalCluster();

  // Runs one request. `done` gets the result or an error: NOT_FOUND (unknown model),
  // INVALID_ARGUMENT (bad input), RESOURCE_EXHAUSTED (queues or pool full, at once),
  // DEADLINE_EXCEEDED, CANCELLED (Cancel), UNAVAILABLE (Stop: new ones, and those still running
  // when its grace ends), INTERNAL. deadline_us: absolute
  // SteadyClock micros, 0 = none. Returns an id for Cancel.
  uint64_t Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                 TokenCallback on_token = nullptr) override;
  // Cancels a request (its cells leave the queues, its slots are freed); it is answered CANCELLED
  // unless it already finished.
  void Cancel(uint64_t id) override;

  ClusterReport Report() const override;
  // Devices running (options.devices, or what "all" found).
  int device_count() const;
  // The CPUs kept awake by options.idle_poll; empty without it.
  std::vector<int> idle_poll_cpus() const;

  // --pin-threads (runtime/cpu_plan.h): plans a core of its own for each device thread `options`
  // will make, and pins the calling thread to the other cores, so every thread it starts from now
  // on (the RPC server's, CAF's) inherits them; threads started before are not moved, so call it
  // first. Put the plan's device_cpus into options.device_cpus before Start. INVALID_ARGUMENT when
  // no core is left to spare (DeviceThreads in actors/device_factory.h says how many are kept).
  static StatusOr<CpuPlan> PinCallerApartFromDevices(const LocalClusterOptions& options);
  // --idle-poll's check, which Start also makes: the CPU quota of this process's cgroup must cover
  // every CPU it may use (runtime/cpu_quota.h), since the spinning keeps the caller's cores busy.
  // Call after pinning. INVALID_ARGUMENT saying what to do when it does not.
  static Status CheckIdlePollQuota(const LocalClusterOptions& options);
  ClusterLoad Load() const override;
  // The specs of the models it serves (fixed after Start).
  std::vector<ModelSpec> Models() const override;
  // kServing, kDraining (Stop began) or kStopped (stopped, failed, or a part stuck for longer
  // than stall_after_ms). Each call while serving also probes the actors: it sends the node a
  // probe when its last one was read (actors/messages.h, Liveness), so a stuck actor is seen
  // stall_after_ms after the first call that finds it so. Any thread.
  ClusterState state() const override;
  // The stuck part and for how long, as of the last state(), or the failure.
  std::string StateReason() const override;
  // A part is stuck (state() says kStopped for it, and probes as state() does); not for a failure
  // or a stop, during which a node keeps reporting so that its routers wait for its answers.
  bool Stuck() const override;
  void Stop();

 private:
  struct Impl;
  explicit LocalCluster(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve
