// CpuBackend against a plain double-precision reference of each cell op, and its input checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <string>

#include "kernels/cpu/activations.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/memory_limit.h"
#include "test_models.h"
#include "tests/unit/common/address_space.h"
#include "tests/unit/common/sanitizers.h"

namespace cellserve {
namespace {

using testing_models::Make;

double Sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// gates[j] = sum_k W[j, k] * x[k] + b[j], in double.
std::vector<double> Affine(const Tensor& w, const Tensor& b, const std::vector<double>& x) {
  const int64_t rows = w.dim(0), cols = w.dim(1);
  std::vector<double> g(rows);
  for (int64_t j = 0; j < rows; ++j) {
    double s = b.data()[j];
    for (int64_t k = 0; k < cols; ++k) s += double(w.data()[j * cols + k]) * x[k];
    g[j] = s;
  }
  return g;
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

TEST(Activations, MatchLibm) {
  for (float x = -30.0f; x <= 30.0f; x += 0.0137f) {
    EXPECT_NEAR(cpu::ExpApprox(x), std::exp(double(x)), 3e-7 * std::exp(double(x))) << x;
    EXPECT_NEAR(cpu::Sigmoid(x), Sig(x), 2e-7) << x;
    EXPECT_NEAR(cpu::Tanh(x), std::tanh(double(x)), 3e-7) << x;
  }
  // Far outside the clamp range: finite and saturated, never inf or nan.
  EXPECT_GE(cpu::Sigmoid(-1000.0f), 0.0f);
  EXPECT_LT(cpu::Sigmoid(-1000.0f), 1e-30f);
  EXPECT_NEAR(cpu::Sigmoid(1000.0f), 1.0f, 1e-7);
  EXPECT_NEAR(cpu::Tanh(-1000.0f), -1.0f, 1e-7);
}

// The reference checks run with token inputs folded (cell_weights.h) and without.
cpu::CpuBackendOptions FoldOptions(bool fold) {
  cpu::CpuBackendOptions options;
  options.cell_weights.fold_max_bytes = fold ? int64_t{1} << 30 : 0;
  return options;
}

class CpuBackendCells : public ::testing::TestWithParam<bool> {};

TEST_P(CpuBackendCells, LstmStepMatchesReference) {
  auto model = Make(ModelKind::kLstm, 24, 2);
  cpu::CpuBackend backend(FoldOptions(GetParam()));
  ASSERT_TRUE(backend.RegisterModel(*model, 64).ok());
  // Only layer 0 is token-fed: its [vocab 100, 4H] table is what gets folded.
  EXPECT_EQ(backend.FoldedBytes(*model), GetParam() ? 100 * 4 * 24 * 4 : 0);
  const int64_t H = 24, E = model->spec().embed_dim;
  // Layer 0, step 0 for 5 tokens (zero state), outputs in slots 10..14.
  CellBatch b0{model.get(), model->layer_type(0), {}};
  const int32_t tokens[] = {0, 7, 99, 7, 42};
  for (int r = 0; r < 5; ++r) {
    CellRow row;
    row.token = tokens[r];
    row.out_slot = 10 + r;
    b0.rows.push_back(row);
  }
  ASSERT_TRUE(backend.Run(b0).ok());
  // Layer 0, step 1 continuing from those states: x from the embedding, (h, c) from the slots.
  CellBatch b1{model.get(), model->layer_type(0), {}};
  for (int r = 0; r < 5; ++r) {
    CellRow row;
    row.token = tokens[4 - r];
    row.state_slot[0] = 10 + r;
    row.out_slot = 20 + r;
    b1.rows.push_back(row);
  }
  ASSERT_TRUE(backend.Run(b1).ok());
  // Layer 1 reading h of layer 0 as x.
  CellBatch b2{model.get(), model->layer_type(1), {}};
  for (int r = 0; r < 5; ++r) {
    CellRow row;
    row.x_slot = 20 + r;
    row.state_slot[0] = r % 2 ? 10 + r : -1;
    row.out_slot = 30 + r;
    b2.rows.push_back(row);
  }
  ASSERT_TRUE(backend.Run(b2).ok());

  auto cell = [&](const CellType& t, const std::vector<double>& x, const std::vector<double>& h,
                  const std::vector<double>& c) {
    std::vector<double> xh = x;
    xh.insert(xh.end(), h.begin(), h.end());
    auto g = Affine(*t.weight, *t.bias, xh);
    std::vector<double> out(2 * H);
    for (int64_t j = 0; j < H; ++j) {
      double i = Sig(g[j]), f = Sig(g[H + j]), u = std::tanh(g[2 * H + j]), o = Sig(g[3 * H + j]);
      out[H + j] = f * c[j] + i * u;
      out[j] = o * std::tanh(out[H + j]);
    }
    return out;
  };
  auto emb = [&](int32_t tok) {
    const float* p = model->tensor("embedding").data() + tok * E;
    return std::vector<double>(p, p + E);
  };
  auto slot = [&](SlotId s) {
    auto v = backend.ReadSlot(*model, s).value();
    return std::vector<double>(v.begin(), v.end());
  };
  std::vector<double> zeros(H, 0.0);
  for (int r = 0; r < 5; ++r) {
    auto s0 = cell(model->cell_type(model->layer_type(0)), emb(tokens[r]), zeros, zeros);
    ExpectNear(backend.ReadSlot(*model, 10 + r).value(), s0, 1e-6);
    auto prev = slot(10 + r);
    auto s1 = cell(model->cell_type(model->layer_type(0)), emb(tokens[4 - r]),
                   {prev.begin(), prev.begin() + H}, {prev.begin() + H, prev.end()});
    ExpectNear(backend.ReadSlot(*model, 20 + r).value(), s1, 1e-6);
    auto x = slot(20 + r);
    std::vector<double> h = zeros, c = zeros;
    if (r % 2) {
      h.assign(prev.begin(), prev.begin() + H);
      c.assign(prev.begin() + H, prev.end());
    }
    auto s2 = cell(model->cell_type(model->layer_type(1)), {x.begin(), x.begin() + H}, h, c);
    ExpectNear(backend.ReadSlot(*model, 30 + r).value(), s2, 1e-6);
  }
}

TEST_P(CpuBackendCells, TreeCellsAndHeadMatchReference) {
  auto model = Make(ModelKind::kTreeLstm, 16, 1);
  cpu::CpuBackend backend(FoldOptions(GetParam()));
  ASSERT_TRUE(backend.RegisterModel(*model, 16).ok());
  EXPECT_EQ(backend.FoldedBytes(*model), GetParam() ? 100 * 3 * 16 * 4 : 0);  // the leaves' table
  const int64_t H = 16, E = model->spec().embed_dim;
  CellBatch leaves{model.get(), model->leaf_type(), {}};
  for (int r = 0; r < 2; ++r) {
    CellRow row;
    row.token = 5 + r * 50;
    row.out_slot = r;
    leaves.rows.push_back(row);
  }
  ASSERT_TRUE(backend.Run(leaves).ok());
  CellBatch internal{model.get(), model->internal_type(), {}};
  CellRow in;
  in.state_slot[0] = 0;
  in.state_slot[1] = 1;
  in.out_slot = 2;
  internal.rows.push_back(in);
  ASSERT_TRUE(backend.Run(internal).ok());
  CellBatch head{model.get(), model->head_type(), {}};
  CellRow hr;
  hr.x_slot = 2;
  head.rows.push_back(hr);
  auto out = backend.Run(head);
  ASSERT_TRUE(out.ok());

  std::vector<std::vector<double>> leaf(2);
  for (int r = 0; r < 2; ++r) {
    const float* e = model->tensor("embedding").data() + (5 + r * 50) * E;
    auto g = Affine(model->tensor("tree.leaf.weight"), model->tensor("tree.leaf.bias"),
                    std::vector<double>(e, e + E));
    leaf[r].resize(2 * H);
    for (int64_t j = 0; j < H; ++j) {
      double c = Sig(g[j]) * std::tanh(g[2 * H + j]);
      leaf[r][H + j] = c;
      leaf[r][j] = Sig(g[H + j]) * std::tanh(c);
    }
    ExpectNear(backend.ReadSlot(*model, r).value(), leaf[r], 1e-6);
  }
  std::vector<double> hh(leaf[0].begin(), leaf[0].begin() + H);
  hh.insert(hh.end(), leaf[1].begin(), leaf[1].begin() + H);
  auto g = Affine(model->tensor("tree.internal.weight"), model->tensor("tree.internal.bias"), hh);
  std::vector<double> node(2 * H);
  for (int64_t j = 0; j < H; ++j) {
    double c = Sig(g[j]) * std::tanh(g[4 * H + j]) + Sig(g[H + j]) * leaf[0][H + j] +
               Sig(g[2 * H + j]) * leaf[1][H + j];
    node[H + j] = c;
    node[j] = Sig(g[3 * H + j]) * std::tanh(c);
  }
  ExpectNear(backend.ReadSlot(*model, 2).value(), node, 1e-6);
  auto logits = Affine(model->tensor("head.weight"), model->tensor("head.bias"),
                       std::vector<double>(node.begin(), node.begin() + H));
  ExpectNear(out->logits, logits, 1e-6);
  EXPECT_EQ(out->argmax[0], std::max_element(logits.begin(), logits.end()) - logits.begin());
}

INSTANTIATE_TEST_SUITE_P(Fold, CpuBackendCells, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Folded" : "Unfolded"; });

TEST(CpuBackend, StateSlotsBeyondMemoryAreAnErrorNotACrash) {
  auto model = Make(ModelKind::kLstm, 512, 1);
  cpu::CpuBackend backend;
  // 2^30 slots of 2 x 512 floats: 4 TiB, more than any machine this runs on.
  Status s = backend.RegisterModel(*model, 1 << 30);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.message().find("--state-slots"), std::string::npos) << s.ToString();
  EXPECT_TRUE(backend.RegisterModel(*model, 4).ok()) << "nothing was left half-registered";
}

// State slots take memory as they fill (runtime/zero_floats.h), so registering them leaves them
// untouched; they still count as taken for the next registration's check: two devices whose slots
// each fit what this process may take, but not together, are refused the second time, though the
// first's are not resident.
TEST(CpuBackend, ReservedSlotsCountForTheNextRegistrationThoughNotYetResident) {
  auto model = Make(ModelKind::kLstm, 512, 1);
  constexpr double kSlotBytes = 2 * 512 * sizeof(float);
  const MemoryReadings r = ReadMemoryOfThisProcess();
  if (MemoryHeadroom(r) != std::min(r.machine_total, r.cgroup_limit) - r.anon_resident)
    GTEST_SKIP() << "the address-space limit binds here: it counts the mapping already";
  const auto slots = static_cast<int32_t>(std::min<double>(0.6 * MemoryHeadroom(r) / kSlotBytes, INT32_MAX));
  cpu::CpuBackend first, second;
  const double anon_before = ReadMemoryOfThisProcess().anon_resident;
  ASSERT_TRUE(first.RegisterModel(*model, slots).ok());
  EXPECT_LT(ReadMemoryOfThisProcess().anon_resident - anon_before, 0.1 * slots * kSlotBytes)
      << "the slots were made resident at registration";
  Status s = second.RegisterModel(*model, slots);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.message().find("--state-slots"), std::string::npos) << s.ToString();
}

TEST(CpuBackendDeathTest, AnAllocationThatFailsIsAnErrorNotACrash) {
  CELLSERVE_SKIP_UNDER_ASAN("it limits the address space");
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // the process may have BLAS or actor threads
  // In a child: a data-segment limit (RLIMIT_DATA, which the headroom does not read: it stands
  // in for any allocation that fails all the same) 32 MiB above what it has, and 64 MiB of state
  // slots. The up-front check passes, the allocation cannot: RegisterModel says so instead of
  // letting std::bad_alloc end the process.
  auto model = Make(ModelKind::kLstm, 512, 1);
  constexpr int64_t slot_bytes = 2 * 512 * sizeof(float);
  if (!testutil::DataLimitIsEnforced()) GTEST_SKIP() << "this kernel does not enforce RLIMIT_DATA";
  auto child = [&model] {
    if (!testutil::LimitDataTo(int64_t{32} << 20)) std::_Exit(3);
    cpu::CpuBackend backend;
    Status s = backend.RegisterModel(*model, static_cast<int32_t>((int64_t{64} << 20) / slot_bytes));
    const bool allocation_failed = s.message().find("do not fit") != std::string::npos;
    if (!allocation_failed) std::fprintf(stderr, "got: %s\n", s.ToString().c_str());
    std::_Exit(s.code() == StatusCode::kResourceExhausted && allocation_failed ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
  // Slots beyond the headroom (twice it) are refused before any allocation.
  auto beyond = [&model] {
    if (!testutil::LimitAddressSpaceTo(int64_t{64} << 20)) std::_Exit(3);
    cpu::CpuBackend backend;
    const double slots = 2 * MemoryHeadroomOfThisProcess() / slot_bytes;
    Status s = backend.RegisterModel(*model, static_cast<int32_t>(std::min<double>(slots, INT32_MAX)));
    const bool checked = s.message().find("more than the memory this process may still take") != std::string::npos;
    std::_Exit(s.code() == StatusCode::kResourceExhausted && checked ? 0 : 1);
  };
  EXPECT_EXIT(beyond(), ::testing::ExitedWithCode(0), "");
}

TEST(CpuBackendDeathTest, EachRegistrationIsCheckedAgainstWhatTheEarlierOnesTook) {
  CELLSERVE_SKIP_UNDER_ASAN("it limits the address space");
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The CPU devices of a process register one after another, each its own state slots: three
  // devices whose slots each fit the headroom but together do not. The third is refused up front,
  // not left to an allocation (under a cgroup limit it would not fail: the OOM killer would come).
  auto model = Make(ModelKind::kLstm, 512, 1);
  auto child = [&model] {
    if (!testutil::LimitAddressSpaceTo(int64_t{512} << 20)) std::_Exit(3);
    const int64_t slot_bytes = 2 * 512 * sizeof(float);
    const auto slots = static_cast<int32_t>(0.4 * MemoryHeadroomOfThisProcess() / slot_bytes);
    cpu::CpuBackendOptions unfolded;  // the third folds nothing: no --fold-max-mib hint for it
    unfolded.cell_weights.fold_max_bytes = 0;
    cpu::CpuBackend a, b, c(unfolded);
    if (!a.RegisterModel(*model, slots).ok() || !b.RegisterModel(*model, slots).ok()) std::_Exit(4);
    Status s = c.RegisterModel(*model, slots);
    const std::string& m = s.message();
    const double take = static_cast<double>(slots) * slot_bytes +
                        static_cast<double>(cpu::EstimatePreparedWeights(*model, unfolded.cell_weights).total);
    const bool checked = m.find("more than the memory this process may still take") != std::string::npos &&
                         m.find(" take " + MiBText(take) + " MiB") != std::string::npos &&
                         m.find("--state-slots") != std::string::npos &&
                         m.find("--fold-max-mib") == std::string::npos;
    if (!checked) std::fprintf(stderr, "got: %s\n", s.ToString().c_str());
    std::_Exit(s.code() == StatusCode::kResourceExhausted && checked ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

TEST(CpuBackendDeathTest, WeightsBeyondTheHeadroomAreRefusedBeforePreparing) {
  CELLSERVE_SKIP_UNDER_ASAN("it limits the address space");
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // A folded token table of 32 MiB (vocabulary 8192 x 4 x 256 gates x 4 bytes) with 24 MiB left:
  // refused up front, naming --fold-max-mib, instead of left to the allocation (under a cgroup
  // limit it would not fail: the OOM killer would come).
  ModelSpec spec;
  spec.name = "big_vocab";
  spec.kind = ModelKind::kLstm;
  spec.vocab_size = 8192;
  spec.embed_dim = 16;
  spec.hidden = 256;
  spec.layers = 1;
  spec.classes = 2;
  auto model = testutil::RandomModel(spec, 5);
  auto child = [&model] {
    if (!testutil::LimitAddressSpaceTo(int64_t{24} << 20)) std::_Exit(3);
    cpu::CpuBackend backend;
    Status s = backend.RegisterModel(*model, 2);
    const bool checked = s.message().find("more than the memory this process may still take") != std::string::npos &&
                         s.message().find("--fold-max-mib") != std::string::npos;
    if (!checked) std::fprintf(stderr, "got: %s\n", s.ToString().c_str());
    std::_Exit(s.code() == StatusCode::kResourceExhausted && checked ? 0 : 1);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
  // Unfolded they take far less; once prepared, a backend sharing the cache finds them held (and
  // does not count them again).
  cpu::CpuBackendOptions unfolded;
  unfolded.cell_weights.fold_max_bytes = 0;
  EXPECT_LT(cpu::EstimatePreparedWeights(*model, unfolded.cell_weights).total, int64_t{2} << 20);
  unfolded.weight_cache = std::make_shared<cpu::PackedWeightCache>();
  cpu::CpuBackend a(unfolded);
  EXPECT_FALSE(unfolded.weight_cache->Holds(*model, unfolded.cell_weights));
  ASSERT_TRUE(a.RegisterModel(*model, 2).ok());
  EXPECT_TRUE(unfolded.weight_cache->Holds(*model, unfolded.cell_weights));
}

TEST(CpuBackend, RejectsMalformedBatches) {
  auto model = Make(ModelKind::kLstm, 8, 1, 3, /*max_batch=*/4);
  auto other = Make(ModelKind::kLstm, 8, 1, 4);
  cpu::CpuBackend backend;
  ASSERT_TRUE(backend.RegisterModel(*model, 8).ok());
  auto code = [&](CellBatch b) { return backend.Run(b).status().code(); };
  CellRow good;
  good.token = 1;
  good.out_slot = 0;
  EXPECT_EQ(code({model.get(), model->layer_type(0), {good}}), StatusCode::kOk);
  EXPECT_EQ(code({other.get(), 0, {good}}), StatusCode::kInvalidArgument);          // not registered
  EXPECT_EQ(code({model.get(), 9, {good}}), StatusCode::kInvalidArgument);          // no such type
  EXPECT_EQ(code({model.get(), 0, {}}), StatusCode::kInvalidArgument);              // empty
  EXPECT_EQ(code({model.get(), 0, {good, good, good, good, good}}), StatusCode::kInvalidArgument);
  CellRow bad = good;
  bad.token = 100;  // vocabulary is 100
  EXPECT_EQ(code({model.get(), 0, {bad}}), StatusCode::kInvalidArgument);
  bad = good;
  bad.out_slot = 8;
  EXPECT_EQ(code({model.get(), 0, {bad}}), StatusCode::kInvalidArgument);
  bad = good;
  bad.state_slot[0] = -2;
  EXPECT_EQ(code({model.get(), 0, {bad}}), StatusCode::kInvalidArgument);
  CellRow head;  // head without an input slot
  EXPECT_EQ(code({model.get(), model->head_type(), {head}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(backend.ReadSlot(*model, 8).status().code(), StatusCode::kInvalidArgument);
}

// An upper layer has no embedding: its input is the slot below, whatever token a caller put in
// the row (the CUDA plan decides the same way). It read embedding[token] through a null pointer.
TEST(CpuBackend, AnUpperLayerReadsItsInputSlotEvenWithATokenInTheRow) {
  auto model = Make(ModelKind::kLstm, 8, 2);
  cpu::CpuBackend backend;
  ASSERT_TRUE(backend.RegisterModel(*model, 8).ok());
  CellRow first;
  first.token = 1;
  first.out_slot = 0;
  ASSERT_TRUE(backend.Run({model.get(), model->layer_type(0), {first}}).ok());
  CellRow upper;
  upper.x_slot = 0;
  upper.out_slot = 1;
  CellRow with_token = upper;
  with_token.token = 3;
  with_token.out_slot = 2;
  ASSERT_TRUE(backend.Run({model.get(), model->layer_type(1), {upper, with_token}}).ok());
  auto a = backend.ReadSlot(*model, 1), b = backend.ReadSlot(*model, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(CpuBackend, DevicesSharingAWeightCachePackOnceAndComputeTheSame) {
  auto model = Make(ModelKind::kLstm, 16, 1);
  auto cache = std::make_shared<cpu::PackedWeightCache>();
  cpu::CpuBackendOptions shared;
  shared.weight_cache = cache;
  cpu::CpuBackend a(shared), b(shared), own;
  for (cpu::CpuBackend* backend : {&a, &b, &own}) ASSERT_TRUE(backend->RegisterModel(*model, 4).ok());
  EXPECT_EQ(cache->packs(), 1);
  CellRow row;
  row.token = 5;
  row.out_slot = 2;
  for (cpu::CpuBackend* backend : {&a, &b, &own})
    ASSERT_TRUE(backend->Run({model.get(), model->layer_type(0), {row}}).ok());
  auto want = own.ReadSlot(*model, 2).value();
  EXPECT_EQ(a.ReadSlot(*model, 2).value(), want);
  EXPECT_EQ(b.ReadSlot(*model, 2).value(), want);
}

}  // namespace
}  // namespace cellserve
