// Golden tests: every model kind against PyTorch (nn.LSTM, greedy seq2seq, a reference
// Tree-LSTM) on the weights and inputs in data/, made by make_goldens.py. Each case runs alone and
// again batched with all the other cases; both must match PyTorch to a relative error < 1e-5. All
// of it runs twice: with token inputs folded (the default, runtime/token_fold.h) and without; on a
// CPU with AMX-BF16 a third time with bf16 compute (--cpu-precision bf16) to a relative error < 2e-2.
// Built twice: golden_test on the CPU backend, and (with CUDA) golden_cuda_test on the CUDA
// backend (CELLSERVE_GOLDEN_CUDA; label gpu; skips where no GPU is usable).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/cpu_backend.h"
#if CELLSERVE_GOLDEN_CUDA
#include "kernels/cuda/cuda_device.h"
#endif
#include "runtime/model_repository.h"
#include "runtime/sync_executor.h"
#include "tests/gpu/gpu_required.h"

namespace cellserve {
namespace {

constexpr double kMaxRelativeError = 1e-5;
// bf16 compute rounds every GEMM input to 8 significant bits: about 2^-9 relative per product.
constexpr double kBf16RelativeError = 2e-2;

// tests/golden/data, or $CELLSERVE_GOLDEN_DIR (the binary run from a copy elsewhere, e.g. on a GPU
// machine: tools/gpu/bundle.sh).
std::string GoldenDir() {
  const char* env = std::getenv("CELLSERVE_GOLDEN_DIR");
  return env && *env ? env : CELLSERVE_GOLDEN_DIR;
}

// max |a - b| / max |b|: the error relative to the reference's scale.
double RelativeError(const std::vector<float>& ours, const std::vector<double>& ref) {
  double diff = 0.0, scale = 1e-12;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::fabs(double(ours[i]) - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return diff / scale;
}

struct GoldenCase {
  RequestInput input;
  nlohmann::json expected;
};

class GoldenTest : public ::testing::TestWithParam<std::string> {};

// The backend settings under test: token inputs folded (the default) and not; on the CPU also bf16
// compute (--cpu-precision bf16, AMX tiles), held to a looser bound, where the CPU has AMX-BF16.
struct Setting {
  bool fold = true;
  bool bf16_compute = false;
  double max_relative_error = kMaxRelativeError;
  std::string name;
};
std::vector<Setting> Settings() {
  std::vector<Setting> settings = {{true, false, kMaxRelativeError, "token inputs folded"},
                                   {false, false, kMaxRelativeError, "token inputs not folded"}};
#if !CELLSERVE_GOLDEN_CUDA
  if (cpu::AmxBf16Support(nullptr)) settings.push_back({true, true, kBf16RelativeError, "bf16 compute, folded"});
#endif
  return settings;
}

// The backend under test; UNAVAILABLE skips (a CUDA build on a machine without a GPU).
StatusOr<std::unique_ptr<Backend>> MakeBackend(const Setting& setting) {
#if CELLSERVE_GOLDEN_CUDA
  cuda::CudaDeviceOptions options;
  if (!setting.fold) options.fold_max_bytes = 0;
  ASSIGN_OR_RETURN(auto gpu, cuda::CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(gpu));
#else
  cpu::CpuBackendOptions options;
  if (!setting.fold) options.cell_weights.fold_max_bytes = 0;
  options.cell_weights.bf16_compute = setting.bf16_compute;
  auto backend = std::make_unique<cpu::CpuBackend>(options);
  return std::unique_ptr<Backend>(std::move(backend));
#endif
}

void CheckResult(const ModelSpec& spec, const StatusOr<RequestResult>& got, const nlohmann::json& want,
                 double max_relative_error, const std::string& what) {
  ASSERT_TRUE(got.ok()) << what << ": " << got.status().ToString();
  if (spec.kind == ModelKind::kSeq2Seq) {
    auto tokens = want.at("output_tokens").get<std::vector<int32_t>>();
    auto scores = want.at("step_scores").get<std::vector<double>>();
    EXPECT_EQ(got->tokens, tokens) << what;
    ASSERT_EQ(got->scores.size(), scores.size()) << what;
    EXPECT_LT(RelativeError(got->scores, scores), max_relative_error) << what;
  } else {
    auto logits = want.at("logits").get<std::vector<double>>();
    ASSERT_EQ(got->logits.size(), logits.size()) << what;
    EXPECT_LT(RelativeError(got->logits, logits), max_relative_error) << what;
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
    EXPECT_EQ(got->label, best) << what;
  }
}

TEST_P(GoldenTest, MatchesPyTorchAloneAndBatched) {
  const std::string dir = GoldenDir() + "/" + GetParam();
  auto model = LoadModel(GoldenDir(), GetParam());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ModelSpec& spec = (*model)->spec();
  std::ifstream in(dir + "/cases.json");
  ASSERT_TRUE(in) << dir;
  nlohmann::json doc = nlohmann::json::parse(in);
  ASSERT_EQ(doc.at("kind").get<std::string>(), ModelKindName(spec.kind));

  std::vector<GoldenCase> cases;
  for (const auto& c : doc.at("cases")) {
    GoldenCase g;
    if (c.contains("tree")) {
      auto tree = ParseTreeSexpr(c.at("tree").get<std::string>());
      ASSERT_TRUE(tree.ok()) << tree.status().ToString();
      g.input.tree = *tree;
      g.input.has_tree = true;
    } else {
      g.input.tokens = c.at("tokens").get<std::vector<int32_t>>();
    }
    g.expected = c;
    cases.push_back(std::move(g));
  }
  ASSERT_GE(cases.size(), 5u);

  for (const Setting& setting : Settings()) {
    SCOPED_TRACE(setting.name);
    auto made = MakeBackend(setting);
    if (!made.ok() && made.status().code() == StatusCode::kUnavailable) SKIP_UNLESS_GPU_REQUIRED(made.status().ToString());
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    Backend& backend = **made;
    const int32_t slots = 4096;
    ASSERT_TRUE(backend.RegisterModel(**model, slots).ok());
    // Alone.
    for (size_t i = 0; i < cases.size(); ++i) {
      auto graph = BuildRequestGraph(*model, cases[i].input);
      ASSERT_TRUE(graph.ok()) << graph.status().ToString();
      std::vector<std::unique_ptr<RequestGraph>> one;
      one.push_back(std::move(*graph));
      SyncExecutor executor(&backend, model->get(), slots);
      auto results = executor.Run(one);
      CheckResult(spec, results[0], cases[i].expected, setting.max_relative_error,
                  GetParam() + " case " + std::to_string(i) + " alone");
      EXPECT_EQ(executor.slots_in_use(), 0) << "slots leaked";
    }
    // All together.
    std::vector<std::unique_ptr<RequestGraph>> all;
    for (const auto& c : cases) all.push_back(BuildRequestGraph(*model, c.input).value());
    SyncExecutor executor(&backend, model->get(), slots);
    auto results = executor.Run(all);
    for (size_t i = 0; i < cases.size(); ++i)
      CheckResult(spec, results[i], cases[i].expected, setting.max_relative_error,
                  GetParam() + " case " + std::to_string(i) + " batched");
    EXPECT_EQ(executor.slots_in_use(), 0) << "slots leaked";
    EXPECT_LT(executor.stats().batches, executor.stats().cells) << "cells were never batched together";
  }
}

std::vector<std::string> GoldenModels() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(GoldenDir()))
    if (std::filesystem::exists(e.path() / "cases.json")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

INSTANTIATE_TEST_SUITE_P(PyTorch, GoldenTest, ::testing::ValuesIn(GoldenModels()),
                         [](const auto& info) { return info.param; });

// Every kind must have goldens: a missing folder must fail, not silently test less.
TEST(GoldenCoverage, EveryModelKindHasGoldens) {
  std::set<std::string> kinds;
  for (const auto& name : GoldenModels()) {
    auto spec = ReadModelSpec(GoldenDir() + "/" + name + "/spec.json");
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    kinds.insert(ModelKindName(spec->kind));
    kinds.insert(spec->dtype);
  }
  for (const char* k : {"lstm", "seq2seq", "treelstm", "F32", "F16", "BF16"}) EXPECT_TRUE(kinds.count(k)) << k;
}

}  // namespace
}  // namespace cellserve
