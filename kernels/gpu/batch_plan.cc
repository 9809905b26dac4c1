#include "kernels/gpu/batch_plan.h"

#include <string>

namespace cellserve::gpu {

namespace {

bool IsHead(CellOp op) { return op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax; }

void SetRow(BatchPlan& plan, int32_t row, int32_t x_src, int32_t h_src, int32_t h2_src, int32_t out) {
  const int64_t b = plan.bucket;
  plan.index[kXSrc * b + row] = x_src;
  plan.index[kHSrc * b + row] = h_src;
  plan.index[kH2Src * b + row] = h2_src;
  plan.index[kOut * b + row] = out;
}

}  // namespace

StatusOr<BatchPlan> PlanBatch(const CellBatch& batch, int32_t slots, int32_t bucket) {
  RETURN_IF_ERROR(CheckCellBatch(batch, slots));
  const int32_t rows = static_cast<int32_t>(batch.rows.size());
  if (bucket < rows)
    return InvalidArgument("bucket of " + std::to_string(bucket) + " rows is smaller than the batch of " +
                           std::to_string(rows));
  const CellType& type = batch.model->cell_type(batch.type);
  const bool head = IsHead(type.op);
  const bool token_fed = type.embedding != nullptr;

  BatchPlan plan;
  plan.rows = rows;
  plan.bucket = bucket;
  plan.index.assign(static_cast<size_t>(kPlanArrays) * bucket, -1);
  for (int32_t r = 0; r < rows; ++r) {
    const CellRow& row = batch.rows[r];
    SetRow(plan, r, token_fed ? row.token : row.x_slot, row.state_slot[0], row.state_slot[1],
           head ? -1 : row.out_slot);
  }
  const int32_t padding_out = head ? -1 : slots;  // the scratch slot, after the real ones
  for (int32_t r = rows; r < bucket; ++r) SetRow(plan, r, -1, -1, -1, padding_out);
  return plan;
}

}  // namespace cellserve::gpu
