// The CUDA backend on a real GPU (ctest label `gpu`; every test skips where no GPU is usable):
//  - equals the CPU backend on the same random batches (every model kind and cell type, batch 1
//    to 512, random slots, chains of rounds so states are not zero): 1e-5 relative for fp32,
//    1e-2 for fp16 and bf16; token inputs folded (the default) and not;
//  - folded tables (runtime/token_fold.h) exist for the token-fed types under the cap, only those;
//  - a row's result does not depend on its batch-mates or its bucket (to 1e-5; cuBLAS may pick
//    another kernel per bucket, so not bitwise);
//  - the asynchronous device: every submitted round completes exactly once and in order, graphs
//    are reused, a full set of staging slots makes Submit wait, bad batches are INVALID_ARGUMENT
//    at once, the destructor reports everything;
//  - several GPUs (when there are): weights broadcast with NCCL give the same answers on each.
// Everything host-side (plans, buckets, stream order, the kernels' arithmetic) is tested without
// a GPU in tests/unit/gpu, and this whole file also runs in every build on the fake CUDA runtime
// (tests/fakecuda: host streams, events, graphs and cuBLAS semantics), label unit.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/cuda_weights.h"
#include "kernels/gpu/graph_buckets.h"
#include "tests/gpu/gpu_required.h"
#include "runtime/this_thread.h"
#include "tests/unit/common/thread_probe.h"
#include "tests/unit/kernels/test_models.h"
#if CELLSERVE_FAKE_CUDA
#include "tests/fakecuda/fake_cuda.h"
#endif

namespace cellserve {
namespace {

// Model sizes of the tests that need the GPU to be slower than the host or busy for a while. The
// same file also runs on the fake CUDA runtime (tests/fakecuda), whose GEMM is a host loop.
#if CELLSERVE_FAKE_CUDA
constexpr int64_t kBigHidden = 128;
constexpr int64_t kMidHidden = 64;
#else
constexpr int64_t kBigHidden = 1024;
constexpr int64_t kMidHidden = 256;
#endif

bool HaveGpu(std::string* why) {
  auto n = cuda::CountGpus();
  if (n.ok()) return true;
  *why = n.status().ToString();
  return false;
}

#define REQUIRE_GPU()                                                  \
  do {                                                                 \
    std::string why;                                                   \
    if (!HaveGpu(&why)) SKIP_UNLESS_GPU_REQUIRED("no GPU: " << why);  \
  } while (0)

// max |a - b| / max(|b|, floor): error relative to the reference's scale.
double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 1e-6;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return diff / scale;
}

// A round of the first layer: row r reads token (r * token_step) % 100 (the test models' vocabulary)
// and writes slot out_base + r.
CellBatch FirstLayerBatch(const std::shared_ptr<const Model>& model, int rows, int token_step, SlotId out_base = 0) {
  CellBatch b{model.get(), model->layer_type(0), {}};
  for (int r = 0; r < rows; ++r) {
    CellRow row;
    row.token = (r * token_step) % 100;
    row.out_slot = out_base + r;
    b.rows.push_back(row);
  }
  return b;
}

bool IsHead(CellOp op) { return op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax; }

// Random rounds over every cell type of a model, run on both backends, compared as they go.
class Twin {
 public:
  Twin(std::shared_ptr<const Model> model, cuda::Precision precision, bool graphs, bool fold, int32_t slots,
       double tol)
      : model_(std::move(model)), slots_(slots), tol_(tol), cpu_(CpuOptions(fold)) {
    cuda::CudaDeviceOptions o;
    o.precision = precision;
    o.use_graphs = graphs;
    o.fold_max_bytes = fold ? int64_t{1} << 30 : 0;
    auto gpu = cuda::CudaBackend::Create(o);
    if (!gpu.ok()) throw std::runtime_error(gpu.status().ToString());
    gpu_ = std::move(*gpu);
    EXPECT_TRUE(cpu_.RegisterModel(*model_, slots).ok());
    EXPECT_TRUE(gpu_->RegisterModel(*model_, slots).ok());
  }

  // One round of `rows` cells of `type`: inputs from written slots (or absent), outputs to fresh
  // slots. Compares the head outputs; cell outputs are compared by CompareSlots.
  void Round(int32_t type, int32_t rows, std::mt19937& rng) {
    const CellType& t = model_->cell_type(type);
    CellBatch batch{model_.get(), type, {}};
    std::set<SlotId> outs;
    auto any_written = [&]() -> SlotId {
      if (written_.empty() || rng() % 8 == 0) return -1;
      return written_[rng() % written_.size()];
    };
    for (int32_t r = 0; r < rows; ++r) {
      CellRow row;
      if (t.embedding) row.token = static_cast<int32_t>(rng() % t.embedding->dim(0));
      else row.x_slot = any_written();
      if (IsHead(t.op) && row.x_slot < 0) row.x_slot = written_.empty() ? 0 : written_[0];
      if (t.op == CellOp::kLstm || t.op == CellOp::kTreeInternal) row.state_slot[0] = any_written();
      if (t.op == CellOp::kTreeInternal) row.state_slot[1] = any_written();
      if (!IsHead(t.op)) {
        // A slot never written or read before: no row of the batch reads another row's output.
        ASSERT_LT(next_fresh_, slots_) << "test needs more slots";
        row.out_slot = next_fresh_++;
        outs.insert(row.out_slot);
      }
      batch.rows.push_back(row);
    }
    auto want = cpu_.Run(batch);
    auto got = gpu_->Run(batch);
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    if (IsHead(t.op)) CompareHead(*got, *want, t, rows);
    for (SlotId s : outs) written_.push_back(s);
  }

  void CompareSlots() {
    std::set<SlotId> seen(written_.begin(), written_.end());
    for (SlotId s : seen) {
      auto want = cpu_.ReadSlot(*model_, s);
      auto got = gpu_->ReadSlot(*model_, s);
      ASSERT_TRUE(want.ok() && got.ok());
      ASSERT_LT(RelError(*got, *want), tol_) << "slot " << s;
    }
  }

  cuda::CudaBackend& gpu() { return *gpu_; }

 private:
  static cpu::CpuBackendOptions CpuOptions(bool fold) {
    cpu::CpuBackendOptions options;
    options.cell_weights.fold_max_bytes = fold ? int64_t{1} << 30 : 0;
    return options;
  }

  void CompareHead(const BatchOutput& got, const BatchOutput& want, const CellType& t, int32_t rows) {
    ASSERT_EQ(got.argmax.size(), static_cast<size_t>(rows));
    ASSERT_EQ(got.max_value.size(), static_cast<size_t>(rows));
    EXPECT_LT(RelError(got.max_value, want.max_value), tol_);
    if (t.op == CellOp::kHeadLogits) {
      ASSERT_EQ(got.logits.size(), want.logits.size());
      EXPECT_LT(RelError(got.logits, want.logits), tol_);
    }
    // The argmax must agree wherever the winner is clear by more than the tolerance.
    for (int32_t r = 0; r < rows; ++r) {
      if (got.argmax[r] == want.argmax[r]) continue;
      const float margin = want.max_value[r] - (t.op == CellOp::kHeadLogits ? want.logits[r * t.outputs + got.argmax[r]]
                                                                             : got.max_value[r]);
      EXPECT_LE(std::fabs(margin), tol_ * std::max(1.0f, std::fabs(want.max_value[r])))
          << "row " << r << ": argmax " << got.argmax[r] << " vs " << want.argmax[r];
    }
  }

