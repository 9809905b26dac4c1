// Folded input projections (kernels/cpu/cell_weights.h): which cell types fold, the cap, the
// table's contents, and that whole requests give the same answers folded and unfolded.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "kernels/cpu/cell_weights.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/sync_executor.h"
#include "runtime/text.h"
#include "test_models.h"

namespace cellserve {
namespace {

using testing_models::Make;
using testing_models::RandomInput;

constexpr int64_t kVocab = 100;  // test_models' vocabulary

cpu::CellWeightOptions Cap(int64_t bytes, int threads = 1) {
  cpu::CellWeightOptions options;
  options.fold_max_bytes = bytes;
  options.threads = threads;
  return options;
}

TEST(CellWeights, OnlyTokenFedCellTypesHaveATable) {
  const int64_t H = 16;
  auto lstm = Make(ModelKind::kLstm, H, 2);
  EXPECT_EQ(FoldedTableBytes(lstm->cell_type(lstm->layer_type(0))), kVocab * 4 * H * 4);
  EXPECT_EQ(FoldedTableBytes(lstm->cell_type(lstm->layer_type(1))), 0);
  EXPECT_EQ(FoldedTableBytes(lstm->cell_type(lstm->head_type())), 0);
  auto s2s = Make(ModelKind::kSeq2Seq, H, 2);
  EXPECT_EQ(FoldedTableBytes(s2s->cell_type(s2s->layer_type(0))), kVocab * 4 * H * 4);
  EXPECT_EQ(FoldedTableBytes(s2s->cell_type(s2s->layer_type(1))), 0);
  // The decoder is fed the target vocabulary (60 in test_models).
  EXPECT_EQ(FoldedTableBytes(s2s->cell_type(s2s->decoder_layer_type(0))), 60 * 4 * H * 4);
  EXPECT_EQ(FoldedTableBytes(s2s->cell_type(s2s->decoder_layer_type(1))), 0);
  EXPECT_EQ(FoldedTableBytes(s2s->cell_type(s2s->head_type())), 0);
  auto tree = Make(ModelKind::kTreeLstm, H, 1);
  EXPECT_EQ(FoldedTableBytes(tree->cell_type(tree->leaf_type())), kVocab * 3 * H * 4);
  EXPECT_EQ(FoldedTableBytes(tree->cell_type(tree->internal_type())), 0);
}

TEST(CellWeights, FoldsOnlyWhatFitsTheCap) {
  auto model = Make(ModelKind::kLstm, 16, 1);
  const CellType& layer0 = model->cell_type(model->layer_type(0));
  const int64_t bytes = FoldedTableBytes(layer0);
  const int64_t K = layer0.weight->dim(1), H = 16;

  // The rule both backends share (runtime/token_fold.h), then what the CPU backend makes of it.
  EXPECT_TRUE(WillFold(layer0, bytes));
  EXPECT_FALSE(WillFold(layer0, bytes - 1));
  EXPECT_FALSE(WillFold(layer0, 0));
  EXPECT_FALSE(WillFold(model->cell_type(model->head_type()), int64_t{1} << 30));

  auto at_cap = cpu::PrepareCellWeights(layer0, Cap(bytes));
  EXPECT_TRUE(at_cap.is_folded());
  EXPECT_EQ(at_cap.folded_bytes(), bytes);
  EXPECT_EQ(at_cap.gemm.k(), H);  // only h is left to multiply
  EXPECT_EQ(at_cap.gemm.n(), 4 * H);

  for (int64_t cap : {bytes - 1, int64_t{0}, int64_t{-1}}) {
    auto over = cpu::PrepareCellWeights(layer0, Cap(cap));
    EXPECT_FALSE(over.is_folded()) << cap;
    EXPECT_EQ(over.gemm.k(), K) << cap;  // x and h, as before
  }
  // Not token-fed: never folded, whatever the cap.
  auto head = cpu::PrepareCellWeights(model->cell_type(model->head_type()), Cap(int64_t{1} << 30));
  EXPECT_FALSE(head.is_folded());
}

// A vocabulary of 1,100 rows: five chunks of up to 256 rows, and up to five threads' shares, so
// rows on both sides of every chunk and share boundary are checked.
TEST(CellWeights, TableRowIsTheTokensGatesWithBiasOnAnyThreadCount) {
  ModelSpec spec = Make(ModelKind::kLstm, 24, 1)->spec();
  spec.vocab_size = 1100;
  auto model = testutil::RandomModel(spec, 3);
  const CellType& type = model->cell_type(model->layer_type(0));
  const int64_t E = type.input_dim, G = type.weight->dim(0), K = type.weight->dim(1);
  auto one = cpu::PrepareCellWeights(type, Cap(int64_t{1} << 30, 1));
  ASSERT_TRUE(one.is_folded());
  for (int32_t v : {0, 1, 255, 256, 257, 439, 440, 511, 512, 700, 880, 1023, 1024, 1099}) {
    for (int64_t j = 0; j < G; ++j) {
      double want = type.bias->data()[j];
      for (int64_t k = 0; k < E; ++k)
        want += double(type.weight->data()[j * K + k]) * type.embedding->data()[v * E + k];
      EXPECT_NEAR(one.folded_row(v)[j], want, 1e-5) << "token " << v << " gate " << j;
    }
  }
  // Split over threads (2, 3 and 5 shares), each row is computed the same way: the same bits.
  for (int threads : {2, 3, 7}) {
    auto many = cpu::PrepareCellWeights(type, Cap(int64_t{1} << 30, threads));
    EXPECT_EQ(many.folded, one.folded) << threads << " threads";
  }
}

std::vector<RequestResult> RunAll(const std::shared_ptr<const Model>& model, bool fold,
                                  const std::vector<RequestInput>& inputs) {
  cpu::CpuBackendOptions options;
  options.cell_weights.fold_max_bytes = fold ? int64_t{1} << 30 : 0;
  cpu::CpuBackend backend(options);
  const int32_t slots = 1 << 14;
  EXPECT_TRUE(backend.RegisterModel(*model, slots).ok());
  EXPECT_EQ(backend.FoldedBytes(*model) > 0, fold);
  std::vector<std::unique_ptr<RequestGraph>> graphs;
  for (const RequestInput& in : inputs) graphs.push_back(BuildRequestGraph(model, in).value());
  SyncExecutor executor(&backend, model.get(), slots);
  std::vector<RequestResult> results;
  for (auto& r : executor.Run(graphs)) results.push_back(r.value());
  return results;
}

class FoldedRequests : public ::testing::TestWithParam<ModelKind> {};

// Folding changes only the order of one sum in LSTM cells (rounding); a tree's leaves are the
// same bits. Every request, batched with 31 others, gives the same answer to 1e-5.
TEST_P(FoldedRequests, AnswerAsUnfolded) {
  const ModelKind kind = GetParam();
  auto model = Make(kind, 64, 2, /*seed=*/21);
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> length(1, 40);
  std::vector<RequestInput> inputs;
  for (int i = 0; i < 32; ++i) inputs.push_back(RandomInput(kind, length(rng), rng));
  auto folded = RunAll(model, true, inputs);
  auto unfolded = RunAll(model, false, inputs);
  ASSERT_EQ(folded.size(), unfolded.size());
  double worst = 0.0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const RequestResult &a = folded[i], &b = unfolded[i];
    EXPECT_EQ(a.tokens, b.tokens) << "request " << i;
    EXPECT_EQ(a.label, b.label) << "request " << i;
    ASSERT_EQ(a.logits.size(), b.logits.size());
    ASSERT_EQ(a.scores.size(), b.scores.size());
    for (size_t j = 0; j < a.logits.size(); ++j) {
      EXPECT_NEAR(a.logits[j], b.logits[j], 1e-5 * std::max(1.0f, std::fabs(b.logits[j])));
      worst = std::max(worst, double(std::fabs(a.logits[j] - b.logits[j])));
    }
    for (size_t j = 0; j < a.scores.size(); ++j)
      EXPECT_NEAR(a.scores[j], b.scores[j], 1e-5 * std::max(1.0f, std::fabs(b.scores[j])));
  }
  // Leaves are folded bit for bit, and a tree's internal cells and head are not folded at all.
  if (kind == ModelKind::kTreeLstm) {
    EXPECT_EQ(worst, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(AllKinds, FoldedRequests,
                         ::testing::Values(ModelKind::kLstm, ModelKind::kSeq2Seq, ModelKind::kTreeLstm),
                         [](const auto& info) { return std::string(ModelKindName(info.param)); });

TEST(CellWeights, CacheKeepsOneEntryPerModelAndCap) {
  auto model = Make(ModelKind::kLstm, 16, 1);
  auto cache = std::make_shared<cpu::PackedWeightCache>();
  cpu::CpuBackendOptions folded, unfolded;
  folded.weight_cache = unfolded.weight_cache = cache;
  unfolded.cell_weights.fold_max_bytes = 0;
  cpu::CpuBackend a(folded), b(folded), c(unfolded);
  for (cpu::CpuBackend* backend : {&a, &b, &c}) ASSERT_TRUE(backend->RegisterModel(*model, 4).ok());
  EXPECT_EQ(cache->packs(), 2);
  EXPECT_GT(a.FoldedBytes(*model), 0);
  EXPECT_EQ(b.FoldedBytes(*model), a.FoldedBytes(*model));
  EXPECT_EQ(c.FoldedBytes(*model), 0);
}

// The up-front memory check's estimate is what preparing keeps, plus each folded table's
// temporary (the x columns' fp32 panels): every kind, F32/BF16/F16 weights (16-bit values get a
// 16-bit copy of their panels) and an F32 model whose values are all bf16 (so do its), fp32 or
// bf16 compute (AMX tiles: packing them needs no AMX), folded or not, odd sizes.
TEST(CellWeights, EstimatePreparedWeightsIsWhatPreparingTakes) {
  auto f32_holding_bf16 = [](ModelKind kind, int64_t hidden) {
    auto bf16 = Make(kind, hidden, 2, 3, 256, "BF16");
    SafetensorsFile file;
    for (const auto& [name, shape] : Model::RequiredTensors(bf16->spec()))
      file.tensors[name] = RawTensor::FromFloat(bf16->tensor(name), DType::kF32);
    ModelSpec spec = bf16->spec();
    spec.dtype = "F32";
    return Model::Create(spec, file).value();
  };
  for (ModelKind kind : {ModelKind::kLstm, ModelKind::kSeq2Seq, ModelKind::kTreeLstm})
    for (const char* dtype : {"F32", "BF16", "F16", "F32 holding BF16"})
      for (bool bf16_compute : {false, true})
        for (int64_t fold_max : {int64_t{0}, kDefaultFoldMaxBytes})
          for (int64_t hidden : {8, 37}) {
            auto model = std::string(dtype) == "F32 holding BF16" ? f32_holding_bf16(kind, hidden)
                                                                   : Make(kind, hidden, 2, 3, 256, dtype);
            cpu::CellWeightOptions options;
            options.fold_max_bytes = fold_max;
            options.bf16_compute = bf16_compute;
            int64_t kept = 0, temporaries = 0, tables = 0;
            for (const CellType& type : model->cell_types()) {
              const cpu::CpuCellWeights w = cpu::PrepareCellWeights(type, options);
              kept += w.gemm.bytes() + w.folded_bytes();
              tables += w.folded_bytes();
              if (w.is_folded()) temporaries += (w.outputs + 15) / 16 * 16 * type.input_dim * 4;
            }
            const cpu::PreparedWeightBytes estimate = cpu::EstimatePreparedWeights(*model, options);
            const std::string what = std::string(ModelKindName(kind)) + " " + dtype + " H=" + std::to_string(hidden) +
                                     (bf16_compute ? " bf16 compute" : "") + " fold " + std::to_string(fold_max);
            EXPECT_EQ(estimate.total, kept + temporaries) << what;
            EXPECT_EQ(estimate.folded, tables) << what;
          }
}

}  // namespace
}  // namespace cellserve
