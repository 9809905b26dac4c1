#include "actors/node_actor.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "actors/request_actor.h"

namespace cellserve::actors {

namespace {

struct NodeState {
  static inline const char* name = "cellserve.node";

  struct Worker {
    caf::actor actor;
    int64_t reported_cells = 0;    // its last load report
    int64_t unreported_cells = 0;  // estimates of the requests sent since that report
    int64_t reports = 0;           // load reports heard from it
    int64_t in_flight = 0;         // request actors bound to it, alive
    int64_t assigned = 0;          // requests sent to it so far
  };
  struct Pending {
    caf::actor request;
    int worker = 0;
    int64_t estimate = 0;  // its cells, added to the worker's unreported_cells
    int64_t epoch = 0;     // the worker's reports when it was placed
  };

  caf::stateful_actor<NodeState>* self = nullptr;
  NodeOptions options;
  std::unordered_map<std::string, std::shared_ptr<const Model>> models;
  std::vector<Worker> workers;
  std::unordered_map<RequestId, Pending> requests;
  bool stopping = false;

  int PickWorker() const {
    int best = -1;
    for (int w = 0; w < static_cast<int>(workers.size()); ++w) {
      if (!workers[w].actor) continue;
      if (best < 0) {
        best = w;
        continue;
      }
      const Worker& a = workers[w];
      const Worker& b = workers[best];
      if (std::make_tuple(a.reported_cells + a.unreported_cells, a.in_flight) <
          std::make_tuple(b.reported_cells + b.unreported_cells, b.in_flight))
        best = w;
    }
    return best;
  }

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
      m.reply->Answer(NotFound("unknown model '" + m.model + "' (served: " + names + ")"),
                      AnswerKind::kRejected);
      return;
    }
    const int64_t served = it->second->spec().version;
    if (m.input.model_version != 0 && m.input.model_version != served) {
      m.reply->Answer(NotFound("model '" + m.model + "' version " + std::to_string(m.input.model_version) +
                               " is not served (this node has version " + std::to_string(served) + ")"),
                      AnswerKind::kRejected);
      return;
    }
    const int w = PickWorker();
    if (w < 0) {
      m.reply->Answer(Unavailable("no device worker is running"), AnswerKind::kRejected);
      return;
    }
    if (requests.count(m.id)) {
      m.reply->Answer(InvalidArgument("request id " + std::to_string(m.id) + " is already in flight"),
                      AnswerKind::kRejected);
      return;
    }
    Worker& worker = workers[w];
    if (static_cast<size_t>(w) < options.device_metrics.size() && options.device_metrics[w])
      options.device_metrics[w]->placements->Increment();
    const int64_t estimate = EstimateCells(it->second->spec(), m.input);
    worker.unreported_cells += estimate;
    ++worker.in_flight;
    ++worker.assigned;
    const RequestId id = m.id;
    RequestSetup setup;
    setup.msg = std::move(m);
    setup.model = it->second;
    setup.worker = worker.actor;
    setup.worker_index = w;
    setup.node = caf::actor_cast<caf::actor>(self);
    setup.clock = options.clock;
    requests.emplace(id, Pending{SpawnRequest(self->system(), std::move(setup)), w, estimate, worker.reports});
  }

  void Finished(RequestId id, int w, bool ran) {
    auto it = requests.find(id);
    if (it == requests.end()) return;
    const int64_t estimate = it->second.estimate, epoch = it->second.epoch;
    requests.erase(it);
    if (w < 0 || w >= static_cast<int>(workers.size())) return;
    Worker& worker = workers[w];
    --worker.in_flight;
    // Rejected before its worker admitted it: the worker's load never changed, so no report will
    // take the estimate back; without this, a burst of bad requests left a worker looking busy
    // and the node sent everything to the others.
    if (!ran && worker.reports == epoch)
      worker.unreported_cells = std::max<int64_t>(0, worker.unreported_cells - estimate);
  }

  void Load(const LoadReport& r) {
    if (r.worker < 0 || r.worker >= static_cast<int>(workers.size())) return;
    if (options.counters) options.counters->outstanding_cells += r.outstanding_cells - workers[r.worker].reported_cells;
    workers[r.worker].reported_cells = r.outstanding_cells;
    workers[r.worker].unreported_cells = 0;
    ++workers[r.worker].reports;
  }

