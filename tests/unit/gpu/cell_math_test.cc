// The CUDA kernels' per-element math (kernels/gpu/cell_math.h), emulated on the host the way the
// kernels of kernels/cuda/cell_kernels.cu run it, against the CPU backend: gather X with GatherValue
// for every (row, col) of a padded round, G = X · Wᵀ in double, CellPointwiseElement for every
// (row, j), and the head's PartialArgMax per lane + a CombineArgMax tree. The index array is built
// here in the kernels/gpu/batch_plan.h layout, independently of PlanBatch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/gpu/cell_math.h"
#include "runtime/model_repository.h"
#include "runtime/token_fold.h"
#include "tests/unit/kernels/test_models.h"

namespace cellserve {
namespace {

using gpu::ArgMax;
using gpu::CombineArgMax;
using gpu::PartialArgMax;

constexpr float kScratchSentinel = 777.0f;  // what the scratch slot holds before a round

bool IsHead(CellOp op) { return op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax; }

// The round's index array in the batch_plan.h layout: x_src, h_src, h2_src, out, `bucket` each.
// Padding rows: inputs -1, out = the scratch slot `slots` (heads: -1).
std::vector<int32_t> MakeIndex(const CellBatch& batch, int32_t slots, int32_t bucket) {
  const CellType& type = batch.model->cell_type(batch.type);
  std::vector<int32_t> index(4 * static_cast<size_t>(bucket), -1);
  for (int32_t r = 0; r < bucket; ++r) {
    if (r < static_cast<int32_t>(batch.rows.size())) {
      const CellRow& row = batch.rows[r];
      index[0 * bucket + r] = type.embedding ? row.token : row.x_slot;
      index[1 * bucket + r] = row.state_slot[0];
      index[2 * bucket + r] = row.state_slot[1];
      index[3 * bucket + r] = IsHead(type.op) ? -1 : row.out_slot;
    } else {
      index[3 * bucket + r] = IsHead(type.op) ? -1 : slots;
    }
  }
  return index;
}

// The gather kernel (one value per element of X [bucket, K]) then the GEMM G = X · Wᵀ, in double
// and rounded to float as cuBLAS's fp32 output is. Returns G [bucket, rows of W].
// `folded`: the type's token input is folded (runtime/token_fold.h), so the round gathers only h,
// as the CUDA device does (input_dim 0, no embedding), and multiplies W's recurrent columns; a
// folded leaf has nothing to gather and returns an empty G.
std::vector<float> GatherAndGemm(const CellType& type, const std::vector<int32_t>& index,
                                 int32_t bucket, const std::vector<float>& state, bool folded = false) {
  const int64_t x_cols = folded ? 0 : type.input_dim;  // W's first column multiplied here
  const int64_t K = gpu::GatherWidthOf(type.op, x_cols, type.hidden);
  const int64_t ldw = type.weight->dim(1);
  EXPECT_EQ(K + (folded ? type.input_dim : 0), ldw) << type.name;
  if (K == 0) return {};
  const float* embedding = type.embedding && !folded ? type.embedding->data() : nullptr;
  std::vector<float> x(static_cast<size_t>(bucket * K));
  for (int32_t r = 0; r < bucket; ++r)
    for (int64_t col = 0; col < K; ++col)
      x[r * K + col] = gpu::GatherValue(type.op, index.data(), bucket, r, col, embedding, state.data(),
                                        x_cols, type.hidden);
  const int64_t N = type.weight->dim(0);
  const float* w = type.weight->data() + (folded ? type.input_dim : 0);
  std::vector<float> g(static_cast<size_t>(bucket * N));
  for (int32_t r = 0; r < bucket; ++r)
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; ++k) sum += double(x[r * K + k]) * double(w[n * ldw + k]);
      g[r * N + n] = static_cast<float>(sum);
    }
  return g;
}

// A folded table as the CUDA weight upload makes it: one GEMM embedding · W_xᵀ (double here,
// rounded to float) then AddBiasElement over every element.
std::vector<float> FoldedTable(const CellType& type) {
  const int64_t vocab = type.embedding->dim(0), E = type.input_dim, N = type.weight->dim(0);
  const int64_t ldw = type.weight->dim(1);
  std::vector<float> table(static_cast<size_t>(vocab * N));
  for (int64_t v = 0; v < vocab; ++v)
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0.0;
      for (int64_t k = 0; k < E; ++k)
        sum += double(type.embedding->data()[v * E + k]) * double(type.weight->data()[n * ldw + k]);
      table[v * N + n] = static_cast<float>(sum);
    }
  for (int64_t i = 0; i < vocab * N; ++i) gpu::AddBiasElement(table.data(), type.bias->data(), N, i);
  return table;
}

