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
//
// Files (bench/cuda/): this one parses the options, prints --help and checks for a device; run.cu
// is the main flow; context (stream, cuBLAS, cuDNN handles, L2 flush), timing (events, medians,
// bandwidth), graph (CUDA graph, ping-pong), lstm_problem (weights, state pool), ours_step,
// unfused_step, cudnn_lstm (with CELLSERVE_HAVE_CUDNN), shape (one (H, batch): build and time),
// check (correctness), output (table, summary, JSON), device_util (fill and flush kernels).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/cuda/options.h"
#include "bench/cuda/run.cuh"

namespace cellserve::lstm_bench {
namespace {

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

}  // namespace
}  // namespace cellserve::lstm_bench

int main(int argc, char** argv) {
  cellserve::lstm_bench::Options opt;
  int parsed = cellserve::lstm_bench::ParseArgs(argc, argv, &opt);
  if (parsed >= 0) return parsed;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::fprintf(stderr, "no CUDA device: %s\n", err != cudaSuccess ? cudaGetErrorName(err) : "cudaErrorNoDevice");
    return 2;
  }
  return cellserve::lstm_bench::Run(opt);
}
