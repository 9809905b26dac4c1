// PlanBatch: the index arrays uploaded per round, for every cell op, with padding rows, and its
// rejection of malformed batches (the same checks, via CheckCellBatch, as CpuBackend).
#include "kernels/gpu/batch_plan.h"

#include <gtest/gtest.h>

#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/kernels/test_models.h"

namespace cellserve::gpu {
namespace {

using testing_models::Make;

constexpr int32_t kSlots = 50;  // the scratch slot is 50

CellRow Row(int32_t token, SlotId x, SlotId h, SlotId h2, SlotId out) {
  CellRow row;
  row.token = token;
  row.x_slot = x;
  row.state_slot[0] = h;
  row.state_slot[1] = h2;
  row.out_slot = out;
  return row;
}

std::vector<int32_t> Array(const BatchPlan& plan, PlanArray a) {
  return std::vector<int32_t>(plan.array(a), plan.array(a) + plan.bucket);
}

BatchPlan PlanOrDie(const CellBatch& batch, int32_t bucket) {
  StatusOr<BatchPlan> plan = PlanBatch(batch, kSlots, bucket);
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  return plan.ok() ? *plan : BatchPlan{};
}

using V = std::vector<int32_t>;

TEST(PlanBatch, LstmTokenFedTakesTokensAndPadsToScratch) {
  auto model = Make(ModelKind::kLstm, 16, 2);
  ASSERT_NE(model->cell_type(model->layer_type(0)).embedding, nullptr);
  CellBatch batch{model.get(), model->layer_type(0), {Row(7, -1, -1, -1, 3), Row(99, -1, 12, -1, 4)}};
  BatchPlan plan = PlanOrDie(batch, 4);
  EXPECT_EQ(plan.rows, 2);
  EXPECT_EQ(plan.bucket, 4);
  ASSERT_EQ(plan.index.size(), 16u);
  EXPECT_EQ(Array(plan, kXSrc), (V{7, 99, -1, -1}));
  EXPECT_EQ(Array(plan, kHSrc), (V{-1, 12, -1, -1}));
  EXPECT_EQ(Array(plan, kH2Src), (V{-1, -1, -1, -1}));
  EXPECT_EQ(Array(plan, kOut), (V{3, 4, kSlots, kSlots}));
}

TEST(PlanBatch, LstmUpperLayerTakesXSlotNotToken) {
  auto model = Make(ModelKind::kLstm, 16, 2);
  ASSERT_EQ(model->cell_type(model->layer_type(1)).embedding, nullptr);
  // The token is ignored for a slot-fed layer: x comes from the layer below's slot.
  CellBatch batch{model.get(), model->layer_type(1), {Row(5, 3, 8, -1, 9), Row(-1, 4, -1, -1, 10),
                                                      Row(-1, 11, 2, -1, 1)}};
  BatchPlan plan = PlanOrDie(batch, 4);
  EXPECT_EQ(Array(plan, kXSrc), (V{3, 4, 11, -1}));
  EXPECT_EQ(Array(plan, kHSrc), (V{8, -1, 2, -1}));
  EXPECT_EQ(Array(plan, kH2Src), (V{-1, -1, -1, -1}));
  EXPECT_EQ(Array(plan, kOut), (V{9, 10, 1, kSlots}));
}

TEST(PlanBatch, TreeLeafTakesTokens) {
  auto model = Make(ModelKind::kTreeLstm, 16, 1);
  const int leaf = model->leaf_type();
  ASSERT_EQ(model->cell_type(leaf).op, CellOp::kTreeLeaf);
  CellBatch batch{model.get(), leaf, {Row(0, -1, -1, -1, 20), Row(42, -1, -1, -1, 21)}};
  BatchPlan plan = PlanOrDie(batch, 3);
  EXPECT_EQ(Array(plan, kXSrc), (V{0, 42, -1}));
  EXPECT_EQ(Array(plan, kHSrc), (V{-1, -1, -1}));
  EXPECT_EQ(Array(plan, kH2Src), (V{-1, -1, -1}));
  EXPECT_EQ(Array(plan, kOut), (V{20, 21, kSlots}));
}

TEST(PlanBatch, TreeInternalTakesBothChildren) {
  auto model = Make(ModelKind::kTreeLstm, 16, 1);
  const int internal = model->internal_type();
  ASSERT_EQ(model->cell_type(internal).op, CellOp::kTreeInternal);
  CellBatch batch{model.get(), internal, {Row(-1, -1, 20, 21, 30), Row(-1, -1, 22, -1, 31)}};
  BatchPlan plan = PlanOrDie(batch, 4);
  EXPECT_EQ(Array(plan, kXSrc), (V{-1, -1, -1, -1}));
  EXPECT_EQ(Array(plan, kHSrc), (V{20, 22, -1, -1}));
  EXPECT_EQ(Array(plan, kH2Src), (V{21, -1, -1, -1}));
  EXPECT_EQ(Array(plan, kOut), (V{30, 31, kSlots, kSlots}));
}

TEST(PlanBatch, HeadsWriteNoSlotAndPadWithMinusOne) {
  auto lstm = Make(ModelKind::kLstm, 16, 1);
  auto seq2seq = Make(ModelKind::kSeq2Seq, 16, 1);
  for (const Model* model : {lstm.get(), seq2seq.get()}) {
    const CellOp op = model->cell_type(model->head_type()).op;
    ASSERT_TRUE(op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax);
    CellBatch batch{model, model->head_type(), {Row(-1, 6, -1, -1, -1), Row(-1, 49, -1, -1, -1)}};
    BatchPlan plan = PlanOrDie(batch, 4);
    EXPECT_EQ(Array(plan, kXSrc), (V{6, 49, -1, -1})) << model->cell_type(model->head_type()).name;
    EXPECT_EQ(Array(plan, kHSrc), (V{-1, -1, -1, -1}));
    EXPECT_EQ(Array(plan, kH2Src), (V{-1, -1, -1, -1}));
    EXPECT_EQ(Array(plan, kOut), (V{-1, -1, -1, -1}));
  }
  EXPECT_EQ(lstm->cell_type(lstm->head_type()).op, CellOp::kHeadLogits);
  EXPECT_EQ(seq2seq->cell_type(seq2seq->head_type()).op, CellOp::kHeadArgmax);
}

TEST(PlanBatch, ExactBucketHasNoPadding) {
  auto model = Make(ModelKind::kLstm, 16, 1);
  CellBatch batch{model.get(), model->layer_type(0), {Row(1, -1, -1, -1, 0), Row(2, -1, -1, -1, 49)}};
  BatchPlan plan = PlanOrDie(batch, 2);
  EXPECT_EQ(plan.index, (V{1, 2, -1, -1, -1, -1, 0, 49}));  // the four arrays back to back
}

TEST(PlanBatch, RejectsBucketSmallerThanBatch) {
  auto model = Make(ModelKind::kLstm, 16, 1);
  CellBatch batch{model.get(), model->layer_type(0), {Row(1, -1, -1, -1, 0), Row(2, -1, -1, -1, 1)}};
  StatusOr<BatchPlan> plan = PlanBatch(batch, kSlots, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(PlanBatch(batch, kSlots, 2).ok());
}

TEST(PlanBatch, RejectsMalformedBatches) {
  auto model = Make(ModelKind::kLstm, 16, 2, 3, /*max_batch=*/4);
  const int layer0 = model->layer_type(0), layer1 = model->layer_type(1), head = model->head_type();
  const CellRow good = Row(1, -1, -1, -1, 0);
  auto code = [](const CellBatch& batch) { return PlanBatch(batch, kSlots, 8).status().code(); };
  EXPECT_EQ(code({model.get(), layer0, {good}}), StatusCode::kOk);
  EXPECT_EQ(code({nullptr, layer0, {good}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), -1, {good}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), 99, {good}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer0, {}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer0, {good, good, good, good, good}}), StatusCode::kInvalidArgument);
  // Token out of the vocabulary (100), then no token for a token-fed layer.
  EXPECT_EQ(code({model.get(), layer0, {Row(100, -1, -1, -1, 0)}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer0, {Row(-1, -1, -1, -1, 0)}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer0, {Row(1, -1, kSlots, -1, 0)}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer0, {Row(1, -1, -2, -1, 0)}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer0, {Row(1, -1, -1, -1, -1)}}), StatusCode::kInvalidArgument);  // no out
  EXPECT_EQ(code({model.get(), layer0, {Row(1, -1, -1, -1, kSlots)}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), layer1, {Row(-1, kSlots, -1, -1, 0)}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({model.get(), head, {Row(-1, -1, -1, -1, -1)}}), StatusCode::kInvalidArgument);  // head x
  EXPECT_EQ(PlanBatch({nullptr, layer0, {good}}, kSlots, 8).status().message(), "batch has no model");
}

// The CPU backend and the GPU planner run the one shared check: same verdicts, same messages.
TEST(PlanBatch, SameChecksAndMessagesAsCpuBackend) {
  auto model = Make(ModelKind::kLstm, 8, 1, 3, /*max_batch=*/4);
  cpu::CpuBackend backend;
  ASSERT_TRUE(backend.RegisterModel(*model, kSlots).ok());
  const CellRow good = Row(1, -1, -1, -1, 0);
  const std::vector<CellBatch> batches = {
      {model.get(), 7, {good}},
      {model.get(), 0, {}},
      {model.get(), 0, {good, good, good, good, good}},
      {model.get(), 0, {Row(1, -1, kSlots, -1, 0)}},
      {model.get(), model->head_type(), {Row(-1, -1, -1, -1, -1)}},
  };
  for (const CellBatch& batch : batches) {
    const Status cpu = backend.Run(batch).status();
    const Status gpu = PlanBatch(batch, kSlots, 8).status();
    EXPECT_EQ(cpu.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(gpu.code(), cpu.code());
    EXPECT_EQ(gpu.message(), cpu.message());
    EXPECT_EQ(CheckCellBatch(batch, kSlots).message(), cpu.message());
  }
  EXPECT_EQ(CheckCellBatch({model.get(), 0, {good, good, good, good, good}}, kSlots).message(),
            "batch of 5 lstm.0 cells exceeds max_batch 4");
}

}  // namespace
}  // namespace cellserve::gpu
