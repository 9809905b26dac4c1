// Batch invariance (DESIGN.md §5): a request's result must not depend on who it was batched with.
// A request computed alone and the same request placed at any position among 64 other requests of
// mixed lengths agree bit for bit (DESIGN.md asks for 1e-6; see packed_gemm.h), for every model
// kind, at a hidden size of whole SIMD panels and one with tails (17: 68 gate columns), with
// token inputs folded or not, and with weights stored as BF16 (alone, a request's GEMMs run on the
// 16-bit panels; in a batch of 64, on the fp32 ones), and with bf16 compute (--cpu-precision
// bf16: AMX tiles at every batch size).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/sync_executor.h"
#include "runtime/text.h"
#include "test_models.h"

namespace cellserve {
namespace {

using testing_models::RandomInput;

// Whether two float vectors hold the same bits (unlike ==, under which a NaN differs from itself
// and -0 equals +0).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

bool SameResult(const RequestResult& a, const RequestResult& b) {
  return a.tokens == b.tokens && a.label == b.label && SameBits(a.logits, b.logits) && SameBits(a.scores, b.scores);
}

// A model of `kind` (weights stored as `dtype`, hidden size `hidden`) on a backend with these
// weight options: each target request alone, then at several positions among 64 others.
void CheckAloneEqualsBatched(ModelKind kind, const std::string& dtype, const cpu::CellWeightOptions& weights,
                             int64_t hidden) {
  auto model = testing_models::Make(kind, hidden, /*layers=*/2, /*seed=*/11, 256, dtype);
  cpu::CpuBackendOptions options;
  options.cell_weights = weights;
  cpu::CpuBackend backend(options);
  const int32_t slots = 1 << 16;
  ASSERT_TRUE(backend.RegisterModel(*model, slots).ok());
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> length(1, 60);
  std::vector<RequestInput> others;
  for (int i = 0; i < 64; ++i) others.push_back(RandomInput(kind, length(rng), rng));

  for (int target_length : {1, 9, 37}) {
    RequestInput target = RandomInput(kind, target_length, rng);
    std::vector<std::unique_ptr<RequestGraph>> one;
    one.push_back(BuildRequestGraph(model, target).value());
    SyncExecutor alone_exec(&backend, model.get(), slots);
    RequestResult alone = alone_exec.Run(one)[0].value();

    for (size_t position : {size_t{0}, size_t{1}, size_t{13}, size_t{32}, size_t{63}, size_t{64}}) {
      std::vector<std::unique_ptr<RequestGraph>> graphs;
      for (size_t i = 0; i <= others.size(); ++i) {
        if (i == position) graphs.push_back(BuildRequestGraph(model, target).value());
        if (i < others.size()) graphs.push_back(BuildRequestGraph(model, others[i]).value());
      }
      SyncExecutor exec(&backend, model.get(), slots);
      auto results = exec.Run(graphs);
      ASSERT_TRUE(results[position].ok()) << results[position].status().ToString();
      // DESIGN.md asks for 1e-6; the packed GEMM makes it exact, so hold it to that.
      EXPECT_TRUE(SameResult(alone, *results[position])) << "length " << target_length << " at position " << position;
      // The batch really was a batch: far fewer batches than cells.
      EXPECT_LT(exec.stats().batches * 4, exec.stats().cells);
      EXPECT_EQ(exec.slots_in_use(), 0);
    }
  }
}

void CheckAloneEqualsBatched(ModelKind kind, const std::string& dtype, const cpu::CellWeightOptions& weights) {
  for (int64_t hidden : {96, 17}) {
    SCOPED_TRACE("hidden " + std::to_string(hidden));
    CheckAloneEqualsBatched(kind, dtype, weights, hidden);
  }
}

// (model kind, token inputs folded: cell_weights.h, weight storage dtype)
class BatchInvariance : public ::testing::TestWithParam<std::tuple<ModelKind, bool, std::string>> {};

TEST_P(BatchInvariance, AloneEqualsAnyPositionInABatchOf64) {
  cpu::CellWeightOptions weights;
  weights.fold_max_bytes = std::get<1>(GetParam()) ? int64_t{1} << 30 : 0;
  CheckAloneEqualsBatched(std::get<0>(GetParam()), std::get<2>(GetParam()), weights);
}

// --cpu-precision bf16 (amx_gemm.h): every product on AMX tiles, alone as in a batch. (model kind,
// token inputs folded)
class BatchInvarianceBf16Compute : public ::testing::TestWithParam<std::tuple<ModelKind, bool>> {};

TEST_P(BatchInvarianceBf16Compute, AloneEqualsAnyPositionInABatchOf64) {
  if (const std::string& why = cpu::AmxBf16Missing(); !why.empty()) GTEST_SKIP() << "no AMX-BF16: " << why;
  cpu::CellWeightOptions weights;
  weights.fold_max_bytes = std::get<1>(GetParam()) ? int64_t{1} << 30 : 0;
  weights.bf16_compute = true;
  CheckAloneEqualsBatched(std::get<0>(GetParam()), "F32", weights);
}

INSTANTIATE_TEST_SUITE_P(AllKinds, BatchInvariance,
                         ::testing::Combine(::testing::Values(ModelKind::kLstm, ModelKind::kSeq2Seq,
                                                              ModelKind::kTreeLstm),
                                            ::testing::Bool(), ::testing::Values("F32", "BF16")),
                         [](const auto& info) {
                           return std::string(ModelKindName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_folded" : "_unfolded") + "_" +
                                  std::get<2>(info.param);
                         });

INSTANTIATE_TEST_SUITE_P(AllKinds, BatchInvarianceBf16Compute,
                         ::testing::Combine(::testing::Values(ModelKind::kLstm, ModelKind::kSeq2Seq,
                                                              ModelKind::kTreeLstm),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(ModelKindName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_folded" : "_unfolded");
                         });

}  // namespace
}  // namespace cellserve
