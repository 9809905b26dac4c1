// The fake CUDA runtime's own hooks (tests/fakecuda/README.md), for the fake cuBLAS and the host
// versions of our kernels: Enqueue puts work on a stream exactly where a CUDA call would (into
// the graph when the stream is capturing). Thread-safe.
#pragma once

#include <functional>

#include "cuda_runtime.h"

namespace fakecuda {

// Runs `op` on `stream` after everything enqueued on it before (nullptr: the legacy stream, here
// at once on the calling thread). While the stream captures, `op` joins the graph instead.
cudaError_t Enqueue(cudaStream_t stream, std::function<void()> op);

// fp16 / bf16 bits from a float (round to nearest even) and back.
unsigned short FloatToBf16(float f);
float Bf16ToFloat(unsigned short b);

}  // namespace fakecuda
