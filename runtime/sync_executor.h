// SyncExecutor: runs many requests' cell graphs to completion on one backend, cell type by cell
// type: each pass takes every ready cell of a type (in request order, up to max_batch per batch),
// runs the batch, then releases the successors. This is the reference for the math and the
// baseline the real scheduler (cellular batching on actors) must match result for result.
// Slots are allocated when a cell is batched and freed after its last reader ran, or when its
// request finishes or fails. A cell that cannot get a slot waits; if no cell at all can run, the
// newest request holding slots fails with RESOURCE_EXHAUSTED and frees them, so older requests
// finish first and a request bigger than the whole pool fails alone. Single-threaded.
#pragma once

#include <memory>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cell_graph.h"
#include "runtime/state_pool.h"

namespace cellserve {

struct SyncExecutorStats {
  int64_t batches = 0;
  int64_t cells = 0;
};

class SyncExecutor {
 public:
  // `backend` must outlive the executor and have `model` registered with `pool_slots` slots.
  SyncExecutor(Backend* backend, const Model* model, int32_t pool_slots);

  // Runs all graphs (all of this executor's model) to completion. Result i belongs to graphs[i].
  std::vector<StatusOr<RequestResult>> Run(std::vector<std::unique_ptr<RequestGraph>>& graphs);

  const SyncExecutorStats& stats() const { return stats_; }
  const StatePool& pool() const { return pool_; }

 private:
  Backend* backend_;
  const Model* model_;
  StatePool pool_;
  SyncExecutorStats stats_;
};

}  // namespace cellserve
