// bench_cuda_lstm: one LSTM step on the GPU, ours against cuDNN and an unfused baseline (issue 7).
//
// What it measures, fp32 throughout, for H in {512, 1024} (input dim = H: an upper LSTM layer whose
// x is the h of another state slot, so no embedding table) and batch B in {1, 2, ..., 512}:
//   ours          the server's step: LaunchGather (kLstm, x and h_prev from state slots) + ONE
//                 cublasGemmEx for all four gates (fp32, CUBLAS_COMPUTE_32F, no TF32) +
//                 LaunchCellPointwise, captured once into a CUDA graph and launched per step
//                 ("ours, no graph": the same three launches, plain). States live in a pool of
//                 2B+1 slots; a step reads set A and writes set B, the next one the reverse
//                 (two index arrays, uploaded once; one graph per direction).
//   ours, cold L2 the graph step timed alone right after a kernel that reads 2x the L2 size, so
//                 the weights come from HBM (the steady state above keeps them in L2: 8 and 32
//                 MiB both fit in an H100's 50 MB L2).
//   unfused       X gathered by two copy kernels, four GEMMs (one per gate, [H, 2H] each) and
//                 ten element-wise kernels (bias add x4, sigmoid x3, tanh, c update, h update),
//                 graph-captured the same way: what fusion buys.
//   cuDNN         cudnnRNNForward (cuDNN 9 API, CUDNN_LSTM, ALGO_STANDARD, inference mode) on a
//                 1-step sequence and on a 24-step sequence (per step = call time / 24). Ours
//                 and unfused run 24 steps back to back as 24 graph launches (one per step,
//                 alternating the two ping-pong graphs) for the 24-step column.
//   bandwidth     device-to-device cudaMemcpy of 1 GiB (median of 5), counted as 2 GiB of
//                 traffic (read + write); floor = 4H*2H*4 bytes of weights / that bandwidth.
// Timing: cudaEvents around N steps after a warm-up, 7 repetitions, median per step in us.
// Correctness: after timing each (H, B), one step of ours from a fresh random pool is compared
// with cuDNN (same weights copied into cuDNN's layout, recurrent bias 0), with the unfused step,
// and on its first rows with a double-precision host reference; all must agree within 1e-4.
//
// Run:  build/bench/bench_cuda_lstm [--quick] [--json FILE]   (--help for everything)
// or:   /usr/bin/python3 bench/run_gpu_bench.py [--quick] [--write-docs]
// Exit: 0 ok; 1 error or a failed correctness check; 2 no CUDA device; 64 bad usage.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef CELLSERVE_HAVE_CUDNN
#include <cudnn.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/cell_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/gpu/batch_plan.h"
#include "runtime/status.h"

namespace {

using cellserve::Internal;
using cellserve::InvalidArgument;
using cellserve::OkStatus;
using cellserve::Status;
using cellserve::StatusOr;
namespace cu = cellserve::cuda;
namespace gpu = cellserve::gpu;

constexpr int kRepeats = 7;          // timed repetitions; the median is reported
constexpr int kSeqSteps = 24;        // the sequence comparison
constexpr double kTolerance = 1e-4;  // correctness check, max |difference| of h and c
constexpr int kHostRefRows = 4;      // rows checked against the double-precision host reference

#ifdef CELLSERVE_HAVE_CUDNN
Status CudnnStatus(cudnnStatus_t s, const char* call) {
  if (s == CUDNN_STATUS_SUCCESS) return OkStatus();
  return Internal(std::string(call) + ": " + cudnnGetErrorString(s));
}
#define CS_CUDNN(call) RETURN_IF_ERROR(CudnnStatus((call), #call))
#endif

// ------------------------------------------------------------------------------------------
// Options

struct Options {
  bool quick = false;
  std::string json;
  bool cudnn_fma = true;  // CUDNN_FMA_MATH (strict fp32); false: CUDNN_DEFAULT_MATH (may use TF32)
  std::vector<int> hidden = {512, 1024};
  std::vector<int> batches = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  static int Warmup(bool quick) { return quick ? 5 : 30; }
  static int Iters(bool quick) { return quick ? 40 : 300; }  // steps per timed repetition
  int warmup() const { return Warmup(quick); }
  int iters() const { return Iters(quick); }
  int cold_samples() const { return quick ? 15 : 60; }
};

void PrintHelp() {
  std::printf(
      "usage: bench_cuda_lstm [--json FILE] [--quick] [--cudnn-math fma|default]\n"
      "                       [--hidden 512,1024] [--batches 1,2,...] [--help]\n"
      "\n"
      "One fp32 LSTM step on the GPU (issue 7): our fused step against cuDNN and an unfused\n"
      "baseline, for H in {512, 1024} (input dim = H, x taken from a state slot as in an upper\n"
      "layer) and batch 1..512.\n"
      "\n"
      "Columns (median per step over %d repetitions, microseconds):\n"
      "  ours_graph        LaunchGather + one cublasGemmEx for the 4 gates (fp32, CUBLAS_COMPUTE_32F,\n"
      "                    no TF32) + LaunchCellPointwise, one CUDA graph launch per step; states\n"
      "                    ping-pong between two sets of slots of a 2B+1 slot pool\n"
      "  ours_nograph      the same three launches without a graph\n"
      "  ours_cold_l2      the graph step alone right after reading 2x the L2 size, so the weights\n"
      "                    come from HBM (median of single-step timings); the columns above run\n"
      "                    back to back and keep the weights in L2 when they fit\n"
      "  unfused           2 copy kernels + 4 per-gate GEMMs + 10 element-wise kernels, one graph\n"
      "  cudnn_1step       cudnnRNNForward, CUDNN_LSTM, ALGO_STANDARD, inference, 1-step sequence\n"
      "  cudnn_24/step     cudnnRNNForward on a %d-step sequence, divided by %d\n"
      "  ours_24/step      %d graph launches back to back (one per step), divided by %d\n"
      "  unf_24/step       the same for the unfused graph\n"
      "  dnn/ours          cudnn_1step / ours_graph;  dnn24/ours24: cudnn_24/step / ours_24/step\n"
      "Also: device-to-device cudaMemcpy bandwidth on 1 GiB (median of 5, read + write counted),\n"
      "the floor 'read the weights once' = 4H*2H*4 bytes / bandwidth, and ours at batch 1 / floor.\n"
      "Correctness: per (H, batch), one step of ours vs cuDNN (same weights, recurrent bias 0),\n"
      "vs the unfused step, and (first %d rows) vs a double-precision host reference; every max\n"
      "|diff| of h and c must be <= %g, else FAIL and exit status 1.\n"
      "\n"
      "Options:\n"
      "  --json FILE       also write device, bandwidth, rows and checks as JSON to FILE\n"
      "  --quick           %d warm-up and %d timed steps per repetition instead of %d and %d\n"
      "                    (the whole run takes well under a minute on an H100)\n"
      "  --cudnn-math M    fma (default): CUDNN_FMA_MATH, strict fp32 like ours; default:\n"
      "                    CUDNN_DEFAULT_MATH, which lets cuDNN use TF32 tensor cores on Ampere+\n"
      "                    (not fp32-exact: the 1e-4 check may then fail)\n"
      "  --hidden LIST     hidden sizes (default 512,1024)\n"
      "  --batches LIST    batch sizes (default 1,2,4,8,16,32,64,128,256,512)\n"
      "  --help            this text\n"
      "\n"
      "Without a CUDA device it prints 'no CUDA device: <error>' and exits 2. Exit 0: done and\n"
      "every check passed; 1: an error or a failed check; 64: bad usage.\n"
      "bench/run_gpu_bench.py runs this, checks the issue's targets and can update\n"
      "docs/BENCHMARKS.md. cuDNN: %s.\n",
      kRepeats, kSeqSteps, kSeqSteps, kSeqSteps, kSeqSteps, kHostRefRows, kTolerance, Options::Warmup(true),
      Options::Iters(true), Options::Warmup(false), Options::Iters(false),
#ifdef CELLSERVE_HAVE_CUDNN
      "built in"
#else
      "NOT built in (cudnn.h / libcudnn not found at configure time): cuDNN columns are n/a"
#endif
  );
}

bool ParseIntList(const char* text, std::vector<int>* out) {
  out->clear();
  std::string s(text);
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0 || v > 65536) return false;
    out->push_back(static_cast<int>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return !out->empty();
}

// Returns -1 to go on, else the exit status.
int ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") {
      PrintHelp();
      return 0;
    } else if (a == "--quick") {
      o->quick = true;
    } else if (a == "--json" && has_value) {
      o->json = argv[++i];
    } else if (a == "--cudnn-math" && has_value) {
      std::string m = argv[++i];
      if (m != "fma" && m != "default") {
        std::fprintf(stderr, "bench_cuda_lstm: --cudnn-math takes fma or default\n");
        return 64;
      }
      o->cudnn_fma = m == "fma";
    } else if (a == "--hidden" && has_value) {
      if (!ParseIntList(argv[++i], &o->hidden)) {
        std::fprintf(stderr, "bench_cuda_lstm: bad --hidden list\n");
        return 64;
      }
    } else if (a == "--batches" && has_value) {
      if (!ParseIntList(argv[++i], &o->batches)) {
        std::fprintf(stderr, "bench_cuda_lstm: bad --batches list\n");
        return 64;
      }
    } else {
      std::fprintf(stderr, "bench_cuda_lstm: unknown or incomplete argument '%s' (try --help)\n", a.c_str());
      return 64;
    }
  }
  return -1;
}

