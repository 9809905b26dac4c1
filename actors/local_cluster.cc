// LocalCluster: wires the CAF actor system, the node, one worker per CPU device, and answers.
// Lifetime order, which matters: the actor system outlives the devices (device completion
// callbacks post to worker actors), and the devices outlive the workers' last Submit. So Stop
// stops the actors first, waits for them, then destroys the devices (each finishes and reports
// its queued batches to actors that are gone: the messages are dropped), then the actor system.
#include "actors/local_cluster.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "actors/caf_config.h"
#include "actors/idle_poller.h"
#include "actors/messages.h"
#include "actors/node_actor.h"
#include "actors/worker_actor.h"
#include "monitoring/log.h"
#include "runtime/clock.h"
#include "runtime/cpu_plan.h"
#include "runtime/model_repository.h"
#include "runtime/progress_watch.h"

namespace cellserve {

namespace {

// Stop: how long accepted requests may take to finish before the rest are cancelled, and how
// long the actors get to answer those cancellations and to stop.
constexpr std::chrono::seconds kCancelGrace{10};
constexpr std::chrono::seconds kActorTimeout{10};

// "1.2 s"
std::string FormatSeconds(int64_t us) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(us) / 1e6);
  return text;
}

}  // namespace

struct LocalCluster::Impl {
  LocalClusterOptions options;
  SteadyClock clock;
  std::vector<std::shared_ptr<const Model>> models;
  // Declared before the devices and the actor system, so destroyed after them if Start fails;
  // Stop resets it after the actors are gone.
  std::unique_ptr<IdlePoller> idle_poller;
  std::shared_ptr<actors::ClusterCounters> counters = std::make_shared<actors::ClusterCounters>();
  // Declared before the actor system: destroyed after it only if Shutdown never ran (then no
  // actor exists either). Shutdown resets them in the right order explicitly.
  std::vector<std::unique_ptr<Device>> devices;
  size_t device_count = 0;  // devices.size() at start (Stop clears devices)
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  caf::actor node;
  std::vector<caf::actor> workers;
  std::atomic<uint64_t> next_id{1};
  // With metrics: each served model's series, by name (fixed after Start, read without a lock).
  std::unordered_map<std::string, monitoring::ModelMetrics*> model_metrics;

  // Infer/Cancel/Report hold it shared while they use the actors; Shutdown holds it exclusively
  // to turn `running` off.
  mutable std::shared_mutex life_mu;
  bool running = false;  // GUARDED_BY(life_mu)

  std::atomic<ClusterState> state{ClusterState::kServing};
  // Health's view of the actors and devices (state()); the device names, for its lines.
  std::shared_ptr<actors::Liveness> liveness;
  std::vector<std::string> device_names;
  mutable std::mutex probe_mu;           // one probe sent at a time (ProgressWatch::Began's contract)
  mutable std::string said_stuck;        // GUARDED_BY(probe_mu): the part last said stuck, or empty
  mutable std::mutex reason_mu;
  mutable std::string reason;            // GUARDED_BY(reason_mu): StateReason's; a failure's stays
  std::atomic<bool> stopping{false};  // Stop began: actors ending from here on are expected
  std::atomic<bool> failed{false};    // an actor ended on its own (Failed)

  // An actor ended other than by Stop (the node decides that for its workers): said once, the
  // cluster takes no more requests, the owner is told. Any thread.
  void Failed(const std::string& why) {
    if (failed.exchange(true)) return;
    {
      std::lock_guard<std::mutex> lock(reason_mu);
      reason = "the cluster failed: " + why;
    }
    state = ClusterState::kStopped;
    monitoring::LogLine("cellserve: the cluster failed: %s; it takes no more requests\n", why.c_str());
    if (options.on_actor_failure) options.on_actor_failure(why);
  }
  std::mutex stop_mu;    // one Stop at a time
  bool stopped = false;  // GUARDED_BY(stop_mu)
  mutable std::mutex report_mu;
  std::vector<DeviceReport> final_devices;  // GUARDED_BY(report_mu): the last report, after Stop

