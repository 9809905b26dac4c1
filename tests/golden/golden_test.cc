// Golden tests: every model kind against PyTorch (nn.LSTM, greedy seq2seq, a reference
// Tree-LSTM) on the weights and inputs in data/, made by make_goldens.py. Each case runs alone and
// again batched with all the other cases; both must match PyTorch to a relative error < 1e-5. All
// of it runs three times: with token inputs folded (the default, runtime/token_fold.h), without,
// and with an 8 KiB cap that folds one side of a seq2seq model and not the other; on a CPU with
// AMX-BF16 twice more (folded and not) with bf16 compute (--cpu-precision bf16) to a relative
// error < 2e-2, and further from PyTorch than 1e-5 somewhere (else bf16 did not run).
// Built twice: golden_test on the CPU backend, and (with CUDA) golden_cuda_test on the CUDA
// backend (CELLSERVE_GOLDEN_CUDA; label gpu; skips where no GPU is usable).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/cpu_backend.h"
#if CELLSERVE_GOLDEN_CUDA
#include "kernels/cuda/cuda_device.h"
#endif
#include "runtime/model_repository.h"
#include "runtime/sync_executor.h"
#include "runtime/token_fold.h"
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

// A fold cap between the two token-fed tables of the seq2seq goldens (30 and 40 rows of 64 fp32
// gates: 7,680 and 10,240 bytes): seq2seq_small folds its decoder only, seq2seq_l1_ids its encoder
// only (GoldenCoverage checks that they still do).
constexpr int64_t kPartialFoldBytes = 8192;

// The backend settings under test: token inputs folded (the default), not, and partly; on the CPU
// also bf16 compute (--cpu-precision bf16, AMX tiles), held to a looser bound, where the CPU has
// AMX-BF16.
struct Setting {
  int64_t fold_max_bytes = kDefaultFoldMaxBytes;
  bool bf16_compute = false;
  double max_relative_error = kMaxRelativeError;
  std::string name;
};
std::vector<Setting> Settings() {
  std::vector<Setting> settings = {
      {kDefaultFoldMaxBytes, false, kMaxRelativeError, "token inputs folded"},
      {0, false, kMaxRelativeError, "token inputs not folded"},
      {kPartialFoldBytes, false, kMaxRelativeError, "token inputs folded up to 8 KiB a table"}};
#if !CELLSERVE_GOLDEN_CUDA
  if (cpu::AmxBf16Missing().empty()) {
    settings.push_back({kDefaultFoldMaxBytes, true, kBf16RelativeError, "bf16 compute, folded"});
    settings.push_back({0, true, kBf16RelativeError, "bf16 compute, not folded"});
  }
#endif
  return settings;
}

// The backend under test; UNAVAILABLE skips (a CUDA build on a machine without a GPU).
StatusOr<std::unique_ptr<Backend>> MakeBackend(const Setting& setting) {
#if CELLSERVE_GOLDEN_CUDA
  cuda::CudaDeviceOptions options;
  options.fold_max_bytes = setting.fold_max_bytes;
  ASSIGN_OR_RETURN(auto gpu, cuda::CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(gpu));
#else
  cpu::CpuBackendOptions options;
  options.cell_weights.fold_max_bytes = setting.fold_max_bytes;
  options.cell_weights.bf16_compute = setting.bf16_compute;
  auto backend = std::make_unique<cpu::CpuBackend>(options);
  return std::unique_ptr<Backend>(std::move(backend));
#endif
}