// The pointwise kernel: one call per (row, j). `folded`: the type's table, else null.
void Pointwise(const CellType& type, const std::vector<int32_t>& index, int32_t bucket,
               const std::vector<float>& gates, std::vector<float>& state, const float* folded = nullptr) {
  for (int32_t r = 0; r < bucket; ++r)
    for (int64_t j = 0; j < type.hidden; ++j)
      gpu::CellPointwiseElement(type.op, index.data(), bucket, r, j, gates.empty() ? nullptr : gates.data(),
                                type.bias->data(), folded, state.data(), type.hidden);
}

// The head kernel's block for one row: lane l runs PartialArgMax over columns l, l + lanes, ...;
// then the shared-memory tree (stride lanes/2, lanes/4, ... 1) combines partial[l] with
// partial[l + stride]. `lanes` is a power of two, as the kernel's block size is.
ArgMax EmulateHeadRow(float* logits_row, const float* bias, int64_t outputs, int32_t lanes) {
  std::vector<ArgMax> partial(lanes);
  for (int32_t lane = 0; lane < lanes; ++lane)
    partial[lane] = PartialArgMax(logits_row, bias, outputs, lane, lanes);
  for (int32_t stride = lanes / 2; stride > 0; stride /= 2)
    for (int32_t lane = 0; lane < stride; ++lane)
      partial[lane] = CombineArgMax(partial[lane], partial[lane + stride]);
  return partial[0];
}

// The CPU backend's head loop (kernels/cpu/cpu_backend.cc RunHead): bias in place, first index wins
// ties. A null bias adds nothing, as in PartialArgMax.
ArgMax SequentialArgMax(float* logits, const float* bias, int64_t N) {
  int32_t best = 0;
  float best_value = bias ? logits[0] + bias[0] : logits[0];
  logits[0] = best_value;
  for (int64_t j = 1; j < N; ++j) {
    const float v = bias ? logits[j] + bias[j] : logits[j];
    logits[j] = v;
    if (v > best_value) {
      best_value = v;
      best = static_cast<int32_t>(j);
    }
  }
  return ArgMax{best_value, best};
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }
bool SameValue(float a, float b) { return (std::isnan(a) && std::isnan(b)) || SameBits(a, b); }