  std::shared_ptr<const Model> model_;
  int32_t slots_;
  double tol_;
  cpu::CpuBackend cpu_;
  std::unique_ptr<cuda::CudaBackend> gpu_;
  std::vector<SlotId> written_;
  SlotId next_fresh_ = 0;
};

struct Case {
  ModelKind kind;
  cuda::Precision precision;
  double tol;
  bool graphs = true;  // false: --no-cuda-graphs (plain launches, unpadded batches)
  bool fold = true;    // false: --fold-max-mib 0 (token inputs gathered and multiplied every round)
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << ModelKindName(c.kind) << " " << cuda::PrecisionName(c.precision) << " tol " << c.tol
      << (c.graphs ? "" : " no graphs") << (c.fold ? "" : " unfolded");
}

class CudaMatchesCpu : public ::testing::TestWithParam<Case> {};

TEST_P(CudaMatchesCpu, RandomRoundsEveryTypeBatchOneTo512) {
  REQUIRE_GPU();
  const Case c = GetParam();
  auto model = testing_models::Make(c.kind, /*hidden=*/64, /*layers=*/2, /*seed=*/11, /*max_batch=*/512);
  Twin twin(model, c.precision, c.graphs, c.fold, /*slots=*/8192, c.tol);
  std::mt19937 rng(5);
  const int32_t sizes[] = {1, 2, 3, 8, 31, 32, 33, 100, 255, 512};
  // Producers first (token-fed types), so later rounds read non-zero states.
  for (int pass = 0; pass < 2; ++pass)
    for (int32_t type = 0; type < static_cast<int32_t>(model->cell_types().size()); ++type)
      for (int32_t rows : sizes) {
        if (pass == 0 && !model->cell_type(type).embedding) continue;
        twin.Round(type, rows, rng);
        if (HasFatalFailure()) return;
      }
  twin.CompareSlots();
  // Graphs: one per (type, bucket, staging slot) at most, and reused; none without graphs.
  const auto g = twin.gpu().device().graph_stats();
  if (c.graphs) {
    EXPECT_GT(g.launches, 0);
    EXPECT_LE(g.captures, g.launches);
  } else {
    EXPECT_EQ(g.launches, 0);
    EXPECT_EQ(g.padded_rows, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, CudaMatchesCpu,
    ::testing::Values(Case{ModelKind::kLstm, cuda::Precision::kF32, 1e-5},
                      Case{ModelKind::kSeq2Seq, cuda::Precision::kF32, 1e-5},
                      Case{ModelKind::kTreeLstm, cuda::Precision::kF32, 1e-5},
                      Case{ModelKind::kLstm, cuda::Precision::kF16, 1e-2},
                      Case{ModelKind::kSeq2Seq, cuda::Precision::kF16, 1e-2},
                      Case{ModelKind::kTreeLstm, cuda::Precision::kBF16, 1e-2},
                      Case{ModelKind::kSeq2Seq, cuda::Precision::kF32, 1e-5, /*graphs=*/false},
                      Case{ModelKind::kLstm, cuda::Precision::kF32, 1e-5, true, /*fold=*/false},
                      Case{ModelKind::kSeq2Seq, cuda::Precision::kF32, 1e-5, true, /*fold=*/false},
                      Case{ModelKind::kTreeLstm, cuda::Precision::kF32, 1e-5, true, /*fold=*/false},
                      Case{ModelKind::kLstm, cuda::Precision::kF16, 1e-2, true, /*fold=*/false}),
    [](const auto& info) {
      return std::string(ModelKindName(info.param.kind)) + "_" + cuda::PrecisionName(info.param.precision) +
             (info.param.graphs ? "" : "_nographs") + (info.param.fold ? "" : "_unfolded");
    });

// Every CUDA error becomes a Status naming the call and the error; the ones that mean "no GPU can
// be used here" are UNAVAILABLE, so that --cpu-fallback applies (a GPU another process holds in
// exclusive mode among them). Needs no GPU.
TEST(CudaStatusTest, NamesTheCallAndMapsTheCode) {
  EXPECT_TRUE(cuda::CudaStatus(cudaSuccess, "cudaFree(p)").ok());
  for (cudaError_t unusable : {cudaErrorNoDevice, cudaErrorInsufficientDriver, cudaErrorInitializationError,
                               cudaErrorDevicesUnavailable})
    EXPECT_EQ(cuda::CudaStatus(unusable, "cudaMalloc(&p, n)").code(), StatusCode::kUnavailable) << unusable;
  const Status oom = cuda::CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc(&p, n)");
  EXPECT_EQ(oom.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(oom.message().find("cudaMalloc(&p, n): cudaErrorMemoryAllocation"), std::string::npos) << oom.message();
  EXPECT_EQ(cuda::CudaStatus(cudaErrorInvalidValue, "cudaMemcpy").code(), StatusCode::kInternal);
}

// Tables for the token-fed types whose table fits the cap, none for the others; a table row is
// W_x embedding[v] + bias. The device refuses a store made under another cap.
TEST(CudaBackendTest, FoldedTablesForTokenFedTypesUnderTheCap) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kSeq2Seq, 32, 2, 4, 64);
  const CellType& enc0 = model->cell_type(model->layer_type(0));
  const int64_t enc_bytes = FoldedTableBytes(enc0);
  const int64_t dec_bytes = FoldedTableBytes(model->cell_type(model->decoder_layer_type(0)));
  ASSERT_LT(dec_bytes, enc_bytes);  // the target vocabulary is the smaller
  for (int64_t cap : {int64_t{0}, dec_bytes, enc_bytes}) {
    auto w = cuda::UploadModelWeights(*model, 0, cuda::GemmDtype::kF32, cap);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    for (size_t i = 0; i < model->cell_types().size(); ++i) {
      const CellType& t = model->cell_types()[i];
      EXPECT_EQ((*w)->types[i].folded != nullptr, WillFold(t, cap)) << t.name << " cap " << cap;
      // No round reads a folded type's embedding (this model shares none), so none is kept.
      EXPECT_EQ((*w)->types[i].embedding != nullptr, t.embedding && !WillFold(t, cap)) << t.name << " cap " << cap;
    }
    int64_t kept = 0, want = 0;
    for (const auto& b : (*w)->buffers) kept += static_cast<int64_t>(b.bytes());
    for (const CellType& t : model->cell_types()) {
      want += t.weight->size() * 4 + t.bias->size() * 4;
      if (WillFold(t, cap)) want += FoldedTableBytes(t);
      else if (t.embedding) want += t.embedding->size() * 4;
    }
    EXPECT_EQ(kept, want) << "cap " << cap;
  }
  auto w = cuda::UploadModelWeights(*model, 0, cuda::GemmDtype::kF16, enc_bytes);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const int64_t G = enc0.weight->dim(0), E = enc0.input_dim, K = enc0.weight->dim(1);
  const int32_t token = 37;
  std::vector<float> row(static_cast<size_t>(G));
  ASSERT_EQ(cudaMemcpy(row.data(), (*w)->types[model->layer_type(0)].folded + token * G, G * sizeof(float),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  for (int64_t j = 0; j < G; ++j) {
    double want = enc0.bias->data()[j];
    for (int64_t k = 0; k < E; ++k)
      want += double(enc0.weight->data()[j * K + k]) * enc0.embedding->data()[token * E + k];
    EXPECT_NEAR(row[j], want, 1e-5) << "gate " << j << ": made from the fp32 weights, not the fp16 ones";
  }

  cuda::CudaDeviceOptions o;
  o.fold_max_bytes = 0;
  o.weights = std::make_shared<cuda::CudaWeightStore>(cuda::GemmDtype::kF32, enc_bytes);
  ASSERT_TRUE(o.weights->Prepare({model.get()}, {0}).ok());
  auto device = cuda::CudaDevice::Create("cuda:0", o);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  Status registered = (*device)->RegisterModel(*model, 16);
  EXPECT_EQ(registered.code(), StatusCode::kInvalidArgument) << registered.ToString();
}

// A shared weight store holds one precision; a device of another precision refuses its weights
// (its GEMMs would read fp16 as fp32) and one of the same precision takes them.
TEST(CudaBackendTest, DeviceRefusesAWeightStoreOfAnotherPrecision) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, 64, 1, 3, 64);
  auto store = std::make_shared<cuda::CudaWeightStore>(cuda::GemmDtype::kF16, kDefaultFoldMaxBytes);
  ASSERT_TRUE(store->Prepare({model.get()}, {0}).ok());
  for (cuda::Precision precision : {cuda::Precision::kF32, cuda::Precision::kBF16, cuda::Precision::kF16}) {
    SCOPED_TRACE(cuda::PrecisionName(precision));
    cuda::CudaDeviceOptions o;
    o.precision = precision;
    o.weights = store;
    auto device = cuda::CudaDevice::Create("cuda:0", o);
    ASSERT_TRUE(device.ok()) << device.status().ToString();
    const Status registered = (*device)->RegisterModel(*model, 16);
    if (precision == cuda::Precision::kF16) {
      EXPECT_TRUE(registered.ok()) << registered.ToString();
    } else {
      EXPECT_EQ(registered.code(), StatusCode::kInvalidArgument) << registered.ToString();
      EXPECT_NE(registered.message().find("another precision"), std::string::npos) << registered.ToString();
    }
  }
}

// The same row alone and at several positions of batches of several buckets.
TEST(CudaBackendTest, RowDoesNotDependOnBatchMates) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, 128, 1, 3, 512);
  auto gpu = cuda::CudaBackend::Create({});
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  ASSERT_TRUE((*gpu)->RegisterModel(*model, 1024).ok());
  std::vector<float> alone;
  for (int32_t rows : {1, 5, 64, 200, 512}) {
    CellBatch b = FirstLayerBatch(model, rows, 7);
    b.rows[rows / 2].token = 42;
    ASSERT_TRUE((*gpu)->Run(b).ok());
    auto slot = (*gpu)->ReadSlot(*model, rows / 2);
    ASSERT_TRUE(slot.ok());
    if (alone.empty()) alone = *slot;
    else EXPECT_LT(RelError(*slot, alone), 1e-5) << rows << " rows";
  }
}

