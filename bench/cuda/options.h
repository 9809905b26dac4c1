// bench_cuda_lstm's options and fixed parameters: what the command line sets (parsed in
// cuda_lstm_bench.cu) and the constants every part of the bench shares. Plain data, no CUDA.
// Contract: Warmup/Iters give the step counts of a quick or full run; --help prints them from here.
#pragma once

#include <string>
#include <vector>

namespace cellserve::lstm_bench {

constexpr int kRepeats = 7;          // timed repetitions; the median is reported
constexpr int kSeqSteps = 24;        // the sequence comparison
constexpr double kTolerance = 1e-4;  // correctness check, max |difference| of h and c
constexpr int kHostRefRows = 4;      // rows checked against the double-precision host reference

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

}  // namespace cellserve::lstm_bench