  NodeReport Report() const {
    NodeReport r;
    r.requests_in_flight = static_cast<int64_t>(requests.size());
    for (const Worker& w : workers) {
      r.assigned.push_back(w.assigned);
      r.in_flight.push_back(w.in_flight);
      r.reported_cells.push_back(w.reported_cells);
    }
    return r;
  }

  // A worker ended (a down message). Outside the stop protocol that is a failure: said, and told.
  // Either way its requests are answered: it may have ended without answering them.
  void WorkerDown(const caf::actor_addr& who, const caf::error& reason) {
    int w = 0;
    while (w < static_cast<int>(workers.size()) && !(workers[w].actor && workers[w].actor.address() == who)) ++w;
    if (w == static_cast<int>(workers.size())) return;
    Worker& worker = workers[w];
    worker.actor = nullptr;
    if (options.counters) options.counters->outstanding_cells -= worker.reported_cells;
    worker.reported_cells = worker.unreported_cells = 0;
    const std::string why = "device worker " + std::to_string(w) + " stopped (" + caf::to_string(reason) + ")";
    for (auto& [id, p] : requests)
      if (p.worker == w) self->send(p.request, worker_lost_atom::value, why + " while the request ran");
    // The stop protocol ends workers with user_shutdown; anything else (an exception in one while
    // the cluster drains, too) is a failure.
    if (stopping && EndedByStopProtocol(reason)) return;
    std::fprintf(stderr, "cellserve: %s: it takes no more requests; those it had are answered UNAVAILABLE\n",
                 why.c_str());
    if (options.on_worker_lost) options.on_worker_lost(w, why);
  }

  void Shutdown() {
    stopping = true;
    // Request actors first: unanswered ones answer UNAVAILABLE as they stop.
    for (auto& [id, p] : requests) self->send_exit(p.request, caf::exit_reason::user_shutdown);
    requests.clear();
    for (Worker& w : workers)
      if (w.actor) self->send_exit(w.actor, caf::exit_reason::user_shutdown);
    workers.clear();
    self->quit(caf::exit_reason::user_shutdown);
  }
};

caf::behavior NodeActor(caf::stateful_actor<NodeState>* self, std::shared_ptr<NodeOptions> options) {
  NodeState& st = self->state;
  st.self = self;
  st.options = std::move(*options);
  for (const auto& m : st.options.models) st.models.emplace(m->spec().name, m);
  self->set_down_handler([self](caf::down_msg& msg) { self->state.WorkerDown(msg.source, msg.reason); });
  return {
      [self](infer_atom, InferMsg& m) { self->state.Infer(m); },
      [self](cancel_atom, RequestId id) {
        auto it = self->state.requests.find(id);
        if (it != self->state.requests.end()) self->send(it->second.request, cancel_atom::value);
      },
      [self](finished_atom, RequestId id, int worker, bool ran) { self->state.Finished(id, worker, ran); },
      [self](load_atom, const LoadReport& r) { self->state.Load(r); },
      [self](add_worker_atom, int index, caf::actor worker) {
        if (index < 0) return;
        auto& ws = self->state.workers;
        if (static_cast<size_t>(index) >= ws.size()) ws.resize(static_cast<size_t>(index) + 1);
        self->monitor(worker);
        ws[static_cast<size_t>(index)].actor = std::move(worker);
      },
      [self](stop_atom) { self->state.stopping = true; },
      [self](cancel_all_atom) {
        self->state.stopping = true;
        // UNAVAILABLE, not CANCELLED: the server gave up (its grace ran out), not the client; a
        // router retries it elsewhere, and it counts as a server error.
        const Status reason = Unavailable("the cluster stopped before the request finished");
        for (auto& w : self->state.workers)
          if (w.actor) self->send(w.actor, cancel_all_atom::value, reason);
      },
      [self](shutdown_atom) { self->state.Shutdown(); },
      [self](report_atom) { return self->state.Report(); },
  };
}

}  // namespace

caf::actor SpawnNode(caf::actor_system& system, NodeOptions options) {
  return system.spawn(NodeActor, std::make_shared<NodeOptions>(std::move(options)));
}

}  // namespace cellserve::actors
