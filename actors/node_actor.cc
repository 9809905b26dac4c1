#include "actors/node_actor.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <utility>

#include "actors/request_actor.h"
#include "monitoring/log.h"
#include "runtime/heap_trim.h"
#include "runtime/worker_loads.h"

namespace cellserve::actors {

namespace {

struct NodeState {
  static inline const char* name = "cellserve.node";

  struct Served {
    std::shared_ptr<const Model> model;
    int index = 0;  // in `loads`
  };
  struct Pending {
    caf::actor request;
    WorkerLoads::Placement placement;
  };

  caf::stateful_actor<NodeState>* self = nullptr;
  NodeOptions options;
  std::unordered_map<std::string, Served> models;
  std::vector<caf::actor> workers;  // by index; null once ended
  WorkerLoads loads{0, 0};          // placement (runtime/worker_loads.h)
  std::unordered_map<RequestId, Pending> requests;
  bool stopping = false;
  IdleHeapTrim heap_trim;

  void Infer(InferMsg& m) {
    if (!m.reply) return;
    if (stopping) {
      m.reply->Answer(Unavailable("the cluster is stopping; no new requests"), AnswerKind::kRejected);
      return;
    }
    auto it = models.find(m.model);
    if (it == models.end()) {
      std::string names;
      for (const auto& mm : options.models) names += (names.empty() ? "" : ", ") + mm->spec().name;
      m.reply->Answer(NotFound("unknown model '" + PrintableBytes(m.model) + "' (served: " + names + ")"),
                      AnswerKind::kRejected);
      return;
    }
    const Model& model = *it->second.model;
    const int64_t served = model.spec().version;
    if (m.input.model_version != 0 && m.input.model_version != served) {
      m.reply->Answer(NotFound("model '" + m.model + "' version " + std::to_string(m.input.model_version) +
                               " is not served (this node has version " + std::to_string(served) + ")"),
                      AnswerKind::kRejected);
      return;
    }
    const int w = loads.Pick(it->second.index);
    if (w < 0) {
      m.reply->Answer(Unavailable("no device worker is running"), AnswerKind::kRejected);
      return;
    }
    if (requests.count(m.id)) {
      m.reply->Answer(InvalidArgument("request id " + std::to_string(m.id) + " is already in flight"),
                      AnswerKind::kRejected);
      return;
    }
    if (static_cast<size_t>(w) < options.device_metrics.size() && options.device_metrics[w])
      options.device_metrics[w]->placements->Increment();
    const WorkerLoads::Placement placement = loads.Place(w, it->second.index, EstimateCells(model.spec(), m.input));
    const RequestId id = m.id;
    RequestSetup setup;
    setup.msg = std::move(m);
    setup.model = it->second.model;
    setup.worker = workers[static_cast<size_t>(w)];
    setup.worker_index = w;
    setup.node = caf::actor_cast<caf::actor>(self);
    setup.clock = options.clock;
    requests.emplace(id, Pending{SpawnRequest(self->system(), std::move(setup)), placement});
  }

  void Finished(RequestId id, bool ran) {
    auto it = requests.find(id);
    if (it == requests.end()) return;
    loads.Finished(it->second.placement, ran);
    requests.erase(it);
    if (requests.empty()) TrimIfIdle();
  }

  // No request left: what they freed goes back to the system, now or when the interval allows.
  void TrimIfIdle() {
    if (!requests.empty() || options.idle_heap_trim_interval_us <= 0) return;
    const IdleHeapTrim::Decision decision = heap_trim.OnIdle(options.clock->NowMicros());
    switch (decision.action) {
      case IdleHeapTrim::Action::kTrimNow:
        ReleaseFreeHeap();
        break;
      case IdleHeapTrim::Action::kCheckLater:
        self->delayed_send(self, std::chrono::microseconds(decision.check_in_us), heap_trim_atom::value);
        break;
      case IdleHeapTrim::Action::kNothing:
        break;
    }
  }

  void Load(const LoadReport& r) {
    if (r.worker < 0 || r.worker >= loads.size() || !loads.running(r.worker)) return;
    if (options.counters) options.counters->outstanding_cells += r.outstanding_cells - loads.reported_cells(r.worker);
    loads.Report(r.worker, r.outstanding_cells);
  }

  NodeReport Report() const {
    NodeReport r;
    r.requests_in_flight = static_cast<int64_t>(requests.size());
    for (int w = 0; w < static_cast<int>(workers.size()); ++w) {
      r.assigned.push_back(loads.assigned(w));
      r.in_flight.push_back(loads.in_flight(w));
      r.reported_cells.push_back(loads.reported_cells(w));
    }
    return r;
  }

