#include "runtime/worker_loads.h"

#include <algorithm>
#include <tuple>

namespace cellserve {

WorkerLoads::WorkerLoads(int models, int64_t max_requests_per_model)
    : models_(std::max(models, 0)), max_requests_per_model_(max_requests_per_model) {}

void WorkerLoads::Add(int index) {
  if (index < 0) return;
  if (static_cast<size_t>(index) >= workers_.size()) workers_.resize(static_cast<size_t>(index) + 1);
  Worker& w = workers_[static_cast<size_t>(index)];
  w.running = true;
  w.in_flight_per_model.resize(static_cast<size_t>(models_), 0);
}

void WorkerLoads::Remove(int index) {
  if (index < 0 || index >= size()) return;
  Worker& w = workers_[static_cast<size_t>(index)];
  w.running = false;
  w.reported_cells = w.unreported_cells = 0;
}

int WorkerLoads::Pick(int model) const {
  const bool known = model >= 0 && model < models_;
  int best = -1;
  bool best_has_room = false;
  for (int i = 0; i < size(); ++i) {
    const Worker& w = workers_[static_cast<size_t>(i)];
    if (!w.running) continue;
    const bool room = !known || max_requests_per_model_ <= 0 || in_flight(i, model) < max_requests_per_model_;
    if (best >= 0) {
      const Worker& b = workers_[static_cast<size_t>(best)];
      // Room first; then the least outstanding work, then the fewest in flight (then the index).
      if (std::make_tuple(!room, w.reported_cells + w.unreported_cells, w.in_flight) >=
          std::make_tuple(!best_has_room, b.reported_cells + b.unreported_cells, b.in_flight))
        continue;
    }
    best = i;
    best_has_room = room;
  }
  return best;
}

WorkerLoads::Placement WorkerLoads::Place(int worker, int model, int64_t estimate_cells) {
  Placement p;
  if (worker < 0 || worker >= size()) return p;
  Worker& w = workers_[static_cast<size_t>(worker)];
  p.worker = worker;
  p.model = model;
  p.estimate = estimate_cells;
  p.epoch = w.reports;
  w.unreported_cells += estimate_cells;
  ++w.in_flight;
  ++w.assigned;
  if (model >= 0 && static_cast<size_t>(model) < w.in_flight_per_model.size())
    ++w.in_flight_per_model[static_cast<size_t>(model)];
  return p;
}

void WorkerLoads::Finished(const Placement& p, bool ran) {
  if (p.worker < 0 || p.worker >= size()) return;
  Worker& w = workers_[static_cast<size_t>(p.worker)];
  w.in_flight = std::max<int64_t>(0, w.in_flight - 1);
  if (p.model >= 0 && static_cast<size_t>(p.model) < w.in_flight_per_model.size()) {
    int64_t& n = w.in_flight_per_model[static_cast<size_t>(p.model)];
    n = std::max<int64_t>(0, n - 1);
  }
  // Without this, a burst of bad requests left a worker looking busy and the node sent everything
  // to the others.
  if (!ran && w.reports == p.epoch) w.unreported_cells = std::max<int64_t>(0, w.unreported_cells - p.estimate);
}

void WorkerLoads::Report(int worker, int64_t outstanding_cells) {
  if (worker < 0 || worker >= size()) return;
  Worker& w = workers_[static_cast<size_t>(worker)];
  w.reported_cells = outstanding_cells;
  w.unreported_cells = 0;
  ++w.reports;
}

const WorkerLoads::Worker* WorkerLoads::Find(int worker) const {
  return worker >= 0 && worker < size() ? &workers_[static_cast<size_t>(worker)] : nullptr;
}

bool WorkerLoads::running(int worker) const {
  const Worker* w = Find(worker);
  return w && w->running;
}
int64_t WorkerLoads::reported_cells(int worker) const {
  const Worker* w = Find(worker);
  return w ? w->reported_cells : 0;
}
int64_t WorkerLoads::in_flight(int worker) const {
  const Worker* w = Find(worker);
  return w ? w->in_flight : 0;
}
int64_t WorkerLoads::in_flight(int worker, int model) const {
  const Worker* w = Find(worker);
  return w && model >= 0 && static_cast<size_t>(model) < w->in_flight_per_model.size()
             ? w->in_flight_per_model[static_cast<size_t>(model)]
             : 0;
}
int64_t WorkerLoads::assigned(int worker) const {
  const Worker* w = Find(worker);
  return w ? w->assigned : 0;
}

}  // namespace cellserve
