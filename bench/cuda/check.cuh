// The correctness check of one (H, batch) of bench_cuda_lstm: one step of ours (direction 0) from
// a fresh random pool, compared with the unfused step from the same pool, with a double-precision
// host reference on its first kHostRefRows rows, and (with cuDNN) with cudnnRNNForward on the
// same x, h and c.
// Contract: call after BuildShape (and BuildCudnn); it overwrites the shape's pool. Check::pass is
// every compared max |diff| of h and c <= kTolerance (options.h); a failed cuDNN comparison is a
// warning and leaves vs_cudnn NaN; any other error is returned.
#pragma once

#include "bench/cuda/context.cuh"
#include "bench/cuda/lstm_problem.cuh"
#include "bench/cuda/results.h"
#include "bench/cuda/shape.cuh"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

StatusOr<Check> RunCheck(Context& ctx, const LstmWeights& w, Shape& s);

}  // namespace cellserve::lstm_bench