  std::vector<DeviceReport> CollectDevices() const {  // requires life_mu (shared) and running
    // Destroyed last (after `self`), even on a throw: the caller's thread may outlive the system.
    struct Release {
      ~Release() { actors::ReleaseThisThreadsCafLogger(); }
    } release;
    std::vector<DeviceReport> out;
    caf::scoped_actor self{*system};
    for (size_t i = 0; i < workers.size(); ++i) {
      DeviceReport d;
      d.name = devices[i]->name();
      self->request(workers[i], kActorTimeout, actors::report_atom::value)
          .receive(
              [&](const actors::WorkerReport& r) {
                d.rounds = r.rounds;
                d.cells = r.cells;
                d.padding_rows = r.padding_rows;
                d.busy_us = r.busy_us;
                d.requests_in = r.requests_in;
                d.slots_in_use = r.slots_in_use;
              },
              [&](caf::error&) { d.busy_us = devices[i]->stats().busy_us; });
      out.push_back(std::move(d));
    }
    return out;
  }

  // Stops every actor, then the devices, then the actor system. Answers nothing itself: request
  // actors stopped unanswered answer UNAVAILABLE as they go (and a dropped ReplySlot does too).
  void Shutdown() {
    {
      std::unique_lock<std::shared_mutex> lock(life_mu);
      running = false;
    }
    bool timed_out = false;
    if (system) {
      caf::scoped_actor self{*system};
      std::vector<caf::actor> watched = workers;
      if (node) watched.push_back(node);
      for (const auto& a : watched) self->monitor(a);
      if (node) {
        self->send(node, actors::shutdown_atom::value);
      }
      for (const auto& w : workers) self->send_exit(w, caf::exit_reason::user_shutdown);
      size_t down = 0;
      while (down < watched.size() && !timed_out) {
        self->receive([&](caf::down_msg&) { ++down; },
                      caf::after(std::chrono::duration_cast<std::chrono::milliseconds>(kActorTimeout)) >>
                          [&] { timed_out = true; });
      }
    }
    node = caf::actor{};
    workers.clear();
    if (timed_out) {
      // A worker still running may submit to its device: leave the devices allocated (a leak at
      // shutdown) rather than let it use one after it is freed.
      monitoring::LogLine("cellserve: an actor did not stop within %lld s; the devices are left allocated\n",
                          static_cast<long long>(kActorTimeout.count()));
      for (auto& device : devices) (void)device.release();
    }
    devices.clear();  // finishes queued batches; their completions go to stopped actors
    system.reset();   // waits for the remaining (request) actors, which were told to stop
  }
};

