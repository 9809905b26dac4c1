// Kernel micro-benchmark (Google Benchmark): one batched LSTM step of the CPU backend (gather by
// slot, one sgemm, fused element-wise pass into the output slots) against the bare sgemm of the
// same shape [B, E+H] x [E+H, 4H], and our packed GEMM alone on the widest micro-kernel the CPU
// has and on the AVX2 one; and a first-layer (token-fed) step with its input folded into a
// per-token table (kernels/cpu/cell_weights.h) and without; and the LSTM step and GEMM of a model
// stored as BF16 / F16, whose packed weights keep 16 bits each (kernels/cpu/packed_gemm.h, same
// results); and, with --cpu-precision bf16, the GEMM and steps on AMX tiles (kernels/cpu/amx_gemm.h).
// Arguments: batch size, hidden size (E = H).
// Run: build/bench/bench_kernels --benchmark_format=json, or bench/run_kernel_bench.py for the
// table with PyTorch's nn.LSTMCell beside it.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/packed_gemm.h"
#include "runtime/model_repository.h"

namespace cellserve {
namespace {

// An lstm with E = H and random weights. By default two layers: layer 1 takes x from a slot, as
// most cells in a deep model do.
std::shared_ptr<const Model> MakeModel(int64_t hidden, int64_t max_batch, int64_t vocab = 1000, int64_t layers = 2,
                                       const std::string& dtype = "F32") {
  ModelSpec spec;
  spec.dtype = dtype;
  spec.name = "bench";
  spec.kind = ModelKind::kLstm;
  spec.vocab_size = vocab;
  spec.embed_dim = hidden;
  spec.hidden = hidden;
  spec.layers = layers;
  spec.classes = 2;
  spec.max_batch = max_batch;
  auto weights = RandomWeights(spec, 7, 0.08f);
  return Model::Create(spec, *weights).value();
}

// Skips the benchmark where --cpu-precision bf16 cannot run; true if it can.
bool AmxOrSkip(benchmark::State& state) {
  const std::string& why = cpu::AmxBf16Missing();
  if (why.empty()) return true;
  state.SkipWithError(why.c_str());
  return false;
}

void RunLstmStep(benchmark::State& state, const std::string& dtype, bool bf16_compute = false) {
  const int64_t B = state.range(0), H = state.range(1);
  if (bf16_compute && !AmxOrSkip(state)) return;
  auto model = MakeModel(H, B, 1000, 2, dtype);
  cpu::CpuBackendOptions options;
  options.cell_weights.bf16_compute = bf16_compute;
  cpu::CpuBackend backend(options);
  const int32_t slots = static_cast<int32_t>(4 * B);
  if (!backend.RegisterModel(*model, slots).ok()) state.SkipWithError("register failed");
  CellBatch batch;
  batch.model = model.get();
  batch.type = model->layer_type(1);
  for (int64_t r = 0; r < B; ++r) {
    CellRow row;
    row.x_slot = static_cast<SlotId>(r);                 // h of the layer below
    row.state_slot[0] = static_cast<SlotId>(B + r);      // previous step
    row.out_slot = static_cast<SlotId>(2 * B + r);
    batch.rows.push_back(row);
  }
  for (auto _ : state) {
    auto out = backend.Run(batch);
    benchmark::DoNotOptimize(out);
  }
  state.counters["batch"] = static_cast<double>(B);
}

void BM_LstmStep(benchmark::State& state) { RunLstmStep(state, "F32"); }
// Weights stored as BF16: 16-bit panels, half the bytes per step.
void BM_LstmStepBf16(benchmark::State& state) { RunLstmStep(state, "BF16"); }
// --cpu-precision bf16: the GEMM on AMX tiles.
void BM_LstmStepBf16Compute(benchmark::State& state) { RunLstmStep(state, "F32", true); }

// A first-layer step: x = embedding[token], the previous step's state; folded or not. The model
// has the demo's vocabulary (32,000: a 250 MiB table at H = 512, so rows come from memory, not
// cache). Made and registered once per (H, fold): folding a table takes about a second.
void RunTokenLstmStep(benchmark::State& state, bool fold, bool bf16_compute = false) {
  const int64_t B = state.range(0), H = state.range(1), kMaxBatch = 256;
  if (bf16_compute && !AmxOrSkip(state)) return;
  struct Setup {
    std::shared_ptr<const Model> model;
    std::unique_ptr<cpu::CpuBackend> backend;
  };
  static std::map<std::tuple<int64_t, bool, bool>, Setup> setups;
  Setup& setup = setups[{H, fold, bf16_compute}];
  if (!setup.model) {
    setup.model = MakeModel(H, kMaxBatch, /*vocab=*/32000, /*layers=*/1);
    cpu::CpuBackendOptions options;
    options.cell_weights.fold_max_bytes = fold ? int64_t{1} << 30 : 0;
    options.cell_weights.bf16_compute = bf16_compute;
    setup.backend = std::make_unique<cpu::CpuBackend>(options);
    if (!setup.backend->RegisterModel(*setup.model, 2 * kMaxBatch).ok()) state.SkipWithError("register failed");
  }
  if ((setup.backend->FoldedBytes(*setup.model) > 0) != fold) state.SkipWithError("folding not as asked");
  if (B > kMaxBatch) state.SkipWithError("batch over 256");
  CellBatch batch;
  batch.model = setup.model.get();
  batch.type = setup.model->layer_type(0);
  for (int64_t r = 0; r < B; ++r) {
    CellRow row;
    row.token = static_cast<int32_t>((r * 7919 + 13) % 32000);  // spread over the table
    row.state_slot[0] = static_cast<SlotId>(r);
    row.out_slot = static_cast<SlotId>(kMaxBatch + r);
    batch.rows.push_back(row);
  }
  for (auto _ : state) {
    auto out = setup.backend->Run(batch);
    benchmark::DoNotOptimize(out);
  }
  state.counters["batch"] = static_cast<double>(B);
}

void BM_TokenLstmStep(benchmark::State& state) { RunTokenLstmStep(state, false); }
void BM_TokenLstmStepFolded(benchmark::State& state) { RunTokenLstmStep(state, true); }
void BM_TokenLstmStepFoldedBf16Compute(benchmark::State& state) { RunTokenLstmStep(state, true, true); }

void BM_Sgemm(benchmark::State& state) {
  const int64_t B = state.range(0), H = state.range(1), K = 2 * H, N = 4 * H;
  openblas_set_num_threads(1);
  std::vector<float> x(B * K, 0.01f), w(N * K, 0.02f), c(B * N);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)N, (int)K, 1.0f, x.data(),
                (int)K, w.data(), (int)K, 0.0f, c.data(), (int)N);
    benchmark::ClobberMemory();
  }
  state.counters["batch"] = static_cast<double>(B);
}