// ReadSlot reads only the model's own slots: one past either end is an error, not a read of the
// memory beside the state pool (device memory, which nothing on the host would notice).
TEST(CudaBackendTest, ReadSlotRefusesSlotsOutsideThePoolAndUnknownModels) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, 64, 1, 3, 64);
  auto other = testing_models::Make(ModelKind::kLstm, 64, 1, 4, 64);
  auto gpu = cuda::CudaBackend::Create({});
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  const int32_t slots = 16;
  ASSERT_TRUE((*gpu)->RegisterModel(*model, slots).ok());
  EXPECT_TRUE((*gpu)->ReadSlot(*model, 0).ok());
  EXPECT_TRUE((*gpu)->ReadSlot(*model, slots - 1).ok());
  for (SlotId bad : {SlotId{-1}, SlotId{slots}}) {
    auto read = (*gpu)->ReadSlot(*model, bad);
    ASSERT_FALSE(read.ok()) << "slot " << bad;
    EXPECT_EQ(read.status().code(), StatusCode::kInvalidArgument) << read.status().ToString();
  }
  auto unknown = (*gpu)->ReadSlot(*other, 0);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument) << unknown.status().ToString();
}

// Collects completions; waits for a count.
struct Completions {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<DeviceCompletion> got;
  CompletionCallback Callback() {
    return [this](DeviceCompletion c) {
      std::lock_guard<std::mutex> lock(mu);
      got.push_back(std::move(c));
      cv.notify_all();
    };
  }
  void WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return got.size() >= n; }));
  }
};

// What each device answers to the same rounds, slot by slot, after registering `model` (two
// layers at least): two steps of the first layer (the second through its recurrent weights) over
// tokens from 0 to the vocabulary's last, then the second layer. Every byte of the weights a
// broadcast copies takes part: a copy cut short shows here.
std::vector<std::vector<float>> AnswersOfEachDevice(std::vector<std::unique_ptr<cuda::CudaDevice>>& devices,
                                                    const std::shared_ptr<const Model>& model) {
  const int32_t rows = 16;
  const int32_t vocab = static_cast<int32_t>(model->spec().vocab_size);
  std::vector<CellBatch> rounds(3);
  for (int32_t r = 0; r < rows; ++r) {
    CellRow first, second, upper;
    first.token = r * (vocab - 1) / (rows - 1);
    first.out_slot = r;
    second.token = vocab - 1 - first.token;
    second.state_slot[0] = r;
    second.out_slot = rows + r;
    upper.x_slot = rows + r;
    upper.out_slot = 2 * rows + r;
    rounds[0].rows.push_back(first);
    rounds[1].rows.push_back(second);
    rounds[2].rows.push_back(upper);
  }
  for (int i = 0; i < 3; ++i) {
    rounds[i].model = model.get();
    rounds[i].type = model->layer_type(i < 2 ? 0 : 1);
  }
  std::vector<std::vector<float>> answers;
  for (auto& d : devices) {
    EXPECT_TRUE(d->RegisterModel(*model, 4 * rows).ok());
    Completions done;
    for (uint64_t i = 0; i < rounds.size(); ++i) d->Submit(i + 1, rounds[i], done.Callback());
    done.WaitFor(3);
    std::vector<float> all;
    for (const auto& c : done.got) EXPECT_TRUE(c.output.ok()) << c.output.status().ToString();
    for (SlotId slot = 0; slot < 3 * rows; ++slot) {
      auto h = d->ReadSlot(*model, slot);
      EXPECT_TRUE(h.ok()) << h.status().ToString();
      if (h.ok()) all.insert(all.end(), h->begin(), h->end());
    }
    answers.push_back(std::move(all));
  }
  return answers;
}