LocalCluster::LocalCluster(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LocalCluster::~LocalCluster() { Stop(); }

int LocalCluster::device_count() const { return static_cast<int>(impl_->device_count); }

std::vector<int> LocalCluster::idle_poll_cpus() const {
  return impl_->idle_poller ? impl_->idle_poller->cpus() : std::vector<int>{};
}

StatusOr<CpuPlan> LocalCluster::PinCallerApartFromDevices(const LocalClusterOptions& options) {
  const int threads = DeviceThreads(options);
  if (threads == 0) return InvalidArgument("--pin-threads: unknown backend '" + options.backend + "'");
  return PinThisThreadApartFromDevices(threads);
}

Status LocalCluster::CheckIdlePollQuota(const LocalClusterOptions& options) {
  return ::cellserve::CheckIdlePollQuota(static_cast<int>(options.device_cpus.size()));
}

StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const LocalClusterOptions& options) {
  if (options.devices < 0) return InvalidArgument("devices must be >= 1, or 0 for all");
  if (options.caf_threads < 0) return InvalidArgument("caf_threads must be >= 0");
  if (options.idle_poll_below < 0) return InvalidArgument("idle_poll_below must be >= 0");
  if (options.stop_grace_ms < 0) return InvalidArgument("stop_grace_ms must be >= 0");
  if (options.stall_after_ms < 0) return InvalidArgument("stall_after_ms must be >= 0 (0: never say a part is stuck)");
  if (options.model_repo.empty()) return InvalidArgument("model_repo is required");
  auto impl = std::make_unique<Impl>();
  impl->options = options;

  std::vector<std::string> names = options.models;
  if (names.empty()) {
    ASSIGN_OR_RETURN(names, ListModels(options.model_repo));
    if (names.empty()) return NotFound("model repository " + options.model_repo + " holds no models");
  }
  const Status stopped = Cancelled("stopped while loading the models");
  auto stop_requested = [&options] { return options.stop_requested && options.stop_requested(); };
  for (const auto& name : names) {
    if (stop_requested()) return stopped;
    ASSIGN_OR_RETURN(auto model, LoadModel(options.model_repo, name));
    for (const auto& m : impl->models)
      if (m->spec().name == model->spec().name)
        return InvalidArgument("model '" + name + "' is listed twice");
    impl->models.push_back(std::move(model));
  }

  if (options.idle_poll) {  // the caller's cores: with --pin-threads, all but the devices'
    ASSIGN_OR_RETURN(impl->idle_poller, StartServingIdlePoller(impl->counters, options.idle_poll_below,
                                                               static_cast<int>(options.device_cpus.size())));
  }
  ASSIGN_OR_RETURN(impl->devices, MakeDevices(options, impl->models));
  impl->device_count = impl->devices.size();
  impl->liveness = std::make_shared<actors::Liveness>(impl->device_count, std::make_shared<SteadyClock>());
  for (const auto& d : impl->devices) impl->device_names.push_back(d->name());

  actors::ConfigureActorSystem(impl->config, options.caf_threads);
  impl->system = std::make_unique<caf::actor_system>(impl->config);

  actors::NodeOptions node;
  node.models = impl->models;
  node.clock = &impl->clock;
  node.counters = impl->counters;
  node.max_requests_per_worker_model = options.scheduler.max_requests;
  if (options.metrics) {
    for (const auto& m : impl->models) impl->model_metrics[m->spec().name] = options.metrics->Model(m->spec().name);
    for (const auto& d : impl->devices) node.device_metrics.push_back(options.metrics->Device(d->name()));
  }
  Impl* raw = impl.get();  // the actors end before the Impl does (Shutdown, or Start's failure path)
  node.on_worker_lost = [raw](int, const std::string& why) { raw->Failed(why); };
  node.liveness = impl->liveness;
  impl->node = actors::SpawnNode(*impl->system, std::move(node));
  impl->node->attach_functor([raw](const caf::error& reason) {
    // Stop (and Start's failure path) end it with user_shutdown: anything else is a failure.
    if (raw->stopping && actors::EndedByStopProtocol(reason)) return;
    raw->Failed("the node actor ended (" + caf::to_string(reason) + ")");
  });
  for (int i = 0; i < static_cast<int>(impl->devices.size()); ++i) {
    if (stop_requested()) {  // each worker registers the models on its device: seconds for large ones
      impl->stopping = true;
      impl->Shutdown();
      return stopped;
    }
    actors::WorkerOptions w;
    w.index = i;
    w.device = impl->devices[i].get();
    w.clock = &impl->clock;
    w.models = impl->models;
    w.scheduler = options.scheduler;
    w.node = impl->node;
    w.counters = impl->counters;
    w.metrics = options.metrics;
    w.liveness = impl->liveness;
    w.stop_requested = options.stop_requested;
    auto worker = actors::SpawnWorker(*impl->system, std::move(w));
    if (!worker.ok()) {
      impl->stopping = true;
      impl->Shutdown();
      return worker.status();
    }
    impl->workers.push_back(*worker);
    caf::anon_send(impl->node, actors::add_worker_atom::value, i, *worker);
  }
  {
    std::unique_lock<std::shared_mutex> lock(impl->life_mu);
    impl->running = true;
  }
  actors::ReleaseThisThreadsCafLogger();  // the cluster may be stopped from another thread
  return std::unique_ptr<LocalCluster>(new LocalCluster(std::move(impl)));
}