  // A worker ended (a down message). Outside the stop protocol that is a failure: said, and told.
  // Either way its requests are answered: it may have ended without answering them.
  void WorkerDown(const caf::actor_addr& who, const caf::error& reason) {
    int w = 0;
    while (w < static_cast<int>(workers.size()) && !(workers[w] && workers[w].address() == who)) ++w;
    if (w == static_cast<int>(workers.size())) return;
    workers[static_cast<size_t>(w)] = nullptr;
    if (options.counters) options.counters->outstanding_cells -= loads.reported_cells(w);
    loads.Remove(w);
    const std::string why = "device worker " + std::to_string(w) + " stopped (" + caf::to_string(reason) + ")";
    for (auto& [id, p] : requests)
      if (p.placement.worker == w) self->send(p.request, worker_lost_atom::value, why + " while the request ran");
    // The stop protocol ends workers with user_shutdown; anything else (an exception in one while
    // the cluster drains, too) is a failure.
    if (stopping && EndedByStopProtocol(reason)) return;
    monitoring::LogLine("cellserve: %s: it takes no more requests; those it had are answered UNAVAILABLE\n",
                        why.c_str());
    if (options.on_worker_lost) options.on_worker_lost(w, why);
  }

  void Shutdown() {
    stopping = true;
    // Request actors first: unanswered ones answer UNAVAILABLE as they stop.
    for (auto& [id, p] : requests) self->send_exit(p.request, caf::exit_reason::user_shutdown);
    requests.clear();
    for (const caf::actor& w : workers)
      if (w) self->send_exit(w, caf::exit_reason::user_shutdown);
    workers.clear();
    self->quit(caf::exit_reason::user_shutdown);
  }
};

caf::behavior NodeActor(caf::stateful_actor<NodeState>* self, std::shared_ptr<NodeOptions> options) {
  NodeState& st = self->state;
  st.self = self;
  st.options = std::move(*options);
  for (const auto& m : st.options.models)
    st.models.emplace(m->spec().name, NodeState::Served{m, static_cast<int>(st.models.size())});
  st.loads = WorkerLoads(static_cast<int>(st.models.size()), st.options.max_requests_per_worker_model);
  st.heap_trim = IdleHeapTrim(st.options.idle_heap_trim_interval_us);
  self->set_down_handler([self](caf::down_msg& msg) { self->state.WorkerDown(msg.source, msg.reason); });
  return {
      [self](infer_atom, InferMsg& m) { self->state.Infer(m); },
      [self](cancel_atom, RequestId id) {
        auto it = self->state.requests.find(id);
        if (it != self->state.requests.end()) self->send(it->second.request, cancel_atom::value);
      },
      [self](finished_atom, RequestId id, int, bool ran) { self->state.Finished(id, ran); },
      [self](load_atom, const LoadReport& r) { self->state.Load(r); },
      [self](heap_trim_atom) {
        self->state.heap_trim.CheckCame();
        self->state.TrimIfIdle();
      },
      [self](add_worker_atom, int index, caf::actor worker) {
        if (index < 0) return;
        auto& ws = self->state.workers;
        if (static_cast<size_t>(index) >= ws.size()) ws.resize(static_cast<size_t>(index) + 1);
        self->monitor(worker);
        ws[static_cast<size_t>(index)] = std::move(worker);
        self->state.loads.Add(index);
      },
      [self](stop_atom) { self->state.stopping = true; },
      [self](cancel_all_atom) {
        self->state.stopping = true;
        // UNAVAILABLE, not CANCELLED: the server gave up (its grace ran out), not the client; a
        // router retries it elsewhere, and it counts as a server error.
        const Status reason = Unavailable("the cluster stopped before the request finished");
        for (const caf::actor& w : self->state.workers)
          if (w) self->send(w, cancel_all_atom::value, reason);
      },
      [self](shutdown_atom) { self->state.Shutdown(); },
      [self](report_atom) { return self->state.Report(); },
      [self](probe_atom) {
        NodeState& st = self->state;
        if (!st.options.liveness) return;
        Liveness& live = *st.options.liveness;
        const int64_t now = live.clock->NowMicros();
        live.node.Ended(now);
        for (size_t i = 0; i < st.workers.size() && i < live.worker.size(); ++i) {
          if (!st.workers[i] || live.worker[i].outstanding() > 0) continue;
          live.worker[i].Began(now);
          self->send(st.workers[i], probe_atom::value);
        }
      },
  };
}

}  // namespace

caf::actor SpawnNode(caf::actor_system& system, NodeOptions options) {
  return system.spawn(NodeActor, std::make_shared<NodeOptions>(std::move(options)));
}

}  // namespace cellserve::actors