// Checks one result against PyTorch's; returns its relative error (0 when it failed otherwise).
double CheckResult(const ModelSpec& spec, const StatusOr<RequestResult>& got, const nlohmann::json& want,
                   double max_relative_error, const std::string& what) {
  if (!got.ok()) {
    ADD_FAILURE() << what << ": " << got.status().ToString();
    return 0.0;
  }
  const bool seq2seq = spec.kind == ModelKind::kSeq2Seq;
  const auto reference = want.at(seq2seq ? "step_scores" : "logits").get<std::vector<double>>();
  const std::vector<float>& ours = seq2seq ? got->scores : got->logits;
  if (seq2seq) {
    EXPECT_EQ(got->tokens, want.at("output_tokens").get<std::vector<int32_t>>()) << what;
  } else {
    const auto best = std::max_element(reference.begin(), reference.end()) - reference.begin();
    EXPECT_EQ(got->label, best) << what;
  }
  if (ours.size() != reference.size()) {
    ADD_FAILURE() << what << ": " << ours.size() << " values, PyTorch has " << reference.size();
    return 0.0;
  }
  const double error = RelativeError(ours, reference);
  EXPECT_LT(error, max_relative_error) << what;
  return error;
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
    double worst = 0.0;
    // Alone.
    for (size_t i = 0; i < cases.size(); ++i) {
      auto graph = BuildRequestGraph(*model, cases[i].input);
      ASSERT_TRUE(graph.ok()) << graph.status().ToString();
      std::vector<std::unique_ptr<RequestGraph>> one;
      one.push_back(std::move(*graph));
      SyncExecutor executor(&backend, model->get(), slots);
      auto results = executor.Run(one);
      worst = std::max(worst, CheckResult(spec, results[0], cases[i].expected, setting.max_relative_error,
                                          GetParam() + " case " + std::to_string(i) + " alone"));
      EXPECT_EQ(executor.slots_in_use(), 0) << "slots leaked";
    }
    // All together.
    std::vector<std::unique_ptr<RequestGraph>> all;
    for (const auto& c : cases) all.push_back(BuildRequestGraph(*model, c.input).value());
    SyncExecutor executor(&backend, model->get(), slots);
    auto results = executor.Run(all);
    for (size_t i = 0; i < cases.size(); ++i)
      worst = std::max(worst, CheckResult(spec, results[i], cases[i].expected, setting.max_relative_error,
                                          GetParam() + " case " + std::to_string(i) + " batched"));
    EXPECT_EQ(executor.slots_in_use(), 0) << "slots leaked";
    EXPECT_LT(executor.stats().batches, executor.stats().cells) << "cells were never batched together";
    if (setting.bf16_compute) {
      EXPECT_GT(worst, kMaxRelativeError) << "bf16 compute gave fp32's accuracy: did bf16 run at all?";
    }
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

// The layer counts the goldens cover: 1 (`cellserve model init`'s default), 2 and 3, for the lstm
// and seq2seq kinds; and seq2seq ids other than the spec's defaults.
TEST(GoldenCoverage, LayerCountsAndSeq2SeqIds) {
  std::set<std::pair<std::string, int>> layers;
  bool other_ids = false;
  for (const auto& name : GoldenModels()) {
    auto spec = ReadModelSpec(GoldenDir() + "/" + name + "/spec.json");
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    layers.insert({ModelKindName(spec->kind), spec->layers});
    other_ids |= spec->kind == ModelKind::kSeq2Seq && spec->bos_id != ModelSpec{}.bos_id && spec->eos_id != ModelSpec{}.eos_id;
  }
  for (const char* kind : {"lstm", "seq2seq"})
    for (int l : {1, 2, 3}) EXPECT_TRUE(layers.count({kind, l})) << kind << " with " << l << " layer(s)";
  EXPECT_TRUE(other_ids) << "no seq2seq golden with bos and eos other than the defaults";
}

// kPartialFoldBytes folds one side of a seq2seq golden and not the other, each way round.
TEST(GoldenCoverage, ThePartialFoldCapSplitsSeq2SeqModelsBothWays) {
  bool encoder_only = false, decoder_only = false;
  for (const auto& name : GoldenModels()) {
    auto model = LoadModel(GoldenDir(), name);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    if ((*model)->spec().kind != ModelKind::kSeq2Seq) continue;
    bool encoder = false, decoder = false;
    for (const CellType& type : (*model)->cell_types()) {
      if (!WillFold(type, kPartialFoldBytes)) continue;
      (type.name.rfind("decoder", 0) == 0 ? decoder : encoder) = true;
    }
    encoder_only |= encoder && !decoder;
    decoder_only |= decoder && !encoder;
  }
  EXPECT_TRUE(encoder_only) << "no seq2seq golden folds only its encoder at " << kPartialFoldBytes << " bytes";
  EXPECT_TRUE(decoder_only) << "no seq2seq golden folds only its decoder at " << kPartialFoldBytes << " bytes";
}

}  // namespace
}  // namespace cellserve