TEST(CudaDeviceTest, EveryRoundCompletesOnceInOrder) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, kMidHidden, 1, 3, 64);
  Completions done;  // before the device: its destructor may still report into it
  cuda::CudaDeviceOptions o;
  o.staging_slots = 8;
  auto device = cuda::CudaDevice::Create("cuda:test", o);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  ASSERT_TRUE((*device)->RegisterModel(*model, 4096).ok());
  uint64_t submitted = 0;
  for (int i = 0; i < 400; ++i) {
    while ((*device)->pending() >= 8) std::this_thread::yield();  // the scheduler's lookahead bound
    (*device)->Submit(++submitted, FirstLayerBatch(model, 1 + i % 64, 1, (i % 2) * 64), done.Callback());
  }
  ASSERT_NO_FATAL_FAILURE(done.WaitFor(400));
  ASSERT_EQ(done.got.size(), 400u);
  for (size_t i = 0; i < done.got.size(); ++i) {
    EXPECT_EQ(done.got[i].round_id, i + 1);
    EXPECT_TRUE(done.got[i].output.ok()) << done.got[i].output.status().ToString();
    EXPECT_LE(done.got[i].start_us, done.got[i].end_us);
  }
  EXPECT_EQ((*device)->pending(), 0);
  EXPECT_EQ((*device)->stats().batches, 400);
  const auto g = (*device)->graph_stats();
  EXPECT_EQ(g.launches + g.warmups, 400);
  EXPECT_EQ(g.warmups, 8) << "one plain round per bucket of 1..64 rows (1, 2, 4, .., 48, 64)";
  EXPECT_LT(g.captures, 400) << "graphs were not reused";
}

// A round of `rows` cells of any type, each row its own token or no input, writing slot r (a head
// reads slot r).
CellBatch AnyTypeBatch(const Model& model, int32_t type, int32_t rows) {
  const CellType& t = model.cell_type(type);
  CellBatch b{&model, type, {}};
  for (int32_t r = 0; r < rows; ++r) {
    CellRow row;
    if (t.embedding) row.token = r % static_cast<int32_t>(t.embedding->dim(0));
    if (IsHead(t.op)) row.x_slot = r;
    else row.out_slot = r;
    b.rows.push_back(row);
  }
  return b;
}

// The graph cache holds every graph of the registered models (one per type, bucket and staging
// slot): rounds over all of them evict nothing. The first round of each (model, type, bucket)
// runs plain, before any capture of it. An explicit smaller cap evicts.
TEST(CudaDeviceTest, GraphCacheHoldsEveryGraphOfItsModels) {
  REQUIRE_GPU();
  auto lstm = testing_models::Make(ModelKind::kLstm, 16, 2, 3, 32);
  auto s2s = testing_models::Make(ModelKind::kSeq2Seq, 16, 2, 4, 32);
  const int32_t slots = 3;
  const int64_t all = gpu::GraphsOfModel(static_cast<int32_t>(lstm->cell_types().size()), 32, slots) +
                      gpu::GraphsOfModel(static_cast<int32_t>(s2s->cell_types().size()), 32, slots);
  const std::vector<int32_t> buckets = gpu::BucketSizes(32);
  const int64_t shapes =
      static_cast<int64_t>((lstm->cell_types().size() + s2s->cell_types().size()) * buckets.size());
  for (size_t cap : {size_t{0}, size_t{20}}) {
    SCOPED_TRACE("graph_cache_size " + std::to_string(cap));
    cuda::CudaDeviceOptions o;
    o.staging_slots = slots;
    o.graph_cache_size = cap;
    auto backend = cuda::CudaBackend::Create(o);
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    for (const auto* model : {lstm.get(), s2s.get()}) ASSERT_TRUE((*backend)->RegisterModel(*model, 64).ok());
    EXPECT_EQ((*backend)->device().graph_stats().cache_capacity, cap ? static_cast<int64_t>(cap) : all);
    int64_t rounds = 0;
    auto run = [&](const Model& model, int32_t type, int32_t rows) {
      auto out = (*backend)->Run(AnyTypeBatch(model, type, rows));
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      ++rounds;
    };
    for (int rep = 0; rep < 2 * slots + 1; ++rep) {
      for (const auto* model : {lstm.get(), s2s.get()})
        for (int32_t type = 0; type < static_cast<int32_t>(model->cell_types().size()); ++type)
          for (int32_t rows : buckets) {
            // Odd repetitions fill the same buckets with fewer rows.
            ASSERT_NO_FATAL_FAILURE(run(*model, type, rep % 2 && rows > 1 ? rows - 1 : rows));
          }
      // Staging slots go round-robin: one more round, so each shape's next round takes another slot.
      ASSERT_NO_FATAL_FAILURE(run(*lstm, 0, 1));
    }
    const auto g = (*backend)->device().graph_stats();
    EXPECT_EQ(g.warmups, shapes);
    EXPECT_EQ(g.launches + g.warmups, rounds);
    if (cap == 0) {
      EXPECT_EQ(g.evictions, 0);
      EXPECT_LE(g.captures, all);
      EXPECT_GT(g.captures, shapes) << "rounds of one shape should reach more than one staging slot";
    } else {
      EXPECT_GT(g.evictions, 0);
    }
  }
}

// --pin-threads on a GPU node: the completion thread names itself and runs where it is told.
TEST(CudaDeviceTest, CompletionThreadRunsOnTheCpusGiven) {
  REQUIRE_GPU();
  const std::vector<int> cpus = ThisThreadCpus();
  ASSERT_FALSE(cpus.empty());
  cuda::CudaDeviceOptions o;
  o.completion_cpus = {cpus.back()};
  auto device = cuda::CudaDevice::Create("cuda:test", o);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  EXPECT_EQ(testing_threads::AllowedCpusOfThread("cs-cuda-done"), std::to_string(cpus.back()));
  o.completion_cpus = {-1};
  EXPECT_FALSE(cuda::CudaDevice::Create("cuda:test", o).ok());
}

