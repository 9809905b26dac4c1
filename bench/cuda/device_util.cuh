// The bench's own small kernels that are not part of a step: the grid size of its grid-stride
// loops, a deterministic uniform fill, and a read of a whole buffer (the L2 flush).
// Contract: launches go on the caller's stream and are asynchronous; the returned Status is the
// launch's (cudaGetLastError). The same seed always gives the same values.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "runtime/status.h"

namespace cellserve::lstm_bench {

// Blocks of `threads` for a grid-stride loop over n elements (at most 65535).
inline int Blocks(int64_t n, int threads = 256) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
}

// p[0, n) = uniform in [lo, hi), a hash of (seed, index).
Status FillUniform(float* p, int64_t n, uint32_t seed, float lo, float hi, cudaStream_t s);

// Reads the n float4s of p; writes *sink only for an impossible sum (so the reads are kept).
Status ReadAll(const float4* p, int64_t n, float* sink, cudaStream_t s);

}  // namespace cellserve::lstm_bench
