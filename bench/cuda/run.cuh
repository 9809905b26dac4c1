// The whole measurement of bench_cuda_lstm once the options are parsed and a CUDA device is
// known to exist: banner, bandwidth, then per H (weights, cuDNN layer) and per batch (build, time,
// print the row, check), the summary and the optional JSON.
// Contract: returns the exit status: 0 done and every check passed; 1 an error (printed to stderr
// as "bench_cuda_lstm: <status>") or a failed check.
#pragma once

#include "bench/cuda/options.h"

namespace cellserve::lstm_bench {

int Run(const Options& opt);

}  // namespace cellserve::lstm_bench