// |got - want| <= 1e-5 |want| + 1e-6 for every element: the kernels use accurate expf/tanhf and a
// double GEMM here, the CPU a ~2 ulp exp approximation and a float GEMM.
::testing::AssertionResult AllNear(const float* got, const float* want, int64_t n, const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    const double tol = 1e-5 * std::fabs(double(want[i])) + 1e-6;
    if (!(std::fabs(double(got[i]) - double(want[i])) <= tol))
      return ::testing::AssertionFailure() << what << "[" << i << "]: emulated " << got[i] << ", CPU "
                                           << want[i] << " (tolerance " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult AllSameBits(const float* got, const float* want, int64_t n,
                                       const std::string& what) {
  for (int64_t i = 0; i < n; ++i)
    if (!SameBits(got[i], want[i]))
      return ::testing::AssertionFailure() << what << "[" << i << "]: " << got[i] << " != " << want[i];
  return ::testing::AssertionSuccess();
}

// A CPU backend holding one model, and the host emulation of a GPU round over a copy of its state.
// `folded`: token-fed types run folded on both sides (runtime/token_fold.h); else on neither.
class RoundHarness {
 public:
  RoundHarness(std::shared_ptr<const Model> model, int32_t slots, bool folded = false)
      : model_(std::move(model)), slots_(slots), hidden_(model_->spec().hidden),
        backend_(BackendOptions(folded)) {
    EXPECT_TRUE(backend_.RegisterModel(*model_, slots_).ok());
    if (folded)
      for (const CellType& t : model_->cell_types())
        if (IsTokenFed(t)) tables_[&t] = FoldedTable(t);
  }

  const Model& model() const { return *model_; }
  int32_t slots() const { return slots_; }
  cpu::CpuBackend& backend() { return backend_; }

  // The backend's state as the GPU would hold it: [slots + 1, 2H], the scratch slot last.
  std::vector<float> DeviceState() {
    std::vector<float> state(static_cast<size_t>((slots_ + 1) * 2 * hidden_), kScratchSentinel);
    for (int32_t s = 0; s < slots_; ++s) {
      std::vector<float> slot = backend_.ReadSlot(*model_, s).value();
      std::copy(slot.begin(), slot.end(), state.begin() + s * 2 * hidden_);
    }
    return state;
  }

  // Runs a cell round (lstm, leaf, internal) padded to `bucket` through the emulation and the CPU
  // backend; checks every output slot against the CPU and every other real slot unchanged in both.
  // Returns the emulated state after the round.
  std::vector<float> RunCellRound(const CellBatch& batch, int32_t bucket) {
    const CellType& type = model_->cell_type(batch.type);
    const int64_t H = hidden_, slot_floats = 2 * H;
    const std::vector<float> before = DeviceState();
    std::vector<float> emulated = before;
    const std::vector<int32_t> index = MakeIndex(batch, slots_, bucket);
    auto table = tables_.find(&type);
    const bool folded = table != tables_.end();
    const std::vector<float> gates = GatherAndGemm(type, index, bucket, emulated, folded);
    const bool folded_leaf = folded && type.op == CellOp::kTreeLeaf;  // no GEMM at all
    EXPECT_EQ(static_cast<int64_t>(gates.size()), folded_leaf ? 0 : bucket * gpu::GateCount(type.op) * H);
    Pointwise(type, index, bucket, gates, emulated, folded ? table->second.data() : nullptr);
    EXPECT_TRUE(backend_.Run(batch).ok());

    std::set<SlotId> outputs;
    for (const CellRow& row : batch.rows) outputs.insert(row.out_slot);
    for (int32_t s = 0; s < slots_; ++s) {
      const std::vector<float> cpu = backend_.ReadSlot(*model_, s).value();
      const float* mine = emulated.data() + s * slot_floats;
      const float* old = before.data() + s * slot_floats;
      const std::string what = type.name + " slot " + std::to_string(s);
      if (outputs.count(s)) {
        EXPECT_TRUE(AllNear(mine, cpu.data(), slot_floats, what));
        EXPECT_FALSE(AllSameBits(mine, old, slot_floats, what)) << what << " was not written";
      } else {
        EXPECT_TRUE(AllSameBits(mine, old, slot_floats, what + " (emulated, not an output)"));
        EXPECT_TRUE(AllSameBits(cpu.data(), old, slot_floats, what + " (CPU, not an output)"));
      }
    }
    const float* scratch = emulated.data() + slots_ * slot_floats;
    if (bucket > static_cast<int32_t>(batch.rows.size()))
      EXPECT_NE(scratch[0], kScratchSentinel) << "padding rows write the scratch slot";
    else
      EXPECT_EQ(scratch[0], kScratchSentinel) << "no padding, no scratch write";
    return emulated;
  }

  // Runs a head round through the CPU backend and the emulation (gather, GEMM, then the head kernel
  // with 1, 32 and 256 lanes); checks argmax and max_value. Returns the CPU's output.
  BatchOutput RunHeadRound(const CellBatch& batch, int32_t bucket) {
    const CellType& type = model_->cell_type(batch.type);
    const int64_t N = type.outputs;
    const int32_t rows = static_cast<int32_t>(batch.rows.size());
    const std::vector<float> state = DeviceState();
    const std::vector<int32_t> index = MakeIndex(batch, slots_, bucket);
    const std::vector<float> gemm = GatherAndGemm(type, index, bucket, state);
    StatusOr<BatchOutput> cpu = backend_.Run(batch);
    EXPECT_TRUE(cpu.ok());
    if (!cpu.ok()) return {};
    EXPECT_EQ(cpu->argmax.size(), static_cast<size_t>(rows));
    EXPECT_EQ(cpu->logits.size(), type.op == CellOp::kHeadLogits ? static_cast<size_t>(rows * N) : 0u);
    for (int32_t r = 0; r < rows; ++r) {
      const std::string what = type.name + " row " + std::to_string(r);
      std::vector<float> sequential(gemm.begin() + r * N, gemm.begin() + (r + 1) * N);
      const ArgMax want = SequentialArgMax(sequential.data(), type.bias->data(), N);
      for (int32_t lanes : {1, 32, 256}) {
        std::vector<float> logits(gemm.begin() + r * N, gemm.begin() + (r + 1) * N);
        const ArgMax got = EmulateHeadRow(logits.data(), type.bias->data(), N, lanes);
        // Exactly the CPU loop's answer on the same logits, and the same biased logits in place.
        EXPECT_EQ(got.index, want.index) << what << ", " << lanes << " lanes";
        EXPECT_TRUE(SameBits(got.value, want.value)) << what << ", " << lanes << " lanes";
        EXPECT_TRUE(AllSameBits(logits.data(), sequential.data(), N, what + " logits"));
        // And the CPU backend's answer on its own (float GEMM) logits.
        EXPECT_EQ(got.index, cpu->argmax[r]) << what << ", " << lanes << " lanes";
        EXPECT_TRUE(AllNear(&got.value, &cpu->max_value[r], 1, what + " max_value"));
        if (type.op == CellOp::kHeadLogits) {
          EXPECT_TRUE(AllNear(logits.data(), cpu->logits.data() + r * N, N, what + " logits"));
        }
      }
      if (type.op == CellOp::kHeadLogits) {
        // Given the CPU's own biased logits (no bias to add), the reduction is bit-exact.
        for (int32_t lanes : {1, 32, 256}) {
          std::vector<float> logits(cpu->logits.begin() + r * N, cpu->logits.begin() + (r + 1) * N);
          const ArgMax got = EmulateHeadRow(logits.data(), nullptr, N, lanes);
          EXPECT_EQ(got.index, cpu->argmax[r]) << what << ", " << lanes << " lanes";
          EXPECT_TRUE(SameBits(got.value, cpu->max_value[r])) << what << ", " << lanes << " lanes";
        }
      }
    }
    return *cpu;
  }

 private:
  static cpu::CpuBackendOptions BackendOptions(bool folded) {
    cpu::CpuBackendOptions options;
    options.cell_weights.fold_max_bytes = folded ? int64_t{1} << 30 : 0;
    return options;
  }

  std::shared_ptr<const Model> model_;
  int32_t slots_;
  int64_t hidden_;
  cpu::CpuBackend backend_;
  std::map<const CellType*, std::vector<float>> tables_;  // folded token-fed types
};

CellRow Row(int32_t token, SlotId x_slot, SlotId h_src, SlotId h2_src, SlotId out) {
  CellRow row;
  row.token = token;
  row.x_slot = x_slot;
  row.state_slot[0] = h_src;
  row.state_slot[1] = h2_src;
  row.out_slot = out;
  return row;
}

// A model whose tensor `name` (a bias) is replaced by `values`, for exact ties in the heads.
std::shared_ptr<const Model> WithTensor(const ModelSpec& spec, uint64_t seed, const std::string& name,
                                        const std::vector<float>& values) {
  SafetensorsFile weights = RandomWeights(spec, seed, 0.5f).value();
  RawTensor& raw = weights.tensors.at(name);
  raw = RawTensor::FromFloat(Tensor(raw.shape, values), raw.dtype);
  return Model::Create(spec, weights).value();
}

TEST(CellMath, GatherValueFollowsThePlanLayout) {
  // H = 2, input_dim = 3, bucket 2, slots 0..2 (+ scratch 3); slot s holds h = (10s, 10s+1),
  // c = (10s+2, 10s+3); embedding row t = (100t, 100t+1, 100t+2).
  const int64_t H = 2, E = 3;
  std::vector<float> state(4 * 2 * H), embedding(5 * E);
  for (size_t i = 0; i < state.size(); ++i) state[i] = 10.0f * (i / 4) + i % 4;
  for (size_t i = 0; i < embedding.size(); ++i) embedding[i] = 100.0f * (i / 3) + i % 3;
  // Row 0: x_src 4, h_src 1, h2_src 2, out 0. Row 1: everything absent, out 3 (scratch).
  const std::vector<int32_t> index = {4, -1, 1, -1, 2, -1, 0, 3};
  auto x = [&](CellOp op, int32_t row, int64_t col, const float* emb) {
    return gpu::GatherValue(op, index.data(), 2, row, col, emb, state.data(), E, H);
  };
  EXPECT_EQ(gpu::GatherWidthOf(CellOp::kLstm, E, H), 5);
  EXPECT_EQ(x(CellOp::kLstm, 0, 0, embedding.data()), 400.0f);
  EXPECT_EQ(x(CellOp::kLstm, 0, 2, embedding.data()), 402.0f);
  EXPECT_EQ(x(CellOp::kLstm, 0, 3, embedding.data()), 10.0f);  // h of h_src 1
  EXPECT_EQ(x(CellOp::kLstm, 0, 4, embedding.data()), 11.0f);
  for (int64_t col = 0; col < 5; ++col) EXPECT_EQ(x(CellOp::kLstm, 1, col, embedding.data()), 0.0f);
  // Slot-fed lstm (input_dim = H here would be the real case; the layout is what matters).
  const std::vector<int32_t> slot_fed = {2, 1, -1, 0};  // bucket 1: x_src 2, h_src 1, h2 -1, out 0
  EXPECT_EQ(gpu::GatherValue(CellOp::kLstm, slot_fed.data(), 1, 0, 1, nullptr, state.data(), H, H), 21.0f);
  EXPECT_EQ(gpu::GatherValue(CellOp::kLstm, slot_fed.data(), 1, 0, 3, nullptr, state.data(), H, H), 11.0f);
  EXPECT_EQ(gpu::GatherWidthOf(CellOp::kTreeLeaf, E, H), 3);
  EXPECT_EQ(x(CellOp::kTreeLeaf, 0, 1, embedding.data()), 401.0f);
  EXPECT_EQ(gpu::GatherWidthOf(CellOp::kTreeInternal, 2 * H, H), 4);
  EXPECT_EQ(x(CellOp::kTreeInternal, 0, 1, nullptr), 11.0f);  // h of h_src 1
  EXPECT_EQ(x(CellOp::kTreeInternal, 0, 2, nullptr), 20.0f);  // h of h2_src 2
  EXPECT_EQ(x(CellOp::kTreeInternal, 1, 3, nullptr), 0.0f);
  EXPECT_EQ(gpu::GatherWidthOf(CellOp::kHeadArgmax, H, H), 2);
  EXPECT_EQ(gpu::GatherValue(CellOp::kHeadLogits, slot_fed.data(), 1, 0, 1, nullptr, state.data(), H, H),
            21.0f);
}

// The token-fed rounds, unfolded and folded (runtime/token_fold.h: the table's row replaces the
// bias, the GEMM covers only h, a leaf has no GEMM).
class CellMathFolded : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Inputs, CellMathFolded, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "folded" : "unfolded"; });