const char* ClusterStateName(ClusterState state) {
  switch (state) {
    case ClusterState::kServing: return "serving";
    case ClusterState::kDraining: return "draining";
    case ClusterState::kStopped: return "stopped";
    case ClusterState::kStarting: return "starting";
  }
  return "unknown";
}

uint64_t LocalCluster::Infer(const std::string& model, RequestInput input, int64_t deadline_us,
                             InferCallback done, TokenCallback on_token) {
  Impl& s = *impl_;
  const uint64_t id = s.next_id.fetch_add(1);
  actors::AnswerMetrics metrics;
  if (s.options.metrics) {
    metrics.metrics = s.options.metrics;
    metrics.clock = &s.clock;
    metrics.arrival_us = s.clock.NowMicros();
    auto it = s.model_metrics.find(model);
    if (it != s.model_metrics.end()) metrics.model = it->second;
  }
  auto reply = std::make_shared<actors::ReplySlot>(id, std::move(done), s.counters, metrics);
  if (s.failed) {
    reply->Answer(Unavailable("the cluster failed (see its log) and takes no more requests; restart it"),
                  actors::AnswerKind::kRejected);
    return id;
  }
  {
    std::shared_lock<std::shared_mutex> lock(s.life_mu);
    if (s.running) {
      caf::anon_send(s.node, actors::infer_atom::value,
                     actors::InferMsg{id, model, std::move(input), deadline_us, std::move(reply),
                                      std::move(on_token)});
      return id;
    }
  }
  // After Stop there are no actors left: answer here, on the caller's thread.
  reply->Answer(Unavailable("the cluster is stopped"), actors::AnswerKind::kRejected);
  return id;
}

void LocalCluster::Cancel(uint64_t id) {
  std::shared_lock<std::shared_mutex> lock(impl_->life_mu);
  if (impl_->running) caf::anon_send(impl_->node, actors::cancel_atom::value, static_cast<RequestId>(id));
}

ClusterReport LocalCluster::Report() const {
  const Impl& s = *impl_;
  ClusterReport r;
  {
    std::shared_lock<std::shared_mutex> lock(s.life_mu);
    if (s.running) r.devices = s.CollectDevices();
  }
  if (r.devices.empty()) {
    std::lock_guard<std::mutex> lock(s.report_mu);
    r.devices = s.final_devices;
  }
  // Counters last, so a request counted in a device's stats is also counted here.
  r.accepted = s.counters->accepted.load();
  r.completed = s.counters->completed.load();
  r.failed = s.counters->failed.load();
  r.rejected = s.counters->rejected.load();
  return r;
}

ClusterLoad LocalCluster::Load() const {
  ClusterLoad load;
  load.outstanding_cells = std::max<int64_t>(impl_->counters->outstanding_cells.load(), 0);
  return load;
}

std::vector<ModelSpec> LocalCluster::Models() const {
  std::vector<ModelSpec> specs;
  for (const auto& m : impl_->models) specs.push_back(m->spec());
  return specs;
}

