// WorkerLoads: a node's view of its device workers' load, which places each request (DESIGN.md §3
// step 3). Outstanding work of a worker = the outstanding cells of its last load report + an
// estimate of the cells of the requests placed on it since. A request of model M goes to the
// worker with the least outstanding work among those with room for another request of M (fewer
// than `max_requests_per_model` of M in flight there: a worker's scheduler admits that many per
// model and refuses the rest); ties go to the fewest requests in flight, then the lowest index.
// Where no worker has room, the same choice among all (its scheduler refuses it:
// RESOURCE_EXHAUSTED, said once, in one place). Counting per model matters where several models
// share the workers: a busy model's cells would otherwise steer another model's requests onto
// the one worker where that model is full.
// Pure: no threads, no clock. The node actor owns one and calls it on its own thread.
#pragma once

#include <cstdint>
#include <vector>

namespace cellserve {

class WorkerLoads {
 public:
  // What Place returns and Finished takes back: where a request went and what it was counted as.
  struct Placement {
    int worker = -1;
    int model = 0;
    int64_t estimate = 0;  // its cells, added to the worker's unreported cells
    int64_t epoch = 0;     // the worker's reports when it was placed
  };

  // `models`: how many models (indices 0 .. models-1); `max_requests_per_model`: each worker's
  // admission bound per model (SchedulerOptions::max_requests), <= 0 for none.
  WorkerLoads(int models, int64_t max_requests_per_model);

  // Worker `index` is running (the table grows to hold it) / ended (it gets no more requests;
  // its reported load no longer counts).
  void Add(int index);
  void Remove(int index);

  // The worker for a request of `model` (see the top), or -1 when no worker is running.
  int Pick(int model) const;
  // Counts a request of `model`, estimated at `estimate_cells`, as placed on `worker` (from Pick).
  Placement Place(int worker, int model, int64_t estimate_cells);
  // The request ended. `ran`: its worker admitted it. A request refused before its worker admitted
  // it changed no load, so no report will take its estimate back: that is done here (unless a
  // report came since, which took every estimate back already).
  void Finished(const Placement& p, bool ran);
  // A load report: the worker's outstanding cells now (it replaces the estimates so far).
  void Report(int worker, int64_t outstanding_cells);

  bool running(int worker) const;
  int size() const { return static_cast<int>(workers_.size()); }
  int64_t reported_cells(int worker) const;  // 0 for an unknown worker
  int64_t in_flight(int worker) const;       // requests placed there, not finished
  int64_t in_flight(int worker, int model) const;
  int64_t assigned(int worker) const;        // requests placed there so far

 private:
  struct Worker {
    bool running = false;
    int64_t reported_cells = 0;
    int64_t unreported_cells = 0;
    int64_t reports = 0;
    int64_t in_flight = 0;
    int64_t assigned = 0;
    std::vector<int64_t> in_flight_per_model;
  };
  const Worker* Find(int worker) const;

  int models_;
  int64_t max_requests_per_model_;
  std::vector<Worker> workers_;
};

}  // namespace cellserve
