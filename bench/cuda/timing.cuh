// How bench_cuda_lstm times things: CUDA events around work on Context::stream, the median of
// repetitions, single cold-L2 samples, and the device-to-device copy bandwidth.
// Contract: the timing functions return (on success) with the stream synchronized; times are us
// per step (bandwidth GB/s), medians over kRepeats (options.h) unless said otherwise.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "bench/cuda/context.cuh"
#include "bench/cuda/options.h"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

// The median of v (the mean of the middle two for an even count). v must not be empty.
double Median(std::vector<double> v);

// A start and a stop event on one stream.
class EventPair {
 public:
  EventPair() = default;
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  ~EventPair();
  Status Init();
  Status Start(cudaStream_t s);
  Status Stop(cudaStream_t s);
  // After the stream is synchronized.
  StatusOr<double> ElapsedUs() const;

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// Median over kRepeats of (time of `iters` calls of `call`) / (iters * steps_per_call), in us.
StatusOr<double> MedianUsPerStep(Context& ctx, const Options& opt, int steps_per_call, const Enqueue& call);

// Median of single calls of `call`, each right after an L2 flush.
StatusOr<double> MedianColdUs(Context& ctx, const Options& opt, const Enqueue& call);

// Device-to-device copy of 1 GiB, median of 5; GB/s with read + write counted (2 GiB a copy).
StatusOr<double> MeasureBandwidthGBs(Context& ctx);

}  // namespace cellserve::lstm_bench