ClusterState LocalCluster::state() const {
  const Impl& s = *impl_;
  const ClusterState state = s.state.load();
  if (state != ClusterState::kServing || s.options.stall_after_ms <= 0) return state;
  actors::Liveness& live = *s.liveness;
  std::lock_guard<std::mutex> probe_lock(s.probe_mu);
  const int64_t now = live.clock->NowMicros();
  {
    std::shared_lock<std::shared_mutex> lock(s.life_mu);
    if (!s.running) return s.state.load();
    if (live.node.outstanding() == 0) {
      live.node.Began(now);
      caf::anon_send(s.node, actors::probe_atom::value);
    }
  }
  // The parts in one list: the node actor, each worker actor, each device.
  const size_t n = live.worker.size();
  std::vector<const ProgressWatch*> parts{&live.node};
  for (const ProgressWatch& w : live.worker) parts.push_back(&w);
  for (const ProgressWatch& d : live.device) parts.push_back(&d);
  const StuckPart stuck = LongestStuck(parts.data(), static_cast<int>(parts.size()), now, s.options.stall_after_ms * 1000);
  if (!stuck.stuck) {
    if (!s.said_stuck.empty()) {
      std::lock_guard<std::mutex> lock(s.reason_mu);
      if (!s.failed) s.reason.clear();
      monitoring::LogLine("cellserve: %s moves again; health says serving\n", s.said_stuck.c_str());
      s.said_stuck.clear();
    }
    return ClusterState::kServing;
  }
  const size_t i = static_cast<size_t>(stuck.index);
  const std::string part = i == 0   ? "the node actor"
                           : i <= n ? "the worker actor of device " + s.device_names[i - 1]
                                    : "device " + s.device_names[i - 1 - n];
  const char* what = i <= n ? "has not read its mailbox" : "has had a round running without finishing one";
  const std::string why = part + " " + what + " for " + FormatSeconds(stuck.for_us) + ": it is stuck (--stall-after-ms " +
                          std::to_string(s.options.stall_after_ms) + ")";
  {
    std::lock_guard<std::mutex> lock(s.reason_mu);
    if (!s.failed) s.reason = why;
  }
  if (s.said_stuck != part) {
    // The part said before was the one stuck longest: another is now, so it moved.
    if (!s.said_stuck.empty()) monitoring::LogLine("cellserve: %s moves again\n", s.said_stuck.c_str());
    monitoring::LogLine("cellserve: %s; health says not ready until it moves again\n", why.c_str());
    s.said_stuck = part;
  }
  return ClusterState::kStopped;
}

bool LocalCluster::Stuck() const {
  // state() says kStopped of a cluster that still serves only for a stuck part.
  return impl_->state.load() == ClusterState::kServing && state() == ClusterState::kStopped;
}

std::string LocalCluster::StateReason() const {
  std::lock_guard<std::mutex> lock(impl_->reason_mu);
  return impl_->reason;
}

void LocalCluster::Stop() {
  if (!impl_) return;
  Impl& s = *impl_;
  std::lock_guard<std::mutex> stop_lock(s.stop_mu);
  if (s.stopped) return;
  s.stopped = true;
  s.stopping = true;
  if (!s.failed) s.state = ClusterState::kDraining;
  bool running;
  {
    std::shared_lock<std::shared_mutex> lock(s.life_mu);
    running = s.running;
    // 1. No new requests: the node answers them UNAVAILABLE from now on.
    if (running) caf::anon_send(s.node, actors::stop_atom::value);
  }
  if (running) {
    // 2. Drain: requests already in finish, within the grace period; then the rest are cancelled.
    if (!s.counters->WaitAllAnswered(std::chrono::milliseconds(s.options.stop_grace_ms))) {
      {
        std::shared_lock<std::shared_mutex> lock(s.life_mu);
        caf::anon_send(s.node, actors::cancel_all_atom::value);
      }
      s.counters->WaitAllAnswered(kCancelGrace);
    }
    std::vector<DeviceReport> last;
    {
      std::shared_lock<std::shared_mutex> lock(s.life_mu);
      last = s.CollectDevices();
    }
    std::lock_guard<std::mutex> lock(s.report_mu);
    s.final_devices = std::move(last);
  }
  // 3. Actors, devices, actor system, in that order.
  s.Shutdown();
  s.idle_poller.reset();
  s.state = ClusterState::kStopped;
}

}  // namespace cellserve
