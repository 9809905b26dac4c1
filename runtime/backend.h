// The compute backend interface (DESIGN.md §5), as plain types so runtime/ can drive any backend
// and be tested against a fake one. A backend owns the state storage of each registered model
// (capacity slots of h and c, indexed by the StatePool's SlotIds) and runs batches of cells of one
// type: gather the inputs by slot index, one GEMM for all gates, one fused element-wise pass that
// writes straight into the output slots.
// This synchronous form returns when the batch is done; a Device (runtime/device.h) wraps it on a
// thread of its own. A backend is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/model.h"
#include "runtime/state_pool.h"
#include "runtime/status.h"

namespace cellserve {

// One cell of a batch. Inputs absent (-1) read as zeros.
struct CellRow {
  int32_t token = -1;                 // x = embedding[token] (first-layer LSTM cells, tree leaves)
  SlotId x_slot = -1;                 // x = h of this slot (upper layers, heads)
  SlotId state_slot[2] = {-1, -1};    // (h, c) of the previous step / left and right children
  SlotId out_slot = -1;               // where this cell's (h, c) goes (not for heads)
};

struct CellBatch {
  const Model* model = nullptr;
  int32_t type = -1;                  // index into model->cell_types()
  std::vector<CellRow> rows;
};

// Per-row results of a head batch (empty for other cell types).
struct BatchOutput {
  std::vector<int32_t> argmax;        // [rows]
  std::vector<float> max_value;       // [rows]
  std::vector<float> logits;          // kHeadLogits: [rows, outputs]; otherwise empty
};

// The checks every backend makes before running a batch, with the same messages everywhere:
// INVALID_ARGUMENT if the batch has no model, its type does not exist, it is empty or larger than
// the type's max_batch, or a row's token or slot is out of range for `slots` registered slots
// (required: out_slot of non-heads, x_slot of heads, the token of embedding-fed types; the other
// slots may be -1 = zeros). Whether the model is registered is the caller's check.
Status CheckCellBatch(const CellBatch& batch, int32_t slots);

class Backend {
 public:
  virtual ~Backend() = default;
  // Allocates state storage for `slots` slots of the model's hidden size. Must precede Run on it.
  virtual Status RegisterModel(const Model& model, int32_t slots) = 0;
  // Runs one batch. INVALID_ARGUMENT for a malformed batch (unknown model or type, slot out of
  // range, more rows than max_batch); the backend checks, callers may still be wrong.
  virtual StatusOr<BatchOutput> Run(const CellBatch& batch) = 0;
  // Copies one slot's (h, c) out, for tests and debugging: 2 * hidden floats.
  virtual StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot) = 0;
};

}  // namespace cellserve