TEST_P(CellMathFolded, LstmLayer0TokenFedMatchesCpuBackend) {
  RoundHarness harness(testing_models::Make(ModelKind::kLstm, 36, 2, 11), 48, GetParam());
  const Model& m = harness.model();
  // Step 0 of ten sequences (h_src -1: zeros), padded from 10 to 16 rows. Token 0 is among them
  // (the first row of a folded table), and step 1 has the last token, 99.
  CellBatch step0{&m, m.layer_type(0), {}};
  for (int r = 0; r < 10; ++r) step0.rows.push_back(Row(r * 9, -1, -1, -1, r));
  harness.RunCellRound(step0, 16);
  // Step 1: continuing from slots 0..9, except row 3 which starts a new sequence and row 7 which
  // writes its own h_src (in place). Padded from 10 to 13.
  CellBatch step1{&m, m.layer_type(0), {}};
  for (int r = 0; r < 10; ++r) {
    const SlotId h_src = r == 3 ? -1 : r;
    step1.rows.push_back(Row(99 - r, -1, h_src, -1, r == 7 ? 7 : 20 + r));
  }
  harness.RunCellRound(step1, 13);
  // No padding at all.
  CellBatch step2{&m, m.layer_type(0), {Row(5, -1, 20, -1, 30), Row(6, -1, 21, -1, 31)}};
  harness.RunCellRound(step2, 2);
}