// ------------------------------------------------------------------------------------------
// Device memory and small helpers

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  Status Alloc(size_t bytes) {
    if (ptr_ != nullptr) CS_CUDA(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = bytes;
    CS_CUDA(cudaMalloc(&ptr_, std::max<size_t>(bytes, 4)));
    return OkStatus();
  }
  void* get() const { return ptr_; }
  float* f() const { return static_cast<float*>(ptr_); }
  int32_t* i() const { return static_cast<int32_t*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class EventPair {
 public:
  EventPair() = default;
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  ~EventPair() {
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
  }
  Status Init() {
    CS_CUDA(cudaEventCreate(&start_));
    CS_CUDA(cudaEventCreate(&stop_));
    return OkStatus();
  }
  Status Start(cudaStream_t s) { return cu::CudaStatus(cudaEventRecord(start_, s), "cudaEventRecord"); }
  Status Stop(cudaStream_t s) { return cu::CudaStatus(cudaEventRecord(stop_, s), "cudaEventRecord"); }
  // After the stream is synchronized.
  StatusOr<double> ElapsedUs() const {
    float ms = 0;
    CS_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
    return 1000.0 * ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int Blocks(int64_t n, int threads = 256) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
}

// ------------------------------------------------------------------------------------------
// Kernels of this file: fill, L2 flush, and the unfused baseline's gather and element-wise ops.

__device__ uint32_t HashU32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

__global__ void FillUniformKernel(float* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = HashU32(static_cast<uint32_t>(i) ^ HashU32(seed + static_cast<uint32_t>(i >> 32) * 0x9e3779b9U));
    p[i] = lo + (hi - lo) * static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
  }
}

// Reads n float4s; writes only if their sum is an impossible value (so the reads stay).
__global__ void ReadAllKernel(const float4* p, int64_t n, float* sink) {
  float s = 0.f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float4 v = p[i];
    s += v.x + v.y + v.z + v.w;
  }
  if (s == 1234567.0f) *sink = s;
}

// X[r, col0 + j] = h of slot src[r] (zeros for -1), j < H; X is [B, 2H], the state [slots+1, 2H].
__global__ void GatherHKernel(const float* state, const int32_t* src, int B, int H, float* X, int col0) {
  int64_t n = int64_t{B} * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    int r = static_cast<int>(e / H), j = static_cast<int>(e % H);
    int32_t slot = src[r];
    X[int64_t{r} * 2 * H + col0 + j] = slot < 0 ? 0.f : state[int64_t{slot} * 2 * H + j];
  }
}

__global__ void AddBiasKernel(float* g, const float* bias, int64_t n, int H) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x)
    g[e] += bias[e % H];
}

__global__ void SigmoidKernel(float* g, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x)
    g[e] = 1.f / (1.f + expf(-g[e]));
}

__global__ void TanhKernel(float* g, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x)
    g[e] = tanhf(g[e]);
}

// c_out = f * c_prev + i * g, into the out slots' c.
__global__ void CellUpdateKernel(const float* gi, const float* gf, const float* gg, float* state,
                                 const int32_t* h_src, const int32_t* out, int B, int H) {
  int64_t n = int64_t{B} * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    int r = static_cast<int>(e / H), j = static_cast<int>(e % H);
    float c_prev = h_src[r] < 0 ? 0.f : state[int64_t{h_src[r]} * 2 * H + H + j];
    state[int64_t{out[r]} * 2 * H + H + j] = gf[e] * c_prev + gi[e] * gg[e];
  }
}

// h_out = o * tanh(c_out), into the out slots' h.
__global__ void HiddenUpdateKernel(const float* go, float* state, const int32_t* out, int B, int H) {
  int64_t n = int64_t{B} * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    int r = static_cast<int>(e / H), j = static_cast<int>(e % H);
    float* slot = state + int64_t{out[r]} * 2 * H;
    slot[j] = go[e] * tanhf(slot[H + j]);
  }
}

Status FillUniform(float* p, int64_t n, uint32_t seed, float lo, float hi, cudaStream_t s) {
  FillUniformKernel<<<Blocks(n), 256, 0, s>>>(p, n, seed, lo, hi);
  CS_CUDA(cudaGetLastError());
  return OkStatus();
}

// ------------------------------------------------------------------------------------------
// Shared context: one stream, cuBLAS (capture-safe workspace), cuDNN.

struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceBuffer blas_workspace;
  DeviceBuffer flush;        // 2x L2, read before each cold-L2 sample
  DeviceBuffer sink;
#ifdef CELLSERVE_HAVE_CUDNN
  cudnnHandle_t dnn = nullptr;
#endif
  int l2_bytes = 0;

  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
#ifdef CELLSERVE_HAVE_CUDNN
    if (dnn != nullptr) cudnnDestroy(dnn);
#endif
    if (blas != nullptr) cublasDestroy(blas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  Status Init() {
    CS_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CS_CUBLAS(cublasCreate(&blas));
    CS_CUBLAS(cublasSetStream(blas, stream));
    CS_CUBLAS(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));  // with COMPUTE_32F: no TF32
    // A workspace set before capture makes cuBLAS capture-safe (no allocation inside the graph).
    constexpr size_t kWorkspace = size_t{32} << 20;
    RETURN_IF_ERROR(blas_workspace.Alloc(kWorkspace));
    CS_CUBLAS(cublasSetWorkspace(blas, blas_workspace.get(), kWorkspace));
    int dev = 0;
    CS_CUDA(cudaGetDevice(&dev));
    CS_CUDA(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, dev));
    RETURN_IF_ERROR(flush.Alloc(std::max<size_t>(size_t{2} * l2_bytes, size_t{64} << 20)));
    RETURN_IF_ERROR(sink.Alloc(sizeof(float)));
    CS_CUDA(cudaMemsetAsync(flush.get(), 0, flush.bytes(), stream));
#ifdef CELLSERVE_HAVE_CUDNN
    CS_CUDNN(cudnnCreate(&dnn));
    CS_CUDNN(cudnnSetStream(dnn, stream));
#endif
    return OkStatus();
  }

  Status FlushL2() {
    int64_t n = static_cast<int64_t>(flush.bytes() / sizeof(float4));
    ReadAllKernel<<<Blocks(n), 256, 0, stream>>>(static_cast<const float4*>(flush.get()), n, sink.f());
    CS_CUDA(cudaGetLastError());
    return OkStatus();
  }
};

// ------------------------------------------------------------------------------------------
// Timing

