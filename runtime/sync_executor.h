// SyncExecutor: runs many requests' cell graphs to completion on one backend, synchronously: the
// cellular Scheduler with a lookahead of 1, each round run on the backend as soon as it is
// decided. This is the reference the tests compare the server with (the golden tests pin it to
// PyTorch), and the simple way to run a batch of requests without actors or threads.
// Slots are allocated when a cell is batched and freed after its last reader ran, or when its
// request finishes or fails. A cell that cannot get a slot waits; if no cell at all can run, the
// newest request holding slots fails with RESOURCE_EXHAUSTED and frees them, so older requests
// finish first and a request bigger than the whole pool fails alone. Single-threaded.
#pragma once

#include <memory>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cell_graph.h"

namespace cellserve {

struct SyncExecutorStats {
  int64_t batches = 0;
  int64_t cells = 0;
};

class SyncExecutor {
 public:
  // `backend` must outlive the executor and have `model` registered with `pool_slots` slots.
  SyncExecutor(Backend* backend, const Model* model, int32_t pool_slots);

  // Runs all graphs to completion. Result i belongs to graphs[i]; the graphs stay the caller's
  // (a graph of another model is INVALID_ARGUMENT).
  std::vector<StatusOr<RequestResult>> Run(std::vector<std::unique_ptr<RequestGraph>>& graphs);

  const SyncExecutorStats& stats() const { return stats_; }
  // State slots held after Run: 0 unless something leaked.
  int32_t slots_in_use() const { return slots_in_use_; }

 private:
  Backend* backend_;
  const Model* model_;
  int32_t pool_slots_;
  SyncExecutorStats stats_;
  int32_t slots_in_use_ = 0;
};

}  // namespace cellserve