TEST(CellMath, LstmLayer1SlotFedMatchesCpuBackend) {
  RoundHarness harness(testing_models::Make(ModelKind::kLstm, 36, 2, 12), 48);
  const Model& m = harness.model();
  CellBatch layer0{&m, m.layer_type(0), {}};
  for (int r = 0; r < 8; ++r) layer0.rows.push_back(Row(r * 11, -1, -1, -1, r));
  harness.RunCellRound(layer0, 8);
  CellBatch previous{&m, m.layer_type(1), {}};
  for (int r = 0; r < 4; ++r) previous.rows.push_back(Row(-1, r, -1, -1, 10 + r));
  harness.RunCellRound(previous, 5);
  // Layer 1: x = h of layer 0's slots, (h, c) of the previous layer-1 step or zeros; the last row
  // has no input at all (x_slot -1, h_src -1), exactly like a padding row.
  CellBatch layer1{&m, m.layer_type(1), {}};
  for (int r = 0; r < 6; ++r) layer1.rows.push_back(Row(-1, r + 2, r < 4 ? 10 + r : -1, -1, 20 + r));
  layer1.rows.push_back(Row(-1, -1, -1, -1, 26));
  const std::vector<float> state = harness.RunCellRound(layer1, 11);
  const int64_t slot_floats = 2 * m.spec().hidden;
  EXPECT_TRUE(AllSameBits(state.data() + harness.slots() * slot_floats, state.data() + 26 * slot_floats,
                          slot_floats, "scratch vs the all-absent row"));
}

