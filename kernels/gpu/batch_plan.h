// Index planning for the GPU backend: a CellBatch becomes the small int32 array that is uploaded
// per round (the only per-round host->device traffic: weights and states stay on the GPU). Pure
// host code, no CUDA; a plain function, safe from any thread; tested on the CPU.
// Layout of BatchPlan::index, four arrays of `bucket` entries each, back to back:
//   x_src  [bucket]  token id (cell types with an embedding) or state slot of x (upper layers,
//                    heads); -1 = zeros
//   h_src  [bucket]  state_slot[0]: h/c of the previous step, or the left child; -1 = zeros
//   h2_src [bucket]  state_slot[1]: the right child (tree internal); -1 = zeros
//   out    [bucket]  out_slot (heads: -1)
// Rows [rows, bucket) are padding: inputs -1 (zeros) and out = the model's scratch slot, which the
// backend allocates after the `slots` real ones (index `slots`), so padding never touches a real
// slot. Heads' padding rows have out = -1 and their results are not copied back.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/backend.h"
#include "runtime/status.h"

namespace cellserve::gpu {

enum PlanArray : int32_t { kXSrc = 0, kHSrc = 1, kH2Src = 2, kOut = 3, kPlanArrays = 4 };

struct BatchPlan {
  int32_t rows = 0;              // real rows (the batch's size)
  int32_t bucket = 0;            // padded rows: the graph bucket, >= rows
  std::vector<int32_t> index;    // kPlanArrays * bucket, layout above
  const int32_t* array(PlanArray a) const { return index.data() + static_cast<int64_t>(a) * bucket; }
};

// Checks the batch (CheckCellBatch, runtime/backend.h) and plans it at `bucket` rows.
// INVALID_ARGUMENT for a malformed batch or bucket < rows. `slots` is the model's registered slot
// count; the scratch slot is `slots`.
StatusOr<BatchPlan> PlanBatch(const CellBatch& batch, int32_t slots, int32_t bucket);

}  // namespace cellserve::gpu