// Head rounds submitted back to back: each round's logits are its own (round n's download must
// not read what round n+1's compute writes into the shared scratch).
TEST(CudaDeviceTest, BackToBackHeadRoundsKeepTheirOwnResults) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, kMidHidden, 1, 5, 64);
  Completions done;  // before the device: its destructor may still report into it
  auto device = cuda::CudaDevice::Create("cuda:test", {});
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  ASSERT_TRUE((*device)->RegisterModel(*model, 256).ok());
  cpu::CpuBackend cpu;
  ASSERT_TRUE(cpu.RegisterModel(*model, 256).ok());
  const CellBatch fill = FirstLayerBatch(model, 64, 13);
  ASSERT_TRUE(cpu.Run(fill).ok());
  (*device)->Submit(1, fill, done.Callback());
  std::vector<CellBatch> heads;
  constexpr int kRounds = 300;
  for (int i = 0; i < kRounds; ++i) {
    CellBatch head{model.get(), model->head_type(), {}};
    for (int r = 0; r < 1 + i % 32; ++r) {
      CellRow row;
      row.x_slot = (i * 7 + r) % 64;
      head.rows.push_back(row);
    }
    heads.push_back(head);
    (*device)->Submit(2 + static_cast<uint64_t>(i), std::move(head), done.Callback());
  }
  ASSERT_NO_FATAL_FAILURE(done.WaitFor(kRounds + 1));
  std::lock_guard<std::mutex> lock(done.mu);
  for (int i = 0; i < kRounds; ++i) {
    const DeviceCompletion& c = done.got[static_cast<size_t>(i) + 1];
    ASSERT_EQ(c.round_id, 2u + static_cast<uint64_t>(i));
    ASSERT_TRUE(c.output.ok()) << c.output.status().ToString();
    auto want = cpu.Run(heads[static_cast<size_t>(i)]);
    ASSERT_TRUE(want.ok());
    EXPECT_LT(RelError(c.output->logits, want->logits), 1e-5) << "round " << i;
    EXPECT_LT(RelError(c.output->max_value, want->max_value), 1e-5) << "round " << i;
  }
}

TEST(CudaDeviceTest, FullStagingSlotsWaitAndBadBatchesAreAnsweredAtOnce) {
  REQUIRE_GPU();
  // H = 1024 and 512 rows: each round takes the GPU far longer than the host takes to submit one.
  auto model = testing_models::Make(ModelKind::kLstm, kBigHidden, 1, 3, 512);
  Completions done;  // before the device: its destructor may still report into it
  cuda::CudaDeviceOptions o;
  o.staging_slots = 2;
  auto device = cuda::CudaDevice::Create("cuda:test", o);
  ASSERT_TRUE(device.ok());
  ASSERT_TRUE((*device)->RegisterModel(*model, 1024).ok());
  const CellBatch big = FirstLayerBatch(model, 512, 1);
  for (uint64_t i = 1; i <= 50; ++i) {
    (*device)->Submit(i, big, done.Callback());
    EXPECT_LE((*device)->pending(), 2);
  }
  EXPECT_GT((*device)->graph_stats().host_waits, 0) << "50 rounds of 512 rows never filled 2 staging slots";
  CellBatch bad = FirstLayerBatch(model, 1, 1);
  bad.rows[0].token = 100000;
  (*device)->Submit(99, bad, done.Callback());
  ASSERT_NO_FATAL_FAILURE(done.WaitFor(51));
  for (const auto& c : done.got) {
    if (c.round_id == 99) EXPECT_EQ(c.output.status().code(), StatusCode::kInvalidArgument);
    else EXPECT_TRUE(c.output.ok()) << c.output.status().ToString();
  }
}

// After a registration of `failed` failed: a round of it is answered at once (INVALID_ARGUMENT:
// not registered), and `small` registers and runs. `done` is the caller's, made before the device:
// the device's destructor may still report into it if an assertion here returns early.
void ExpectServingAfterAFailedRegistration(cuda::CudaDevice& device, Completions& done,
                                           const std::shared_ptr<const Model>& failed,
                                           const std::shared_ptr<const Model>& small) {
  device.Submit(1, FirstLayerBatch(failed, 1, 1), done.Callback());
  ASSERT_TRUE(device.RegisterModel(*small, 64).ok());
  device.Submit(2, FirstLayerBatch(small, 1, 1), done.Callback());
  ASSERT_NO_FATAL_FAILURE(done.WaitFor(2));
  std::lock_guard<std::mutex> lock(done.mu);
  EXPECT_EQ(done.got[0].output.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(done.got[1].output.ok()) << done.got[1].output.status().ToString();
}

// Out of GPU memory at registration: RESOURCE_EXHAUSTED naming the call, nothing half-registered,
// and the device goes on serving.
TEST(CudaDeviceTest, OutOfMemoryRegistersNothingAndTheDeviceGoesOn) {
  REQUIRE_GPU();
  auto huge = testing_models::Make(ModelKind::kLstm, 512, 1, 3, 64);
  auto small = testing_models::Make(ModelKind::kLstm, 64, 1, 4, 64);
  Completions done;
  auto device = cuda::CudaDevice::Create("cuda:test", {});
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  const Status oom = (*device)->RegisterModel(*huge, 1 << 30);  // (2^30 + 1) slots x 2 x 512 floats: 4 TiB
  EXPECT_EQ(oom.code(), StatusCode::kResourceExhausted) << oom.ToString();
  EXPECT_NE(oom.message().find("cudaMalloc"), std::string::npos) << oom.message();
  ExpectServingAfterAFailedRegistration(**device, done, huge, small);
}

// A failed call leaves no error pending on the thread: the error became a Status, and a later
// check of cudaGetLastError (after one of our launches, or inside cuBLAS or NCCL) must not take it
// for its own. Running out of memory is the failure a serving GPU meets. (Named OutOfMemory so
// that memcheck.sh leaves it out: the sanitizer reports every failed call.)
TEST(CudaDeviceTest, OutOfMemoryLeavesNoErrorPending) {
  REQUIRE_GPU();
  (void)cudaGetLastError();  // none left by an earlier test
  const size_t too_many = size_t{1} << 46;  // floats: 256 TiB, more than any address space holds
  auto on_gpu = cuda::DeviceBuffer<float>::Allocate(0, too_many);
  ASSERT_FALSE(on_gpu.ok());
  EXPECT_EQ(on_gpu.status().code(), StatusCode::kResourceExhausted) << on_gpu.status().ToString();
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess) << cudaGetErrorName(cudaPeekAtLastError());
  auto pinned = cuda::PinnedBuffer<float>::Allocate(too_many);
  ASSERT_FALSE(pinned.ok());
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess) << cudaGetErrorName(cudaPeekAtLastError());
}

#if CELLSERVE_FAKE_CUDA
// Error paths no real GPU shows on demand: the fake fails one chosen call. Each failure is a
// Status naming the call and the device, and leaves nothing half-made: a device made afterwards
// (or the same device, for a registration) serves as before.
TEST(CudaDeviceFaultTest, ACallFailingHalfWayThroughCreateIsAnErrorNamingIt) {
  struct Case {
    const char* call;
    int n;
  };
  const std::string before = fakecuda::LiveObjects();
  for (const Case c : {Case{"cudaStreamCreateWithFlags", 1}, Case{"cudaStreamCreateWithFlags", 3},
                       Case{"cudaEventCreateWithFlags", 1}, Case{"cudaEventCreateWithFlags", 5},
                       Case{"cudaMalloc", 1}}) {
    StatusOr<std::unique_ptr<cuda::CudaDevice>> device = InvalidArgument("not made");
    {
      fakecuda::ScopedFailure failure(c.call, c.n);
      device = cuda::CudaDevice::Create("cuda:test", {});
    }
    ASSERT_FALSE(device.ok()) << c.call << " #" << c.n << " was not reached";
    EXPECT_NE(device.status().message().find(c.call), std::string::npos) << device.status().ToString();
    EXPECT_NE(device.status().message().find("cuda:test (GPU 0)"), std::string::npos) << device.status().ToString();
    EXPECT_EQ(fakecuda::LiveObjects(), before) << c.call << " #" << c.n << ": what was made is not all freed";
  }
  auto small = testing_models::Make(ModelKind::kLstm, 64, 1, 4, 64);
  Completions done;
  auto device = cuda::CudaDevice::Create("cuda:test", {});
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  ASSERT_TRUE((*device)->RegisterModel(*small, 64).ok());
  (*device)->Submit(1, FirstLayerBatch(small, 1, 1), done.Callback());
  ASSERT_NO_FATAL_FAILURE(done.WaitFor(1));
  std::lock_guard<std::mutex> lock(done.mu);
  EXPECT_TRUE(done.got[0].output.ok()) << done.got[0].output.status().ToString();
}