using Enqueue = std::function<Status()>;

// Median over kRepeats of (time of `iters` calls of `call`) / (iters * steps_per_call), in us.
StatusOr<double> MedianUsPerStep(Context& ctx, const Options& opt, int steps_per_call, const Enqueue& call) {
  int calls = std::max(3, (opt.iters() + steps_per_call - 1) / steps_per_call);
  int warm = std::max(2, (opt.warmup() + steps_per_call - 1) / steps_per_call);
  for (int i = 0; i < warm; ++i) RETURN_IF_ERROR(call());
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  EventPair ev;
  RETURN_IF_ERROR(ev.Init());
  std::vector<double> per_step;
  for (int r = 0; r < kRepeats; ++r) {
    RETURN_IF_ERROR(ev.Start(ctx.stream));
    for (int i = 0; i < calls; ++i) RETURN_IF_ERROR(call());
    RETURN_IF_ERROR(ev.Stop(ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    ASSIGN_OR_RETURN(double us, ev.ElapsedUs());
    per_step.push_back(us / (static_cast<double>(calls) * steps_per_call));
  }
  return Median(per_step);
}

// Median of single calls of `call`, each right after an L2 flush.
StatusOr<double> MedianColdUs(Context& ctx, const Options& opt, const Enqueue& call) {
  for (int i = 0; i < 2; ++i) RETURN_IF_ERROR(call());
  std::vector<double> samples;
  EventPair ev;
  RETURN_IF_ERROR(ev.Init());
  for (int r = 0; r < opt.cold_samples(); ++r) {
    RETURN_IF_ERROR(ctx.FlushL2());
    RETURN_IF_ERROR(ev.Start(ctx.stream));
    RETURN_IF_ERROR(call());
    RETURN_IF_ERROR(ev.Stop(ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    ASSIGN_OR_RETURN(double us, ev.ElapsedUs());
    samples.push_back(us);
  }
  return Median(samples);
}

// Device-to-device copy of 1 GiB, median of 5; GB/s with read + write counted (2 GiB a copy).
StatusOr<double> MeasureBandwidthGBs(Context& ctx) {
  constexpr size_t kBytes = size_t{1} << 30;
  DeviceBuffer src, dst;
  RETURN_IF_ERROR(src.Alloc(kBytes));
  RETURN_IF_ERROR(dst.Alloc(kBytes));
  CS_CUDA(cudaMemsetAsync(src.get(), 1, kBytes, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, ctx.stream));  // warm-up
  EventPair ev;
  RETURN_IF_ERROR(ev.Init());
  std::vector<double> gbs;
  for (int r = 0; r < 5; ++r) {
    RETURN_IF_ERROR(ev.Start(ctx.stream));
    CS_CUDA(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, ctx.stream));
    RETURN_IF_ERROR(ev.Stop(ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    ASSIGN_OR_RETURN(double us, ev.ElapsedUs());
    gbs.push_back(2.0 * kBytes / (us * 1e-6) / 1e9);
  }
  return Median(gbs);
}

// ------------------------------------------------------------------------------------------
// CUDA graph of one captured sequence of launches.

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
  }
  Status Capture(cudaStream_t s, const Enqueue& body) {
    CS_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    Status st = body();
    cudaGraph_t graph = nullptr;
    cudaError_t end = cudaStreamEndCapture(s, &graph);
    if (!st.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return st.WithContext("during graph capture");
    }
    CS_CUDA(end);
    graph_ = graph;
    CS_CUDA(cudaGraphInstantiate(&exec_, graph_, 0));
    return OkStatus();
  }
  Status Launch(cudaStream_t s) const { return cu::CudaStatus(cudaGraphLaunch(exec_, s), "cudaGraphLaunch"); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// ------------------------------------------------------------------------------------------
// The weights of one LSTM layer (ours: W [4H, 2H] row-major, columns [x | h], gates i, f, g, o).

struct LstmWeights {
  int H = 0;
  DeviceBuffer w, bias;
  std::vector<float> host_w, host_bias;  // for the host reference

  Status Init(Context& ctx, int hidden) {
    H = hidden;
    int64_t n = int64_t{4} * H * 2 * H;
    RETURN_IF_ERROR(w.Alloc(n * sizeof(float)));
    RETURN_IF_ERROR(bias.Alloc(int64_t{4} * H * sizeof(float)));
    float k = 1.0f / std::sqrt(static_cast<float>(H));  // PyTorch's LSTM init range
    RETURN_IF_ERROR(FillUniform(w.f(), n, 1000u + H, -k, k, ctx.stream));
    RETURN_IF_ERROR(FillUniform(bias.f(), int64_t{4} * H, 2000u + H, -k, k, ctx.stream));
    host_w.resize(n);
    host_bias.resize(int64_t{4} * H);
    CS_CUDA(cudaMemcpyAsync(host_w.data(), w.get(), n * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
    CS_CUDA(cudaMemcpyAsync(host_bias.data(), bias.get(), host_bias.size() * sizeof(float),
                            cudaMemcpyDeviceToHost, ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    return OkStatus();
  }
  double bytes() const { return 4.0 * H * 2.0 * H * sizeof(float); }
};

// ------------------------------------------------------------------------------------------
// The state pool and the two ping-pong index arrays (BatchPlan layout, kernels/gpu/batch_plan.h).

struct StatePool {
  int H = 0, B = 0;
  DeviceBuffer state;           // [2B + 1, 2H]: set A = slots [0, B), set B = [B, 2B), scratch 2B
  DeviceBuffer index[2];        // [0]: A -> B, [1]: B -> A; kPlanArrays * B ints each
  std::vector<int32_t> host_index[2];

  int slots() const { return 2 * B; }
  int64_t floats() const { return int64_t{slots() + 1} * 2 * H; }

  static std::vector<int32_t> Plan(int B, int from, int to) {
    std::vector<int32_t> idx(static_cast<size_t>(gpu::kPlanArrays) * B);
    for (int r = 0; r < B; ++r) {
      idx[gpu::kXSrc * B + r] = from + (B - 1 - r);  // x: the h of another slot of the same set
      idx[gpu::kHSrc * B + r] = from + r;
      idx[gpu::kH2Src * B + r] = -1;
      idx[gpu::kOut * B + r] = to + r;
    }
    return idx;
  }

  Status Init(Context& ctx, int hidden, int batch) {
    H = hidden;
    B = batch;
    RETURN_IF_ERROR(state.Alloc(floats() * sizeof(float)));
    host_index[0] = Plan(B, 0, B);
    host_index[1] = Plan(B, B, 0);
    for (int d = 0; d < 2; ++d) {
      RETURN_IF_ERROR(index[d].Alloc(host_index[d].size() * sizeof(int32_t)));
      CS_CUDA(cudaMemcpyAsync(index[d].get(), host_index[d].data(), host_index[d].size() * sizeof(int32_t),
                              cudaMemcpyHostToDevice, ctx.stream));
    }
    return Randomize(ctx, 77u);
  }
  Status Randomize(Context& ctx, uint32_t seed) {
    return FillUniform(state.f(), floats(), seed + 31u * B + H, -1.f, 1.f, ctx.stream);
  }
};

// ------------------------------------------------------------------------------------------
// Ours: gather + one GEMM + fused pointwise (kernels/cuda/cell_kernels.h).

class OursStep {
 public:
  Status Init(Context& ctx, const LstmWeights& w, StatePool& pool) {
    ctx_ = &ctx;
    w_ = &w;
    pool_ = &pool;
    int64_t k = cu::GatherWidth(cellserve::CellOp::kLstm, w.H, w.H);
    if (k != 2 * w.H) return Internal("GatherWidth(kLstm, H, H) = " + std::to_string(k) + ", expected 2H");
    RETURN_IF_ERROR(x_.Alloc(int64_t{pool.B} * k * sizeof(float)));
    RETURN_IF_ERROR(g_.Alloc(int64_t{pool.B} * 4 * w.H * sizeof(float)));
    return OkStatus();
  }
  // One step in direction d (0: A -> B, 1: B -> A), plain launches on ctx.stream.
  Status Enqueue(int d) const {
    const int H = w_->H, B = pool_->B;
    cu::GatherArgs ga;
    ga.op = cellserve::CellOp::kLstm;
    ga.index = pool_->index[d].i();
    ga.bucket = B;
    ga.embedding = nullptr;
    ga.state = pool_->state.f();
    ga.input_dim = H;
    ga.hidden = H;
    ga.x = x_.get();
    ga.dtype = cu::GemmDtype::kF32;
    RETURN_IF_ERROR(cu::LaunchGather(ga, ctx_->stream));
    const float one = 1.f, zero = 0.f;
    // G (col-major [4H, B] = row-major [B, 4H]) = W (row-major [4H, 2H], so op T) x X^T.
    CS_CUBLAS(cublasGemmEx(ctx_->blas, CUBLAS_OP_T, CUBLAS_OP_N, 4 * H, B, 2 * H, &one, w_->w.get(), CUDA_R_32F,
                           2 * H, x_.get(), CUDA_R_32F, 2 * H, &zero, g_.get(), CUDA_R_32F, 4 * H,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    cu::PointwiseArgs pa;
    pa.op = cellserve::CellOp::kLstm;
    pa.index = pool_->index[d].i();
    pa.bucket = B;
    pa.gates = g_.f();
    pa.bias = w_->bias.f();
    pa.state = pool_->state.f();
    pa.hidden = H;
    return cu::LaunchCellPointwise(pa, ctx_->stream);
  }

 private:
  Context* ctx_ = nullptr;
  const LstmWeights* w_ = nullptr;
  StatePool* pool_ = nullptr;
  DeviceBuffer x_, g_;
};

// ------------------------------------------------------------------------------------------
// Unfused: gather by two copies, 4 per-gate GEMMs, 10 element-wise kernels.

class UnfusedStep {
 public:
  Status Init(Context& ctx, const LstmWeights& w, StatePool& pool) {
    ctx_ = &ctx;
    w_ = &w;
    pool_ = &pool;
    RETURN_IF_ERROR(x_.Alloc(int64_t{pool.B} * 2 * w.H * sizeof(float)));
    RETURN_IF_ERROR(g_.Alloc(int64_t{pool.B} * 4 * w.H * sizeof(float)));  // 4 gates of [B, H]
    return OkStatus();
  }
  Status Enqueue(int d) const {
    const int H = w_->H, B = pool_->B;
    const int64_t n = int64_t{B} * H;
    const int32_t* idx = pool_->index[d].i();
    float* state = pool_->state.f();
    cudaStream_t s = ctx_->stream;
    GatherHKernel<<<Blocks(n), 256, 0, s>>>(state, idx + gpu::kXSrc * B, B, H, x_.f(), 0);
    CS_CUDA(cudaGetLastError());
    GatherHKernel<<<Blocks(n), 256, 0, s>>>(state, idx + gpu::kHSrc * B, B, H, x_.f(), H);
    CS_CUDA(cudaGetLastError());
    const float one = 1.f, zero = 0.f;
    for (int gate = 0; gate < 4; ++gate) {
      const float* wg = w_->w.f() + int64_t{gate} * H * 2 * H;  // rows [gate*H, gate*H + H)
      CS_CUBLAS(cublasGemmEx(ctx_->blas, CUBLAS_OP_T, CUBLAS_OP_N, H, B, 2 * H, &one, wg, CUDA_R_32F, 2 * H,
                             x_.get(), CUDA_R_32F, 2 * H, &zero, Gate(gate), CUDA_R_32F, H, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
    }
    for (int gate = 0; gate < 4; ++gate) {
      AddBiasKernel<<<Blocks(n), 256, 0, s>>>(Gate(gate), w_->bias.f() + int64_t{gate} * H, n, H);
      CS_CUDA(cudaGetLastError());
    }
    for (int gate : {0, 1, 3}) {  // i, f, o
      SigmoidKernel<<<Blocks(n), 256, 0, s>>>(Gate(gate), n);
      CS_CUDA(cudaGetLastError());
    }
    TanhKernel<<<Blocks(n), 256, 0, s>>>(Gate(2), n);
    CS_CUDA(cudaGetLastError());
    CellUpdateKernel<<<Blocks(n), 256, 0, s>>>(Gate(0), Gate(1), Gate(2), state, idx + gpu::kHSrc * B,
                                              idx + gpu::kOut * B, B, H);
    CS_CUDA(cudaGetLastError());
    HiddenUpdateKernel<<<Blocks(n), 256, 0, s>>>(Gate(3), state, idx + gpu::kOut * B, B, H);
    CS_CUDA(cudaGetLastError());
    return OkStatus();
  }

 private:
  float* Gate(int gate) const { return g_.f() + int64_t{gate} * pool_->B * w_->H; }
  Context* ctx_ = nullptr;
  const LstmWeights* w_ = nullptr;
  StatePool* pool_ = nullptr;
  DeviceBuffer x_, g_;
};

// Two graphs, one per ping-pong direction, of any step type.
template <typename Step>
Status CaptureBoth(Context& ctx, const Step& step, Graph graphs[2]) {
  for (int d = 0; d < 2; ++d) RETURN_IF_ERROR(graphs[d].Capture(ctx.stream, [&] { return step.Enqueue(d); }));
  return OkStatus();
}

// ------------------------------------------------------------------------------------------
// cuDNN: one LSTM layer (per H) and its input/output buffers for a sequence (per B, T).

#ifdef CELLSERVE_HAVE_CUDNN
class TensorDesc {
 public:
  TensorDesc() = default;
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  ~TensorDesc() {
    if (d_ != nullptr) cudnnDestroyTensorDescriptor(d_);
  }
  Status Create() {
    CS_CUDNN(cudnnCreateTensorDescriptor(&d_));
    return OkStatus();
  }
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

class CudnnLstm {
 public:
  CudnnLstm() = default;
  CudnnLstm(const CudnnLstm&) = delete;
  CudnnLstm& operator=(const CudnnLstm&) = delete;
  ~CudnnLstm() {
    if (rnn_ != nullptr) cudnnDestroyRNNDescriptor(rnn_);
    if (dropout_ != nullptr) cudnnDestroyDropoutDescriptor(dropout_);
  }

  Status Init(Context& ctx, const LstmWeights& w, bool fma) {
    H_ = w.H;
    CS_CUDNN(cudnnCreateDropoutDescriptor(&dropout_));
    CS_CUDNN(cudnnSetDropoutDescriptor(dropout_, ctx.dnn, 0.f, nullptr, 0, 0));
    CS_CUDNN(cudnnCreateRNNDescriptor(&rnn_));
    CS_CUDNN(cudnnSetRNNDescriptor_v8(rnn_, CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, CUDNN_RNN_DOUBLE_BIAS,
                                      CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT,
                                      fma ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH, H_, H_, H_, 1, dropout_,
                                      CUDNN_RNN_PADDED_IO_DISABLED));
    CS_CUDNN(cudnnGetRNNWeightSpaceSize(ctx.dnn, rnn_, &weight_bytes_));
    RETURN_IF_ERROR(weights_.Alloc(weight_bytes_));
    return LoadWeights(ctx, w);
  }

  cudnnRNNDescriptor_t rnn() const { return rnn_; }
  const void* weights() const { return weights_.get(); }
  size_t weight_bytes() const { return weight_bytes_; }

 private:
  // Copies ours into cuDNN's per-gate matrices: linLayerID 0-3 = input weights of i, f, g, o
  // (our columns [0, H)), 4-7 = recurrent (columns [H, 2H)); input bias = ours, recurrent bias 0.
  Status LoadWeights(Context& ctx, const LstmWeights& w) {
    TensorDesc m_desc, b_desc;
    RETURN_IF_ERROR(m_desc.Create());
    RETURN_IF_ERROR(b_desc.Create());
    for (int id = 0; id < 8; ++id) RETURN_IF_ERROR(LoadOne(ctx, w, id, m_desc.get(), b_desc.get()));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    return OkStatus();
  }

  Status LoadOne(Context& ctx, const LstmWeights& w, int id, cudnnTensorDescriptor_t m_desc,
                 cudnnTensorDescriptor_t b_desc) {
    void* m_addr = nullptr;
    void* b_addr = nullptr;
    CS_CUDNN(cudnnGetRNNWeightParams(ctx.dnn, rnn_, 0, weight_bytes_, weights_.get(), id, m_desc, &m_addr, b_desc,
                                     &b_addr));
    if (m_addr == nullptr || b_addr == nullptr) return Internal("cudnnGetRNNWeightParams: null matrix or bias");
    RETURN_IF_ERROR(ExpectMatrix(m_desc, H_, H_));
    RETURN_IF_ERROR(ExpectCount(b_desc, H_, "bias"));
    const int gate = id % 4;
    const float* src = w.w.f() + int64_t{gate} * H_ * 2 * H_ + (id < 4 ? 0 : H_);
    CS_CUDA(cudaMemcpy2DAsync(m_addr, H_ * sizeof(float), src, 2 * H_ * sizeof(float), H_ * sizeof(float), H_,
                              cudaMemcpyDeviceToDevice, ctx.stream));
    if (id < 4) {
      CS_CUDA(cudaMemcpyAsync(b_addr, w.bias.f() + int64_t{gate} * H_, H_ * sizeof(float),
                              cudaMemcpyDeviceToDevice, ctx.stream));
    } else {
      CS_CUDA(cudaMemsetAsync(b_addr, 0, H_ * sizeof(float), ctx.stream));
    }
    return OkStatus();
  }

  struct NdShape {
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    int nb = 0, dims[8] = {}, strides[8] = {};
    int64_t count() const {
      int64_t n = 1;
      for (int i = 0; i < nb; ++i) n *= dims[i];
      return n;
    }
    std::string ToString() const {
      std::string s = "dims";
      for (int i = 0; i < nb; ++i) s += (i ? "," : " ") + std::to_string(dims[i]);
      s += " strides";
      for (int i = 0; i < nb; ++i) s += (i ? "," : " ") + std::to_string(strides[i]);
      return s;
    }
  };
  static StatusOr<NdShape> GetShape(cudnnTensorDescriptor_t d) {
    NdShape s;
    CS_CUDNN(cudnnGetTensorNdDescriptor(d, 8, &s.type, &s.nb, s.dims, s.strides));
    if (s.type != CUDNN_DATA_FLOAT) return Internal("cuDNN weight params: not fp32");
    return s;
  }
  static Status ExpectCount(cudnnTensorDescriptor_t d, int64_t n, const char* what) {
    ASSIGN_OR_RETURN(NdShape s, GetShape(d));
    if (s.count() == n) return OkStatus();
    return Internal(std::string("cuDNN weight ") + what + ": " + s.ToString() + ", expected " + std::to_string(n) +
                    " elements");
  }
  // A row-major [rows, cols] block, as PyTorch also assumes: dims {1, rows, cols}, strides {.., cols, 1}.
  // Another layout with the right element count is copied the same way with a warning: the
  // correctness check then tells whether the copy was right.
  static Status ExpectMatrix(cudnnTensorDescriptor_t d, int rows, int cols) {
    ASSIGN_OR_RETURN(NdShape s, GetShape(d));
    if (s.nb == 3 && s.dims[0] == 1 && s.dims[1] == rows && s.dims[2] == cols && s.strides[2] == 1 &&
        s.strides[1] == cols)
      return OkStatus();
    if (s.count() != int64_t{rows} * cols)
      return Internal("cuDNN weight matrix: " + s.ToString() + ", expected [" + std::to_string(rows) + ", " +
                      std::to_string(cols) + "]");
    std::fprintf(stderr, "bench_cuda_lstm: warning: cuDNN weight matrix %s, assumed row-major [%d, %d]\n",
                 s.ToString().c_str(), rows, cols);
    return OkStatus();
  }

  int H_ = 0;
  cudnnDropoutDescriptor_t dropout_ = nullptr;
  cudnnRNNDescriptor_t rnn_ = nullptr;
  DeviceBuffer weights_;
  size_t weight_bytes_ = 0;
};

class CudnnSeq {
 public:
  CudnnSeq() = default;
  CudnnSeq(const CudnnSeq&) = delete;
  CudnnSeq& operator=(const CudnnSeq&) = delete;
  ~CudnnSeq() {
    if (x_desc_ != nullptr) cudnnDestroyRNNDataDescriptor(x_desc_);
    if (y_desc_ != nullptr) cudnnDestroyRNNDataDescriptor(y_desc_);
    if (h_desc_ != nullptr) cudnnDestroyTensorDescriptor(h_desc_);
  }

  Status Init(Context& ctx, const CudnnLstm& lstm, int H, int B, int T) {
    ctx_ = &ctx;
    lstm_ = &lstm;
    std::vector<int> lengths(B, T);
    float fill = 0.f;
    CS_CUDNN(cudnnCreateRNNDataDescriptor(&x_desc_));
    CS_CUDNN(cudnnSetRNNDataDescriptor(x_desc_, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, H,
                                       lengths.data(), &fill));
    CS_CUDNN(cudnnCreateRNNDataDescriptor(&y_desc_));
    CS_CUDNN(cudnnSetRNNDataDescriptor(y_desc_, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, H,
                                       lengths.data(), &fill));
    CS_CUDNN(cudnnCreateTensorDescriptor(&h_desc_));
    int dims[3] = {1, B, H}, strides[3] = {B * H, H, 1};
    CS_CUDNN(cudnnSetTensorNdDescriptor(h_desc_, CUDNN_DATA_FLOAT, 3, dims, strides));
    size_t reserve = 0;
    CS_CUDNN(cudnnGetRNNTempSpaceSizes(ctx.dnn, lstm.rnn(), CUDNN_FWD_MODE_INFERENCE, x_desc_, &work_bytes_,
                                       &reserve));
    RETURN_IF_ERROR(work_.Alloc(work_bytes_));
    const int64_t seq = int64_t{T} * B * H, state = int64_t{B} * H;
    for (DeviceBuffer* b : {&x_, &y_}) RETURN_IF_ERROR(b->Alloc(seq * sizeof(float)));
    for (DeviceBuffer* b : {&hx_, &cx_, &hy_, &cy_}) RETURN_IF_ERROR(b->Alloc(state * sizeof(float)));
    RETURN_IF_ERROR(lengths_.Alloc(B * sizeof(int32_t)));
    CS_CUDA(cudaMemcpyAsync(lengths_.get(), lengths.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, ctx.stream));
    RETURN_IF_ERROR(FillUniform(x_.f(), seq, 501u + T, -1.f, 1.f, ctx.stream));
    RETURN_IF_ERROR(FillUniform(hx_.f(), state, 502u, -1.f, 1.f, ctx.stream));
    RETURN_IF_ERROR(FillUniform(cx_.f(), state, 503u, -1.f, 1.f, ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    return OkStatus();
  }

  Status Run() const {
    CS_CUDNN(cudnnRNNForward(ctx_->dnn, lstm_->rnn(), CUDNN_FWD_MODE_INFERENCE, lengths_.i(), x_desc_, x_.get(),
                             y_desc_, y_.get(), h_desc_, hx_.get(), hy_.get(), h_desc_, cx_.get(), cy_.get(),
                             lstm_->weight_bytes(), lstm_->weights(), work_bytes_, work_.get(), 0, nullptr));
    return OkStatus();
  }

  float* x() const { return x_.f(); }
  float* hx() const { return hx_.f(); }
  float* cx() const { return cx_.f(); }
  const float* hy() const { return hy_.f(); }
  const float* cy() const { return cy_.f(); }

 private:
  Context* ctx_ = nullptr;
  const CudnnLstm* lstm_ = nullptr;
  cudnnRNNDataDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnTensorDescriptor_t h_desc_ = nullptr;
  DeviceBuffer x_, y_, hx_, cx_, hy_, cy_, lengths_, work_;
  size_t work_bytes_ = 0;
};
#endif  // CELLSERVE_HAVE_CUDNN

// ------------------------------------------------------------------------------------------
// One (H, B) row: timings and the correctness check.

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

struct Row {
  int H = 0, B = 0;
  double ours_graph = kNan, ours_nograph = kNan, ours_cold = kNan, unfused = kNan;
  double cudnn_1 = kNan, cudnn_24 = kNan, ours_24 = kNan, unfused_24 = kNan;
  std::string cudnn_error;  // why the cuDNN columns are missing, if they are
};

#ifdef CELLSERVE_HAVE_CUDNN
// cuDNN problems are not fatal: its columns become n/a and the reason is printed and kept.
void Warn(const std::string& where, const Status& st) {
  std::fprintf(stderr, "bench_cuda_lstm: %s: %s\n", where.c_str(), st.ToString().c_str());
}
#endif

struct Check {
  int H = 0, B = 0;
  double vs_cudnn = kNan, vs_unfused = kNan, vs_host = kNan;  // max |diff| of h and c; NaN: not compared
  bool pass = false;
};

// Max |diff| over h and c of the out slots of direction 0 between two pools (host copies).
double MaxDiffOut(const StatePool& pool, const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  const int64_t row = 2 * int64_t{pool.H};
  for (int r = 0; r < pool.B; ++r) {
    int64_t base = int64_t{pool.host_index[0][gpu::kOut * pool.B + r]} * row;
    for (int64_t j = 0; j < row; ++j) m = std::max(m, std::fabs(double{a[base + j]} - double{b[base + j]}));
  }
  return m;
}

Status Download(Context& ctx, const DeviceBuffer& buf, int64_t floats, std::vector<float>* out) {
  out->resize(floats);
  CS_CUDA(cudaMemcpyAsync(out->data(), buf.get(), floats * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  return OkStatus();
}

// Double-precision LSTM step for the first rows of direction 0; max |diff| against `after`.
double HostReferenceDiff(const LstmWeights& w, const StatePool& pool, const std::vector<float>& before,
                         const std::vector<float>& after) {
  const int H = w.H, B = pool.B;
  const int64_t row = 2 * int64_t{H};
  double m = 0;
  std::vector<double> xh(2 * H), gates(4 * H);
  for (int r = 0; r < std::min(B, kHostRefRows); ++r) {
    const int32_t* idx = pool.host_index[0].data();
    const float* xs = before.data() + idx[gpu::kXSrc * B + r] * row;
    const float* hs = before.data() + idx[gpu::kHSrc * B + r] * row;
    for (int j = 0; j < H; ++j) {
      xh[j] = xs[j];
      xh[H + j] = hs[j];
    }
    for (int g = 0; g < 4 * H; ++g) {
      const float* wr = w.host_w.data() + int64_t{g} * 2 * H;
      double acc = w.host_bias[g];
      for (int k = 0; k < 2 * H; ++k) acc += double{wr[k]} * xh[k];
      gates[g] = acc;
    }
    const float* out = after.data() + idx[gpu::kOut * B + r] * row;
    for (int j = 0; j < H; ++j) {
      auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
      double c = sig(gates[H + j]) * hs[H + j] + sig(gates[j]) * std::tanh(gates[2 * H + j]);
      double h = sig(gates[3 * H + j]) * std::tanh(c);
      m = std::max({m, std::fabs(h - out[j]), std::fabs(c - out[H + j])});
    }
  }
  return m;
}

#ifdef CELLSERVE_HAVE_CUDNN
// cuDNN's step from the same inputs as ours' direction 0: x, hx, cx gathered on the host.
StatusOr<double> CudnnDiff(Context& ctx, const StatePool& pool, const CudnnSeq& seq1, const std::vector<float>& before,
                           const std::vector<float>& ours_after) {
  const int H = pool.H, B = pool.B;
  const int64_t row = 2 * int64_t{H};
  const int32_t* idx = pool.host_index[0].data();
  std::vector<float> x(int64_t{B} * H), hx(x.size()), cx(x.size());
  for (int r = 0; r < B; ++r) {
    const float* xs = before.data() + idx[gpu::kXSrc * B + r] * row;
    const float* hs = before.data() + idx[gpu::kHSrc * B + r] * row;
    std::copy(xs, xs + H, x.begin() + int64_t{r} * H);
    std::copy(hs, hs + H, hx.begin() + int64_t{r} * H);
    std::copy(hs + H, hs + 2 * H, cx.begin() + int64_t{r} * H);
  }
  const size_t bytes = x.size() * sizeof(float);
  CS_CUDA(cudaMemcpyAsync(seq1.x(), x.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(seq1.hx(), hx.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(seq1.cx(), cx.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  RETURN_IF_ERROR(seq1.Run());
  std::vector<float> hy(x.size()), cy(x.size());
  CS_CUDA(cudaMemcpyAsync(hy.data(), seq1.hy(), bytes, cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(cy.data(), seq1.cy(), bytes, cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  double m = 0;
  for (int r = 0; r < B; ++r) {
    const float* out = ours_after.data() + idx[gpu::kOut * B + r] * row;
    for (int j = 0; j < H; ++j) {
      m = std::max({m, std::fabs(double{out[j]} - hy[int64_t{r} * H + j]),
                    std::fabs(double{out[H + j]} - cy[int64_t{r} * H + j])});
    }
  }
  return m;
}
#endif

// Everything the row needs, built once per (H, B).
struct Shape {
  StatePool pool;
  OursStep ours;
  UnfusedStep unfused;
  Graph ours_graph[2], unfused_graph[2];
#ifdef CELLSERVE_HAVE_CUDNN
  bool dnn_ok = false;  // seq1 and seq24 are usable
  std::string dnn_error;
  CudnnSeq seq1, seq24;
#endif
};

StatusOr<Check> RunCheck(Context& ctx, const LstmWeights& w, Shape& s) {
  Check c;
  c.H = w.H;
  c.B = s.pool.B;
  const int64_t floats = s.pool.floats();
  std::vector<float> before, ours_after, unfused_after;
  RETURN_IF_ERROR(s.pool.Randomize(ctx, 4242u));
  RETURN_IF_ERROR(Download(ctx, s.pool.state, floats, &before));
  RETURN_IF_ERROR(s.ours.Enqueue(0));
  RETURN_IF_ERROR(Download(ctx, s.pool.state, floats, &ours_after));
  CS_CUDA(cudaMemcpyAsync(s.pool.state.get(), before.data(), floats * sizeof(float), cudaMemcpyHostToDevice,
                          ctx.stream));
  RETURN_IF_ERROR(s.unfused.Enqueue(0));
  RETURN_IF_ERROR(Download(ctx, s.pool.state, floats, &unfused_after));
  c.vs_unfused = MaxDiffOut(s.pool, ours_after, unfused_after);
  c.vs_host = HostReferenceDiff(w, s.pool, before, ours_after);
  c.pass = c.vs_unfused <= kTolerance && c.vs_host <= kTolerance;
#ifdef CELLSERVE_HAVE_CUDNN
  if (s.dnn_ok) {
    StatusOr<double> d = CudnnDiff(ctx, s.pool, s.seq1, before, ours_after);
    if (d.ok()) {
      c.vs_cudnn = *d;
      c.pass = c.pass && c.vs_cudnn <= kTolerance;
    } else {
      Warn("cuDNN check H=" + std::to_string(c.H) + " batch=" + std::to_string(c.B), d.status());
    }
  }
#endif
  return c;
}

Status BuildShape(Context& ctx, const LstmWeights& w, int B, Shape& s) {
  RETURN_IF_ERROR(s.pool.Init(ctx, w.H, B));
  RETURN_IF_ERROR(s.ours.Init(ctx, w, s.pool));
  RETURN_IF_ERROR(s.unfused.Init(ctx, w, s.pool));
  // A plain step first, so that cuBLAS has picked and loaded its kernels before capture.
  RETURN_IF_ERROR(s.ours.Enqueue(0));
  RETURN_IF_ERROR(s.unfused.Enqueue(0));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  RETURN_IF_ERROR(CaptureBoth(ctx, s.ours, s.ours_graph));
  RETURN_IF_ERROR(CaptureBoth(ctx, s.unfused, s.unfused_graph));
  return OkStatus();
}

#ifdef CELLSERVE_HAVE_CUDNN
// The cuDNN side of a shape; `dnn` is null when the layer's setup failed (reason in `error`).
void BuildCudnn(Context& ctx, const CudnnLstm* dnn, const std::string& error, const LstmWeights& w, Shape& s) {
  if (dnn == nullptr) {
    s.dnn_error = error;
    return;
  }
  Status st = s.seq1.Init(ctx, *dnn, w.H, s.pool.B, 1);
  if (st.ok()) st = s.seq24.Init(ctx, *dnn, w.H, s.pool.B, kSeqSteps);
  s.dnn_ok = st.ok();
  if (!st.ok()) {
    s.dnn_error = st.ToString();
    Warn("cuDNN setup H=" + std::to_string(w.H) + " batch=" + std::to_string(s.pool.B), st);
  }
}

void TimeCudnn(Context& ctx, const Options& opt, Shape& s, Row& row) {
  row.cudnn_error = s.dnn_error;
  if (!s.dnn_ok) return;
  StatusOr<double> one = MedianUsPerStep(ctx, opt, 1, [&] { return s.seq1.Run(); });
  StatusOr<double> seq = one.ok() ? MedianUsPerStep(ctx, opt, kSeqSteps, [&] { return s.seq24.Run(); })
                                  : StatusOr<double>(one.status());
  if (one.ok()) row.cudnn_1 = *one;
  if (seq.ok()) row.cudnn_24 = *seq;
  if (!seq.ok()) {
    row.cudnn_error = seq.status().ToString();
    Warn("cuDNN timing H=" + std::to_string(row.H) + " batch=" + std::to_string(row.B), seq.status());
  }
}
#endif

// `n` graph launches alternating the two directions, starting where the last call left off.
Enqueue PingPong(Context& ctx, Graph graphs[2], int n, int* parity) {
  return [&ctx, graphs, n, parity] {
    for (int i = 0; i < n; ++i) {
      RETURN_IF_ERROR(graphs[*parity].Launch(ctx.stream));
      *parity ^= 1;
    }
    return OkStatus();
  };
}

StatusOr<Row> TimeShape(Context& ctx, const Options& opt, const LstmWeights& w, Shape& s) {
  Row row;
  row.H = w.H;
  row.B = s.pool.B;
  int parity = 0;
  ASSIGN_OR_RETURN(row.ours_graph, MedianUsPerStep(ctx, opt, 1, PingPong(ctx, s.ours_graph, 1, &parity)));
  ASSIGN_OR_RETURN(row.ours_nograph, MedianUsPerStep(ctx, opt, 1, [&] {
                     Status st = s.ours.Enqueue(parity);
                     parity ^= 1;
                     return st;
                   }));
  ASSIGN_OR_RETURN(row.ours_cold, MedianColdUs(ctx, opt, PingPong(ctx, s.ours_graph, 1, &parity)));
  ASSIGN_OR_RETURN(row.unfused, MedianUsPerStep(ctx, opt, 1, PingPong(ctx, s.unfused_graph, 1, &parity)));
  ASSIGN_OR_RETURN(row.ours_24,
                   MedianUsPerStep(ctx, opt, kSeqSteps, PingPong(ctx, s.ours_graph, kSeqSteps, &parity)));
  ASSIGN_OR_RETURN(row.unfused_24,
                   MedianUsPerStep(ctx, opt, kSeqSteps, PingPong(ctx, s.unfused_graph, kSeqSteps, &parity)));
#ifdef CELLSERVE_HAVE_CUDNN
  TimeCudnn(ctx, opt, s, row);
#else
  row.cudnn_error = "built without cuDNN";
#endif
  return row;
}

// ------------------------------------------------------------------------------------------
// Output

std::string Num(double v, int decimals = 2) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string JsonNum(double v, int decimals = 4) { return std::isnan(v) ? "null" : Num(v, decimals); }

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out + "\"";
}

void PrintHeader() {
  std::printf("%5s %6s %11s %13s %13s %10s %12s %14s %13s %12s %9s %12s\n", "H", "batch", "ours_graph",
              "ours_nograph", "ours_cold_l2", "unfused", "cudnn_1step", "cudnn_24/step", "ours_24/step",
              "unf_24/step", "dnn/ours", "dnn24/ours24");
}

void PrintRow(const Row& r) {
  std::printf("%5d %6d %11s %13s %13s %10s %12s %14s %13s %12s %9s %12s\n", r.H, r.B, Num(r.ours_graph).c_str(),
              Num(r.ours_nograph).c_str(), Num(r.ours_cold).c_str(), Num(r.unfused).c_str(),
              Num(r.cudnn_1).c_str(), Num(r.cudnn_24).c_str(), Num(r.ours_24).c_str(), Num(r.unfused_24).c_str(),
              Num(r.cudnn_1 / r.ours_graph).c_str(), Num(r.cudnn_24 / r.ours_24).c_str());
  std::fflush(stdout);
}

struct DeviceInfo {
  std::string name;
  int sm_count = 0, major = 0, minor = 0, l2_bytes = 0;
  size_t memory_bytes = 0;
};

struct Report {
  DeviceInfo device;
  double bandwidth_gbs = kNan;
  std::vector<std::pair<int, double>> floor_us;  // per H: weights bytes / bandwidth
  std::vector<Row> rows;
  std::vector<Check> checks;
};

Status WriteJson(const std::string& path, const Options& opt, const Report& rep) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return InvalidArgument("cannot write " + path + ": " + std::strerror(errno));
  std::fprintf(f, "{\n  \"device\": {\"name\": %s, \"sm_count\": %d, \"memory_bytes\": %zu, \"l2_bytes\": %d, "
               "\"compute_capability\": \"%d.%d\"},\n", JsonString(rep.device.name).c_str(), rep.device.sm_count,
               rep.device.memory_bytes, rep.device.l2_bytes, rep.device.major, rep.device.minor);
#ifdef CELLSERVE_HAVE_CUDNN
  std::fprintf(f, "  \"cudnn\": {\"version\": %zu, \"math\": \"%s\"},\n", cudnnGetVersion(),
               opt.cudnn_fma ? "CUDNN_FMA_MATH" : "CUDNN_DEFAULT_MATH");
#else
  std::fprintf(f, "  \"cudnn\": null,\n");
#endif
  int cuda_rt = 0;
  cudaRuntimeGetVersion(&cuda_rt);
  std::fprintf(f, "  \"cuda_runtime\": %d,\n  \"quick\": %s,\n  \"repeats\": %d,\n  \"steps_per_repeat\": %d,\n",
               cuda_rt, opt.quick ? "true" : "false", kRepeats, opt.iters());
  std::fprintf(f, "  \"seq_steps\": %d,\n  \"ours_seq_mode\": \"%d graph launches back to back, one per step\",\n",
               kSeqSteps, kSeqSteps);
  std::fprintf(f, "  \"bandwidth_gbs\": %s,\n  \"weights_floor_us\": {", JsonNum(rep.bandwidth_gbs).c_str());
  for (size_t i = 0; i < rep.floor_us.size(); ++i)
    std::fprintf(f, "%s\"%d\": %s", i ? ", " : "", rep.floor_us[i].first, JsonNum(rep.floor_us[i].second).c_str());
  std::fprintf(f, "},\n  \"rows\": [\n");
  for (size_t i = 0; i < rep.rows.size(); ++i) {
    const Row& r = rep.rows[i];
    std::fprintf(f,
                 "    {\"H\": %d, \"batch\": %d, \"ours_graph_us\": %s, \"ours_nograph_us\": %s, "
                 "\"ours_cold_l2_us\": %s, \"unfused_us\": %s, \"cudnn_1step_us\": %s, "
                 "\"cudnn_24step_per_step_us\": %s, \"ours_24step_per_step_us\": %s, "
                 "\"unfused_24step_per_step_us\": %s, \"cudnn_error\": %s}%s\n",
                 r.H, r.B, JsonNum(r.ours_graph).c_str(), JsonNum(r.ours_nograph).c_str(), JsonNum(r.ours_cold).c_str(),
                 JsonNum(r.unfused).c_str(), JsonNum(r.cudnn_1).c_str(), JsonNum(r.cudnn_24).c_str(),
                 JsonNum(r.ours_24).c_str(), JsonNum(r.unfused_24).c_str(),
                 r.cudnn_error.empty() ? "null" : JsonString(r.cudnn_error).c_str(), i + 1 < rep.rows.size() ? "," : "");
  }
  std::fprintf(f, "  ],\n  \"tolerance\": %g,\n  \"checks\": [\n", kTolerance);
  for (size_t i = 0; i < rep.checks.size(); ++i) {
    const Check& c = rep.checks[i];
    std::fprintf(f,
                 "    {\"H\": %d, \"batch\": %d, \"max_diff_vs_cudnn\": %s, \"max_diff_vs_unfused\": %s, "
                 "\"max_diff_vs_host\": %s, \"pass\": %s}%s\n",
                 c.H, c.B, JsonNum(c.vs_cudnn, 9).c_str(), JsonNum(c.vs_unfused, 9).c_str(),
                 JsonNum(c.vs_host, 9).c_str(), c.pass ? "true" : "false",
                 i + 1 < rep.checks.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  if (std::fclose(f) != 0) return Internal("error writing " + path);
  return OkStatus();
}

// ------------------------------------------------------------------------------------------
// Main flow

StatusOr<DeviceInfo> QueryDevice() {
  int dev = 0;
  CS_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CS_CUDA(cudaGetDeviceProperties(&p, dev));
  DeviceInfo d;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.major = p.major;
  d.minor = p.minor;
  d.l2_bytes = p.l2CacheSize;
  d.memory_bytes = p.totalGlobalMem;
  return d;
}

Status RunHidden(Context& ctx, const Options& opt, int H, Report& rep) {
  LstmWeights w;
  RETURN_IF_ERROR(w.Init(ctx, H));
#ifdef CELLSERVE_HAVE_CUDNN
  CudnnLstm dnn;
  Status dnn_status = dnn.Init(ctx, w, opt.cudnn_fma);
  if (!dnn_status.ok()) Warn("cuDNN setup H=" + std::to_string(H) + " (cuDNN columns n/a)", dnn_status);
#endif
  rep.floor_us.push_back({H, w.bytes() / (rep.bandwidth_gbs * 1e9) * 1e6});
  for (int B : opt.batches) {
    Shape s;
    std::string where = "H=" + std::to_string(H) + " batch=" + std::to_string(B);
    RETURN_IF_ERROR(BuildShape(ctx, w, B, s).WithContext(where));
#ifdef CELLSERVE_HAVE_CUDNN
    BuildCudnn(ctx, dnn_status.ok() ? &dnn : nullptr, dnn_status.ToString(), w, s);
#endif
    StatusOr<Row> row = TimeShape(ctx, opt, w, s);
    if (!row.ok()) return row.status().WithContext(where);
    PrintRow(*row);
    rep.rows.push_back(*row);
    StatusOr<Check> check = RunCheck(ctx, w, s);
    if (!check.ok()) return check.status().WithContext(where + " check");
    rep.checks.push_back(*check);
  }
  return OkStatus();
}

void PrintSummary(const Report& rep) {
  std::printf("\nbandwidth (device-to-device cudaMemcpy, 1 GiB, read + write): %.1f GB/s\n", rep.bandwidth_gbs);
  for (const auto& [H, floor_us] : rep.floor_us) {
    const Row* b1 = nullptr;
    for (const Row& r : rep.rows)
      if (r.H == H && r.B == 1) b1 = &r;
    std::printf("H=%d: weights %.1f MiB, read once = %.2f us", H, 4.0 * H * 2 * H * 4 / (1 << 20), floor_us);
    if (b1 != nullptr)
      std::printf("; ours at batch 1: %.2fx that (graph, L2 warm), %.2fx (cold L2)", b1->ours_graph / floor_us,
                  b1->ours_cold / floor_us);
    std::printf("\n");
  }
  bool all = true;
  std::printf("\ncorrectness (one step from the same pool; max |diff| of h and c, tolerance %g):\n", kTolerance);
  for (const Check& c : rep.checks) {
    std::printf("  H=%d batch=%d: vs cuDNN %s, vs unfused %s, vs host (first %d rows) %s  %s\n", c.H, c.B,
                Num(c.vs_cudnn, 7).c_str(), Num(c.vs_unfused, 7).c_str(), std::min(c.B, kHostRefRows),
                Num(c.vs_host, 7).c_str(), c.pass ? "PASS" : "FAIL");
    all = all && c.pass;
  }
  std::printf("check: %s%s\n", all ? "PASS" : "FAIL",
#ifdef CELLSERVE_HAVE_CUDNN
              ""
#else
              " (built without cuDNN: compared with the unfused step and the host reference only)"
#endif
  );
}

int Run(const Options& opt) {
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "bench_cuda_lstm: %s\n", st.ToString().c_str());
    return 1;
  };
  Report rep;
  StatusOr<DeviceInfo> dev = QueryDevice();
  if (!dev.ok()) return fail(dev.status());
  rep.device = *dev;
  std::printf("GPU: %s (compute %d.%d), %d SMs, %.1f GiB, L2 %.1f MiB\n", rep.device.name.c_str(), rep.device.major,
              rep.device.minor, rep.device.sm_count, rep.device.memory_bytes / double(1 << 30),
              rep.device.l2_bytes / double(1 << 20));
#ifdef CELLSERVE_HAVE_CUDNN
  std::printf("cuDNN %zu, %s; cuBLAS fp32 (CUBLAS_COMPUTE_32F, no TF32)\n", cudnnGetVersion(),
              opt.cudnn_fma ? "CUDNN_FMA_MATH (strict fp32)" : "CUDNN_DEFAULT_MATH (TF32 allowed)");
#else
  std::printf("built WITHOUT cuDNN (cudnn.h or libcudnn not found at configure time): cuDNN columns are n/a\n");
#endif
  std::printf("%s: %d warm-up + %d timed steps per repetition, median of %d; us per step\n",
              opt.quick ? "quick" : "full", opt.warmup(), opt.iters(), kRepeats);
  std::printf("%d-step columns: ours and unfused = %d graph launches back to back (one per step), cuDNN = one "
              "cudnnRNNForward on a %d-step sequence\n", kSeqSteps, kSeqSteps, kSeqSteps);
  Context ctx;
  Status st = ctx.Init();
  if (!st.ok()) return fail(st);
  StatusOr<double> bw = MeasureBandwidthGBs(ctx);
  if (!bw.ok()) return fail(bw.status());
  rep.bandwidth_gbs = *bw;
  std::printf("\n");
  PrintHeader();
  for (int H : opt.hidden) {
    Status run = RunHidden(ctx, opt, H, rep);
    if (!run.ok()) return fail(run);
  }
  PrintSummary(rep);
  if (!opt.json.empty()) {
    Status written = WriteJson(opt.json, opt, rep);
    if (!written.ok()) return fail(written);
    std::printf("wrote %s\n", opt.json.c_str());
  }
  for (const Check& c : rep.checks)
    if (!c.pass) return 1;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  int parsed = ParseArgs(argc, argv, &opt);
  if (parsed >= 0) return parsed;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::fprintf(stderr, "no CUDA device: %s\n", err != cudaSuccess ? cudaGetErrorName(err) : "cudaErrorNoDevice");
    return 2;
  }
  return Run(opt);
}
