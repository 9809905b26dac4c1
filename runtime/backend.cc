#include "runtime/backend.h"

#include <string>

namespace cellserve {

namespace {

bool IsHead(CellOp op) { return op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax; }

// A required slot is a real slot; an optional one may also be -1 (reads as zeros).
bool SlotInRange(SlotId slot, int32_t slots, bool required) {
  return required ? (slot >= 0 && slot < slots) : (slot >= -1 && slot < slots);
}

bool RowInRange(const CellType& type, const CellRow& row, int32_t slots) {
  const bool head = IsHead(type.op);
  bool ok = SlotInRange(row.state_slot[0], slots, false) && SlotInRange(row.state_slot[1], slots, false) &&
            SlotInRange(row.out_slot, slots, !head);
  if (type.embedding) ok = ok && row.token >= 0 && row.token < type.embedding->dim(0);
  else ok = ok && SlotInRange(row.x_slot, slots, head);  // an absent x reads as zeros (padding rows)
  return ok;
}

}  // namespace

Status CheckCellBatch(const CellBatch& batch, int32_t slots) {
  if (!batch.model) return InvalidArgument("batch has no model");
  const Model& m = *batch.model;
  if (batch.type < 0 || batch.type >= static_cast<int32_t>(m.cell_types().size()))
    return InvalidArgument("cell type " + std::to_string(batch.type) + " does not exist");
  const CellType& t = m.cell_type(batch.type);
  if (batch.rows.empty()) return InvalidArgument("empty batch");
  if (static_cast<int64_t>(batch.rows.size()) > t.max_batch)
    return InvalidArgument("batch of " + std::to_string(batch.rows.size()) + " " + t.name +
                           " cells exceeds max_batch " + std::to_string(t.max_batch));
  for (const CellRow& r : batch.rows)
    if (!RowInRange(t, r, slots))
      return InvalidArgument("malformed " + t.name + " row (token or slot out of range)");
  return OkStatus();
}

}  // namespace cellserve