TEST_P(CellMathFolded, Seq2SeqDecoderAndProjectionMatchCpuBackend) {
  ModelSpec spec = testing_models::Make(ModelKind::kSeq2Seq, 28, 2, 13)->spec();
  spec.target_vocab_size = 700;  // several columns per lane even at 256 lanes
  RoundHarness harness(testutil::RandomModel(spec, 13), 32, GetParam());
  const Model& m = harness.model();
  CellBatch encoder{&m, m.layer_type(0), {}};
  for (int r = 0; r < 5; ++r) encoder.rows.push_back(Row(r * 17, -1, -1, -1, r));  // token 0 too
  harness.RunCellRound(encoder, 8);
  // Decoder layer 0: target-vocabulary tokens, state from the encoder.
  CellBatch decoder{&m, m.decoder_layer_type(0), {}};
  for (int r = 0; r < 5; ++r) decoder.rows.push_back(Row(r == 4 ? 0 : 699 - r * 100, -1, r, -1, 10 + r));
  harness.RunCellRound(decoder, 6);
  CellBatch decoder1{&m, m.decoder_layer_type(1), {}};
  for (int r = 0; r < 5; ++r) decoder1.rows.push_back(Row(-1, 10 + r, -1, -1, 15 + r));
  harness.RunCellRound(decoder1, 8);
  ASSERT_EQ(m.cell_type(m.head_type()).op, CellOp::kHeadArgmax);
  CellBatch proj{&m, m.head_type(), {}};
  for (int r = 0; r < 5; ++r) proj.rows.push_back(Row(-1, 15 + r, -1, -1, -1));
  proj.rows.push_back(Row(-1, 15, -1, -1, -1));  // the same state twice
  const BatchOutput out = harness.RunHeadRound(proj, 8);
  ASSERT_EQ(out.argmax.size(), 6u);
  EXPECT_EQ(out.argmax[5], out.argmax[0]);
}

TEST_P(CellMathFolded, TreeLeafInternalAndHeadMatchCpuBackend) {
  RoundHarness harness(testing_models::Make(ModelKind::kTreeLstm, 20, 1, 14), 24, GetParam());
  const Model& m = harness.model();
  CellBatch leaves{&m, m.leaf_type(), {}};
  for (int r = 0; r < 6; ++r) leaves.rows.push_back(Row(r * 13, -1, -1, -1, r));  // token 0 too
  harness.RunCellRound(leaves, 8);
  // Internal nodes: both children, right child missing, left child missing, neither.
  CellBatch internal{&m, m.internal_type(), {Row(-1, -1, 0, 1, 6), Row(-1, -1, 2, -1, 7),
                                             Row(-1, -1, -1, 3, 8), Row(-1, -1, 4, 5, 9),
                                             Row(-1, -1, -1, -1, 10)}};
  harness.RunCellRound(internal, 8);
  CellBatch root{&m, m.internal_type(), {Row(-1, -1, 6, 7, 11), Row(-1, -1, 8, 9, 12)}};
  harness.RunCellRound(root, 4);
  ASSERT_EQ(m.cell_type(m.head_type()).op, CellOp::kHeadLogits);
  CellBatch head{&m, m.head_type(), {}};
  for (SlotId s : {6, 7, 8, 9, 10, 11, 12}) head.rows.push_back(Row(-1, s, -1, -1, -1));
  harness.RunHeadRound(head, 8);
}

// A row whose out is -1 writes nothing, whatever its op (the state just before slot 0 is watched).
TEST(CellMath, PointwiseWritesNothingForARowWithoutAnOutput) {
  const int64_t H = 3;
  for (CellOp op : {CellOp::kLstm, CellOp::kTreeLeaf, CellOp::kTreeInternal}) {
    const int64_t width = gpu::GateCount(op) * H;
    std::vector<float> gates(static_cast<size_t>(width), 0.5f), bias(static_cast<size_t>(width), 0.25f);
    std::vector<float> buffer(static_cast<size_t>(3 * 2 * H), kScratchSentinel);
    float* state = buffer.data() + 2 * H;  // slot -1 would be buffer[0 .. 2H)
    const std::vector<int32_t> index = {-1, 0, 1, -1};  // bucket 1: x_src -1, h 0, h2 1, out -1
    for (int64_t j = 0; j < H; ++j)
      gpu::CellPointwiseElement(op, index.data(), 1, 0, j, gates.data(), bias.data(), nullptr, state, H);
    for (size_t i = 0; i < buffer.size(); ++i) EXPECT_EQ(buffer[i], kScratchSentinel) << static_cast<int>(op) << " " << i;
  }
}