// Our batch-invariant GEMM alone (weights packed once), same shape as BM_Sgemm, on one
// micro-kernel; `format`: the 16-bit panels it also gets (the weights, 0.0625, are exact in every
// format), which products of up to kNarrowMaxRows rows use.
void RunPackedGemm(benchmark::State& state, cpu::GemmIsa isa, DType format = DType::kF32) {
  const int64_t B = state.range(0), H = state.range(1), K = 2 * H, N = 4 * H;
  if (!cpu::GemmIsaSupported(isa)) {
    state.SkipWithError((std::string("no ") + cpu::GemmIsaName(isa) + " on this CPU").c_str());
    return;
  }
  std::vector<float> x(B * K, 0.01f), w(N * K, 0.0625f), c(B * N);
  cpu::PackedMatrix packed(w.data(), N, K, K, format);
  for (auto _ : state) {
    cpu::GemmPackedWith(isa, B, x.data(), K, packed, c.data(), N);
    benchmark::ClobberMemory();
  }
  state.counters["batch"] = static_cast<double>(B);
}

// The micro-kernel the server uses (the widest the CPU has).
void BM_PackedGemm(benchmark::State& state) { RunPackedGemm(state, cpu::GemmPackedIsa()); }

// The 16-column AVX2 micro-kernel, to show what the widest one adds.
void BM_PackedGemmAvx2(benchmark::State& state) { RunPackedGemm(state, cpu::GemmIsa::kAvx2); }

// With 16-bit panels, on the server's micro-kernel.
void BM_PackedGemmBf16(benchmark::State& state) {
  RunPackedGemm(state, cpu::GemmPackedIsa(), DType::kBF16);
}
void BM_PackedGemmF16(benchmark::State& state) {
  RunPackedGemm(state, cpu::GemmPackedIsa(), DType::kF16);
}

// --cpu-precision bf16: the same shape on AMX tiles (kernels/cpu/amx_gemm.h), X rounded to bf16 per call.
void BM_AmxGemm(benchmark::State& state) {
  const int64_t B = state.range(0), H = state.range(1), K = 2 * H, N = 4 * H;
  if (!AmxOrSkip(state)) return;
  std::vector<float> x(B * K, 0.01f), w(N * K, 0.0625f), c(B * N);
  cpu::AmxPanels packed(w.data(), N, K, K);
  for (auto _ : state) {
    cpu::GemmAmx(B, x.data(), K, packed, c.data(), N);
    benchmark::ClobberMemory();
  }
  state.counters["batch"] = static_cast<double>(B);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t batch : {1, 8, 64, 256}) b->Args({batch, 512});
  b->Unit(benchmark::kMicrosecond)->MinTime(0.3)->Repetitions(5)->ReportAggregatesOnly(true);
}

BENCHMARK(BM_Sgemm)->Apply(Shapes);
BENCHMARK(BM_PackedGemm)->Apply(Shapes);
BENCHMARK(BM_PackedGemmAvx2)->Apply(Shapes);
BENCHMARK(BM_PackedGemmBf16)->Apply(Shapes);
BENCHMARK(BM_PackedGemmF16)->Apply(Shapes);
BENCHMARK(BM_AmxGemm)->Apply(Shapes);
BENCHMARK(BM_LstmStep)->Apply(Shapes);
BENCHMARK(BM_LstmStepBf16)->Apply(Shapes);
BENCHMARK(BM_TokenLstmStep)->Apply(Shapes);
BENCHMARK(BM_TokenLstmStepFolded)->Apply(Shapes);
BENCHMARK(BM_LstmStepBf16Compute)->Apply(Shapes);
BENCHMARK(BM_TokenLstmStepFoldedBf16Compute)->Apply(Shapes);

}  // namespace
}  // namespace cellserve

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("gemm_isa", cellserve::cpu::GemmIsaName(cellserve::cpu::GemmPackedIsa()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