TEST(CudaDeviceFaultTest, ARegistrationFailingHalfWayLeavesTheDeviceServing) {
  auto small = testing_models::Make(ModelKind::kLstm, 64, 1, 4, 64);
  Completions done;
  auto device = cuda::CudaDevice::Create("cuda:test", {});
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  Status failed;
  const std::string before = fakecuda::LiveObjects();
  {
    fakecuda::ScopedFailure second_malloc("cudaMalloc", 2);
    failed = (*device)->RegisterModel(*small, 64);
  }
  ASSERT_FALSE(failed.ok()) << "the second cudaMalloc of a registration was not reached";
  EXPECT_EQ(fakecuda::LiveObjects(), before) << "the failed registration left something allocated";
  EXPECT_NE(failed.message().find("cudaMalloc"), std::string::npos) << failed.ToString();
  ExpectServingAfterAFailedRegistration(**device, done, small, small);
}

// Everything a device makes (memory, streams, events, graphs, cuBLAS handles) goes when it goes;
// on a GPU, a leak of any of them is a server that slowly runs out. The same for the devices of a
// node and the NCCL broadcast between them, where there are several GPUs (fakecuda.three_devices).
TEST(CudaDeviceLeakTest, DestroyedDevicesLeaveNothingBehind) {
  const std::string before = fakecuda::LiveObjects();
  {
    auto model = testing_models::Make(ModelKind::kSeq2Seq, 64, 2, 9, 64);
    Twin twin(model, cuda::Precision::kF16, /*graphs=*/true, /*fold=*/true, /*slots=*/256, 1e-2);
    std::mt19937 rng(3);
    for (int32_t rows : {8, 20, 8, 20})
      for (int32_t type = 0; type < static_cast<int32_t>(model->cell_types().size()); ++type) twin.Round(type, rows, rng);
    if (HasFatalFailure()) return;
    EXPECT_GT(twin.gpu().device().graph_stats().captures, 0);
  }
  EXPECT_EQ(fakecuda::LiveObjects(), before);
  auto n = cuda::CountGpus();
  ASSERT_TRUE(n.ok());
  if (*n < 2) return;
  {
    auto model = testing_models::Make(ModelKind::kSeq2Seq, 64, 2, 10, 64);
    auto devices = cuda::CreateCudaDevices(0, {}, {model.get()});
    ASSERT_TRUE(devices.ok()) << devices.status().ToString();
    AnswersOfEachDevice(*devices, model);
  }
  EXPECT_EQ(fakecuda::LiveObjects(), before);
}

// A node's other GPUs get the weights by an NCCL broadcast; where it fails (no peer access, a
// mismatched NCCL), each GPU uploads them from the host instead, and every GPU still answers the
// same. Needs two (fake) GPUs or more: fakecuda.three_devices.
TEST(CudaDeviceFaultTest, AFailedBroadcastFallsBackToUploadsAndEveryGpuAgrees) {
  auto n = cuda::CountGpus();
  ASSERT_TRUE(n.ok());
  if (*n < 2) GTEST_SKIP() << "one GPU: nothing to broadcast to";
  auto model = testing_models::Make(ModelKind::kLstm, 64, 2, 12, 64);
  for (const char* call : {"ncclCommInitAll", "ncclGroupEnd"}) {
    SCOPED_TRACE(call);
    fakecuda::ScopedFailure failure(call, 1);
    const long broadcasts_before = fakecuda::NcclBroadcastsRun();
    auto devices = cuda::CreateCudaDevices(0, {}, {model.get()});
    ASSERT_TRUE(devices.ok()) << devices.status().ToString();
    EXPECT_EQ(fakecuda::NcclBroadcastsRun(), broadcasts_before) << "the failed broadcast still copied";
    const auto answers = AnswersOfEachDevice(*devices, model);
    for (size_t i = 1; i < answers.size(); ++i) EXPECT_EQ(answers[i], answers[0]) << "GPU " << i;
  }
}

// A graph that cannot be made: the round runs with plain launches and answers as the CPU does.
// A capture CUDA refuses or invalidates (also by a launch that failed inside it), or an
// instantiation it refuses, makes the shape plain from
// then on (no failure per round); an instantiation out of memory only that round; any other error
// at capture is the round's. Other shapes
// get their graphs either way.
TEST(CudaDeviceFaultTest, ARoundWhoseGraphCannotBeMadeRunsWithoutIt) {
  struct Case {
    const char* call;
    cudaError_t error;
    bool round_fails;
    int64_t capture_failures, plain_rounds, captures;
  };
  auto model = testing_models::Make(ModelKind::kLstm, 64, 1, 11, 64);
  for (const Case c : {Case{"cudaStreamEndCapture", cudaErrorStreamCaptureInvalidated, false, 1, 2, 1},
                       Case{"cudaStreamBeginCapture", cudaErrorStreamCaptureUnsupported, false, 1, 2, 1},
                       Case{"cudaGraphInstantiate", cudaErrorMemoryAllocation, false, 1, 1, 2},
                       Case{"cudaGraphInstantiate", cudaErrorInvalidValue, false, 1, 2, 1},
                       Case{"cudaStreamBeginCapture", cudaErrorInvalidValue, true, 0, 0, 2},
                       Case{"cublasGemmEx", cudaSuccess, false, 1, 2, 1}}) {
    SCOPED_TRACE(std::string(c.call) + " " + cudaGetErrorName(c.error));
    const std::string before = fakecuda::LiveObjects();
    auto twin_ptr = std::make_unique<Twin>(model, cuda::Precision::kF32, /*graphs=*/true, /*fold=*/true,
                                           /*slots=*/256, 1e-5);
    Twin& twin = *twin_ptr;
    std::mt19937 rng(5);
    const int32_t type = model->layer_type(0);
    twin.Round(type, 8, rng);  // the shape's first round: plain, before any capture
    {
      fakecuda::ScopedFailure failure(c.call, 1, c.error);
      if (c.round_fails) {  // run on the GPU only, into slots the twin does not compare
        auto failed = twin.gpu().Run(FirstLayerBatch(model, 8, 3, /*out_base=*/200));
        ASSERT_FALSE(failed.ok());
        EXPECT_NE(failed.status().message().find(c.call), std::string::npos) << failed.status().ToString();
      } else {
        testing::internal::CaptureStderr();
        twin.Round(type, 8, rng);  // its graph cannot be made: run plain
        const std::string said = testing::internal::GetCapturedStderr();
        // A launch that failed inside the capture invalidated it: the warning names both.
        if (std::string(c.call) == "cublasGemmEx") {
          EXPECT_NE(said.find("cublasGemmEx"), std::string::npos) << said;
          EXPECT_NE(said.find("cudaStreamEndCapture"), std::string::npos) << said;
        }
      }
    }
    twin.Round(type, 8, rng);   // refused: plain again, no capture tried; otherwise captured
    twin.Round(type, 20, rng);  // another bucket: plain first, then captured
    twin.Round(type, 20, rng);
    if (HasFatalFailure()) return;
    twin.CompareSlots();
    const auto g = twin.gpu().device().graph_stats();
    EXPECT_EQ(g.warmups, 2);
    EXPECT_EQ(g.capture_failures, c.capture_failures);
    EXPECT_EQ(g.plain_rounds, c.plain_rounds);
    EXPECT_EQ(g.captures, c.captures);
    EXPECT_EQ(g.launches, c.captures);
    twin_ptr.reset();  // the failed capture's graph included: nothing left
    EXPECT_EQ(fakecuda::LiveObjects(), before);
  }
}

