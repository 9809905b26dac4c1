// What bench_cuda_lstm prints and writes: the banner, the table (header and one row per
// (H, batch), flushed as it goes), the summary (bandwidth, weight-read floor, checks) and the JSON
// file that bench/run_gpu_bench.py reads.
// Contract: the format is fixed (run_gpu_bench.py and docs depend on it): NaN prints as "n/a" and
// as JSON null. Printing goes to stdout; WriteJson returns an error if the file cannot be written.
#pragma once

#include <string>

#include "bench/cuda/options.h"
#include "bench/cuda/results.h"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

// The device, the libraries' settings and the run's step counts (before any measurement).
void PrintBanner(const DeviceInfo& device, const Options& opt);
void PrintHeader();
void PrintRow(const Row& r);
// Bandwidth, floors and every check, ending with the "check: PASS|FAIL" line.
void PrintSummary(const Report& rep);
Status WriteJson(const std::string& path, const Options& opt, const Report& rep);

}  // namespace cellserve::lstm_bench