TEST(CellMath, LstmLogitsHeadMatchesCpuBackend) {
  RoundHarness harness(testing_models::Make(ModelKind::kLstm, 36, 1, 15), 16);
  const Model& m = harness.model();
  CellBatch layer0{&m, m.layer_type(0), {}};
  for (int r = 0; r < 6; ++r) layer0.rows.push_back(Row(r * 7 + 3, -1, -1, -1, r));
  harness.RunCellRound(layer0, 8);
  CellBatch head{&m, m.head_type(), {}};
  for (int r = 0; r < 6; ++r) head.rows.push_back(Row(-1, r, -1, -1, -1));
  harness.RunHeadRound(head, 6);
}

TEST(CellMath, HeadTiesGoToTheFirstIndexLikeTheCpuBackend) {
  // A zero state makes the logits exactly the bias, so exact ties in the bias are exact ties in the
  // logits, on the CPU and here.
  ModelSpec lstm_spec = testing_models::Make(ModelKind::kLstm, 16, 1, 16)->spec();
  RoundHarness lstm(WithTensor(lstm_spec, 16, "head.bias", {0.25f, 0.75f, -0.5f, 0.75f, 0.75f}), 4);
  CellBatch head{&lstm.model(), lstm.model().head_type(), {Row(-1, 0, -1, -1, -1), Row(-1, 3, -1, -1, -1)}};
  BatchOutput out = lstm.RunHeadRound(head, 4);
  ASSERT_EQ(out.argmax.size(), 2u);
  EXPECT_EQ(out.argmax[0], 1);
  EXPECT_EQ(out.max_value[0], 0.75f);

  // 700 columns; the maximum 3.0 at columns 40, 290 and 600: with 32 and 256 lanes, 290 sits in a
  // lower lane than 40 (290 % 256 = 34 < 40, 290 % 32 = 2 < 8), so only the index rule gives 40.
  ModelSpec s2s_spec = testing_models::Make(ModelKind::kSeq2Seq, 16, 1, 17)->spec();
  s2s_spec.target_vocab_size = 700;
  std::vector<float> bias(700);
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& b : bias) b = uniform(rng);
  bias[290] = bias[600] = bias[40] = 3.0f;
  bias[7] = bias[263] = 2.5f;
  RoundHarness s2s(WithTensor(s2s_spec, 17, "proj.bias", bias), 4);
  CellBatch proj{&s2s.model(), s2s.model().head_type(), {Row(-1, 1, -1, -1, -1)}};
  out = s2s.RunHeadRound(proj, 2);
  ASSERT_EQ(out.argmax.size(), 1u);
  EXPECT_EQ(out.argmax[0], 40);
  EXPECT_EQ(out.max_value[0], 3.0f);
}

TEST(CellMath, CombineArgMaxIsAnOrderIndependentFirstIndexMax) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  const ArgMax id = gpu::ArgMaxIdentity();
  const std::vector<ArgMax> candidates = {{1.0f, 3},  {1.0f, 5},  {2.0f, 9},  {-inf, 0}, {-inf, 4},
                                          {inf, 8},   {0.0f, 2},  {-0.0f, 1}, {nan, 0},  {nan, 6},
                                          {-1.0f, 7}, id};
  auto same = [](ArgMax a, ArgMax b) { return a.index == b.index && SameValue(a.value, b.value); };
  for (const ArgMax& a : candidates) {
    EXPECT_TRUE(same(CombineArgMax(a, id), a)) << a.value << "@" << a.index;
    EXPECT_TRUE(same(CombineArgMax(id, a), a)) << a.value << "@" << a.index;
    for (const ArgMax& b : candidates) {
      EXPECT_TRUE(same(CombineArgMax(a, b), CombineArgMax(b, a)));
      for (const ArgMax& c : candidates)
        EXPECT_TRUE(same(CombineArgMax(CombineArgMax(a, b), c), CombineArgMax(a, CombineArgMax(b, c))));
    }
  }
  EXPECT_EQ(CombineArgMax({1.0f, 5}, {1.0f, 3}).index, 3);
  EXPECT_EQ(CombineArgMax({-inf, 4}, {-inf, 0}).index, 0);
  EXPECT_EQ(CombineArgMax({2.0f, 9}, {1.0f, 3}).index, 9);
  EXPECT_EQ(CombineArgMax({nan, 6}, {-1.0f, 7}).index, 7);  // a NaN after column 0 never wins
  EXPECT_EQ(CombineArgMax({nan, 0}, {inf, 8}).index, 0);    // one in column 0 is never beaten
}