// The weight store holds each GPU's own copy, on that GPU, whether the copies came by the NCCL
// broadcast or by the uploads it falls back to. Needs two (fake) GPUs or more.
TEST(CudaDeviceFaultTest, TheWeightStoreHoldsEachGpusOwnCopyAfterABroadcastOrItsFallback) {
  auto n = cuda::CountGpus();
  ASSERT_TRUE(n.ok());
  if (*n < 2) GTEST_SKIP() << "one GPU: nothing to broadcast to";
  auto model = testing_models::Make(ModelKind::kLstm, 64, 2, 13, 64);
  std::vector<int> gpus;
  for (int g = 0; g < *n; ++g) gpus.push_back(g);
  for (bool broadcast_fails : {false, true}) {
    SCOPED_TRACE(broadcast_fails ? "after a failed broadcast" : "by the broadcast");
    fakecuda::ScopedFailure failure(broadcast_fails ? "ncclGroupEnd" : "", broadcast_fails ? 1 : 0);
    cuda::CudaWeightStore store(cuda::GemmDtype::kF32, kDefaultFoldMaxBytes);
    ASSERT_TRUE(store.Prepare({model.get()}, gpus).ok());
    std::set<const void*> copies;
    for (int g : gpus) {
      auto w = store.Get(*model, g);
      ASSERT_NE(w, nullptr) << "GPU " << g;
      EXPECT_EQ(w->gpu, g);
      ASSERT_FALSE(w->types.empty());
      EXPECT_EQ(fakecuda::MemoryNotOn(g, {w->types[0].weight}), "") << "GPU " << g;
      copies.insert(w->types[0].weight);
    }
    EXPECT_EQ(copies.size(), gpus.size());
  }
}

// Every GPU of `gpus` holds its own copy of `model`'s weights in `store`, byte for byte gpus[0]'s.
void ExpectTheSameWeightsOnEachGpu(const cuda::CudaWeightStore& store, const Model& model,
                                   const std::vector<int>& gpus) {
  auto first = store.Get(model, gpus[0]);
  ASSERT_NE(first, nullptr);
  for (int g : gpus) {
    auto w = store.Get(model, g);
    ASSERT_NE(w, nullptr) << "GPU " << g;
    EXPECT_EQ(w->gpu, g);
    ASSERT_EQ(w->buffers.size(), first->buffers.size()) << "GPU " << g;
    for (size_t b = 0; b < w->buffers.size(); ++b) {
      ASSERT_EQ(w->buffers[b].bytes(), first->buffers[b].bytes()) << "GPU " << g << " buffer " << b;
      if (g != gpus[0]) {
        EXPECT_NE(w->buffers[b].get(), first->buffers[b].get()) << "GPU " << g << " buffer " << b;
      }
      EXPECT_EQ(std::memcmp(w->buffers[b].get(), first->buffers[b].get(), w->buffers[b].bytes()), 0)
          << "GPU " << g << " buffer " << b;
    }
  }
}

// Every GPU into `gpus`; a test that broadcasts skips with fewer than two.
#define EVERY_GPU_OR_SKIP(gpus)                                       \
  std::vector<int> gpus;                                              \
  {                                                                   \
    auto n = cuda::CountGpus();                                       \
    ASSERT_TRUE(n.ok());                                              \
    if (*n < 2) GTEST_SKIP() << "one GPU: nothing to broadcast to";   \
    for (int g = 0; g < *n; ++g) gpus.push_back(g);                   \
  }

// Prepare, timed, with what it said on stderr.
struct TimedPrepare {
  Status status;
  int64_t took_ms = 0;
  std::string said;
};
TimedPrepare PrepareTimed(cuda::CudaWeightStore& store, const Model& model, const std::vector<int>& gpus) {
  testing::internal::CaptureStderr();
  const auto start = std::chrono::steady_clock::now();
  TimedPrepare out;
  out.status = store.Prepare({&model}, gpus);
  out.took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  out.said = testing::internal::GetCapturedStderr();
  return out;
}

// A broadcast whose ranks never meet (a GPU link down, a rank's kernel that never starts) would
// hang NCCL's kernels, and the node's start, for good: past its time limit it is aborted, and each
// GPU uploads from the host instead. Nothing of the broadcast is left behind.
TEST(CudaDeviceFaultTest, AHungBroadcastIsAbortedAtItsTimeLimitAndEachGpuUploads) {
  EVERY_GPU_OR_SKIP(gpus);
  auto model = testing_models::Make(ModelKind::kLstm, 64, 2, 14, 64);
  const std::string before = fakecuda::LiveObjects();
  {
    cuda::BroadcastLimits limits;
    limits.timeout = std::chrono::milliseconds(300);
    limits.per_gib = std::chrono::milliseconds(0);
    cuda::CudaWeightStore store(cuda::GemmDtype::kF32, kDefaultFoldMaxBytes, limits);
    fakecuda::HangNextNcclGroup();
    const long broadcasts_before = fakecuda::NcclBroadcastsRun();
    const TimedPrepare p = PrepareTimed(store, *model, gpus);
    const std::string& said = p.said;
    const int64_t took_ms = p.took_ms;
    ASSERT_TRUE(p.status.ok()) << p.status.ToString();
    EXPECT_GE(took_ms, 300);
    EXPECT_LT(took_ms, 30000);
    EXPECT_NE(said.find("did not finish in 300 ms"), std::string::npos) << said;
    EXPECT_NE(said.find("uploading to each GPU"), std::string::npos) << said;
    EXPECT_EQ(fakecuda::NcclBroadcastsRun(), broadcasts_before) << "the hung broadcast copied";
    ExpectTheSameWeightsOnEachGpu(store, *model, gpus);
  }
  EXPECT_EQ(fakecuda::LiveObjects(), before);  // communicators aborted, streams and copies freed
}

