// bench_cuda_lstm's results: one timed row and one correctness check per (H, batch), the device,
// and the whole report that output.cuh prints and writes as JSON. Plain data, no CUDA.
// Contract: NaN (kNan) means "not measured / not compared"; it prints as n/a and as JSON null.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace cellserve::lstm_bench {

constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

// Median microseconds per step of every column of one (H, B).
struct Row {
  int H = 0, B = 0;
  double ours_graph = kNan, ours_nograph = kNan, ours_cold = kNan, unfused = kNan;
  double cudnn_1 = kNan, cudnn_24 = kNan, ours_24 = kNan, unfused_24 = kNan;
  std::string cudnn_error;  // why the cuDNN columns are missing, if they are
};

struct Check {
  int H = 0, B = 0;
  double vs_cudnn = kNan, vs_unfused = kNan, vs_host = kNan;  // max |diff| of h and c; NaN: not compared
  bool pass = false;
};

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

}  // namespace cellserve::lstm_bench