TEST(CellMath, HeadReductionMatchesTheSequentialLoopOnTieHeavyRows) {
  std::mt19937 rng(18);
  const float levels[] = {-1.0f, 0.0f, -0.0f, 0.5f, 1.0f, 1.0f};
  std::uniform_int_distribution<int> pick(0, 5);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  std::vector<std::vector<float>> rows;
  for (int64_t n : {1, 2, 5, 31, 32, 33, 255, 256, 257, 700, 1000}) {
    for (int rep = 0; rep < 4; ++rep) {
      std::vector<float> row(n);
      for (float& v : row) v = levels[pick(rng)];
      rows.push_back(row);
    }
    rows.push_back(std::vector<float>(n, 0.5f));   // all tied
    rows.push_back(std::vector<float>(n, -inf));   // all -inf: column 0
    std::vector<float> late(n, 0.0f);
    late[n - 1] = inf;                             // the maximum in the last column
    rows.push_back(late);
    std::vector<float> nan_first(n, 1.0f);
    nan_first[0] = nan;                            // the CPU loop keeps a NaN in column 0
    rows.push_back(nan_first);
    std::vector<float> nan_later(n, -2.0f);
    nan_later[n / 2] = nan;                        // and skips one elsewhere
    nan_later[n - 1] = -1.0f;
    rows.push_back(nan_later);
  }
  int checked = 0;
  for (const std::vector<float>& row : rows) {
    const int64_t n = static_cast<int64_t>(row.size());
    std::vector<float> bias(n);
    for (float& b : bias) b = levels[pick(rng)] * 0.5f;
    for (const float* b : {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
      std::vector<float> sequential = row;
      const ArgMax want = SequentialArgMax(sequential.data(), b, n);
      for (int32_t lanes : {1, 2, 32, 256}) {
        std::vector<float> logits = row;
        const ArgMax got = EmulateHeadRow(logits.data(), b, n, lanes);
        EXPECT_EQ(got.index, want.index) << "n " << n << ", " << lanes << " lanes";
        EXPECT_TRUE(SameValue(got.value, want.value)) << "n " << n << ", " << lanes << " lanes";
        for (int64_t j = 0; j < n; ++j) ASSERT_TRUE(SameValue(logits[j], sequential[j])) << j;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 11 * 9 * 2 * 4);
}

TEST(CellMath, PointwiseSaturatesCleanlyOnExtremeGates) {
  // Saturated gates: no inf or nan, and the CPU's results within tolerance (one lstm row, H = 3).
  const int64_t H = 3;
  const std::vector<int32_t> index = {-1, 0, -1, 1};  // x -1, h_src 0, h2 -1, out 1
  const std::vector<float> gates = {100.0f, -100.0f, 0.0f, -100.0f, 100.0f, 0.5f,
                                    1e4f,   -1e4f,   0.0f, 100.0f,  100.0f, -100.0f};
  const std::vector<float> bias(4 * H, 0.0f);
  std::vector<float> state = {0, 0, 0, 2.0f, -3.0f, 0.25f, 9, 9, 9, 9, 9, 9};
  for (int64_t j = 0; j < H; ++j)
    gpu::CellPointwiseElement(CellOp::kLstm, index.data(), 1, 0, j, gates.data(), bias.data(), nullptr,
                              state.data(), H);
  const double sig[4][3] = {{1, 0, 0.5}, {0, 1, 1 / (1 + std::exp(-0.5))}, {1, -1, 0}, {1, 1, 0}};
  for (int64_t j = 0; j < H; ++j) {
    // i = sig[0], f = sig[1], u = tanh row, o = sigmoid of gates[9..11].
    const double c = sig[1][j] * state[3 + j] + sig[0][j] * sig[2][j];
    const double o = 1 / (1 + std::exp(-double(gates[9 + j])));
    EXPECT_NEAR(state[6 + H + j], c, 1e-6) << j;
    EXPECT_NEAR(state[6 + j], o * std::tanh(c), 1e-6) << j;
  }
}

}  // namespace
}  // namespace cellserve