// An asynchronous NCCL error (a peer lost mid-copy) ends the wait at once, not at the time limit.
TEST(CudaDeviceFaultTest, ABroadcastWithAnAsynchronousNcclErrorIsAbortedAtOnce) {
  EVERY_GPU_OR_SKIP(gpus);
  auto model = testing_models::Make(ModelKind::kLstm, 64, 2, 15, 64);
  const std::string before = fakecuda::LiveObjects();
  {
    cuda::CudaWeightStore store(cuda::GemmDtype::kF32, kDefaultFoldMaxBytes);  // a 60 s limit
    fakecuda::HangNextNcclGroup();
    fakecuda::ScopedFailure failure("ncclCommGetAsyncError", 1);
    const TimedPrepare p = PrepareTimed(store, *model, gpus);
    const std::string& said = p.said;
    const int64_t took_ms = p.took_ms;
    ASSERT_TRUE(p.status.ok()) << p.status.ToString();
    EXPECT_LT(took_ms, 30000);
    EXPECT_NE(said.find("ncclBroadcast (asynchronous): remote process exited"), std::string::npos) << said;
    ExpectTheSameWeightsOnEachGpu(store, *model, gpus);
  }
  EXPECT_EQ(fakecuda::LiveObjects(), before);
}

// Kernels that do not stop when aborted may still write into the copies: their memory is never
// freed (or reused), and the GPUs are not used (UNAVAILABLE, so that --cpu-fallback applies).
TEST(CudaDeviceFaultTest, ABroadcastWhoseKernelsOutliveTheAbortLeavesTheGpusUnusedAndItsMemoryHeld) {
  EVERY_GPU_OR_SKIP(gpus);
  auto model = testing_models::Make(ModelKind::kLstm, 64, 2, 16, 64);
  const std::string before = fakecuda::LiveObjects();
  const auto abort_takes = std::chrono::milliseconds(1500);
  {
    cuda::BroadcastLimits limits;
    limits.timeout = std::chrono::milliseconds(100);
    limits.per_gib = std::chrono::milliseconds(0);
    limits.after_abort = std::chrono::milliseconds(200);
    cuda::CudaWeightStore store(cuda::GemmDtype::kF32, kDefaultFoldMaxBytes, limits);
    fakecuda::HangNextNcclGroup(abort_takes);
    const Status prepared = store.Prepare({model.get()}, gpus);
    EXPECT_EQ(prepared.code(), StatusCode::kUnavailable) << prepared.ToString();
    EXPECT_NE(prepared.message().find("did not finish in 100 ms"), std::string::npos) << prepared.ToString();
    EXPECT_NE(prepared.message().find("cannot be used until the process restarts"), std::string::npos)
        << prepared.ToString();
    for (int g : gpus) EXPECT_EQ(store.Get(*model, g), nullptr) << "GPU " << g;
  }
  EXPECT_NE(fakecuda::LiveObjects(), before) << "memory an aborted kernel may still write to was freed";
  std::this_thread::sleep_for(abort_takes + std::chrono::milliseconds(500));  // the fake's kernels end
}
#endif

TEST(CudaDeviceTest, DestructorReportsEverySubmittedRound) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, kBigHidden / 2, 1, 3, 256);
  Completions done;
  {
    auto device = cuda::CudaDevice::Create("cuda:test", {});
    ASSERT_TRUE(device.ok());
    ASSERT_TRUE((*device)->RegisterModel(*model, 1024).ok());
    for (uint64_t i = 1; i <= 10; ++i) {
      (*device)->Submit(i, FirstLayerBatch(model, 256, 1), done.Callback());
    }
  }
  EXPECT_EQ(done.got.size(), 10u);
}

// The device's statistics (metrics read them): each round that ran counted once with its rows,
// and busy time between zero and the time the rounds took.
TEST(CudaDeviceTest, StatsCountRoundsRowsAndBusyTime) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, 64, 1, 3, 64);
  Completions done;
  auto device = cuda::CudaDevice::Create("cuda:test", {});
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  ASSERT_TRUE((*device)->RegisterModel(*model, 256).ok());
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 1; i <= 6; ++i) (*device)->Submit(i, FirstLayerBatch(model, 10 * int32_t(i), 1), done.Callback());
  ASSERT_NO_FATAL_FAILURE(done.WaitFor(6));
  const int64_t elapsed_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  const DeviceStats s = (*device)->stats();
  EXPECT_EQ(s.batches, 6);
  EXPECT_EQ(s.cells, 10 + 20 + 30 + 40 + 50 + 60);
  EXPECT_GT(s.busy_us, 0);
  EXPECT_LE(s.busy_us, elapsed_us);
}

// CreateCudaDevices: 0 is every GPU, a count is that many, a negative count or more GPUs than the
// machine has is refused with the numbers.
TEST(CudaDeviceTest, CreateCudaDevicesMakesTheCountAskedFor) {
  REQUIRE_GPU();
  auto model = testing_models::Make(ModelKind::kLstm, 64, 1, 3, 64);
  auto n = cuda::CountGpus();
  ASSERT_TRUE(n.ok());
  auto every = cuda::CreateCudaDevices(0, {}, {model.get()});
  ASSERT_TRUE(every.ok()) << every.status().ToString();
  EXPECT_EQ(static_cast<int>(every->size()), *n);
  every->clear();
  auto one = cuda::CreateCudaDevices(1, {}, {model.get()});
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->size(), 1u);
  one->clear();
  auto negative = cuda::CreateCudaDevices(-1, {}, {model.get()});
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), StatusCode::kInvalidArgument) << negative.status().ToString();
  auto too_many = cuda::CreateCudaDevices(*n + 1, {}, {model.get()});
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("asked for " + std::to_string(*n + 1) + " GPUs; this machine has " +
                                             std::to_string(*n)),
            std::string::npos)
      << too_many.status().ToString();
}

TEST(CudaDeviceTest, EveryGpuAnswersTheSameAfterTheNcclBroadcast) {
  REQUIRE_GPU();
  auto n = cuda::CountGpus();
  if (*n < 2) GTEST_SKIP() << "one GPU: nothing to broadcast to";
  auto model = testing_models::Make(ModelKind::kSeq2Seq, 64, 2, 9, 64);
#if CELLSERVE_FAKE_CUDA
  const long broadcasts_before = fakecuda::NcclBroadcastsRun();
#endif
  auto devices = cuda::CreateCudaDevices(0, {}, {model.get()});
  ASSERT_TRUE(devices.ok()) << devices.status().ToString();
  ASSERT_EQ(static_cast<int>(devices->size()), *n);
#if CELLSERVE_FAKE_CUDA
  // The weights reached the other GPUs by the broadcast, not by the fallback's uploads: one call
  // per rank and buffer.
  EXPECT_GT(fakecuda::NcclBroadcastsRun(), broadcasts_before);
  EXPECT_EQ((fakecuda::NcclBroadcastsRun() - broadcasts_before) % *n, 0);
#endif
  const auto answers = AnswersOfEachDevice(*devices, model);
  ASSERT_EQ(static_cast<int>(answers.size()), *n);
  for (size_t i = 1; i < answers.size(); ++i) EXPECT_EQ(answers[i], answers[0]) << "GPU " << i;
}

}  // namespace
}  // namespace cellserve
