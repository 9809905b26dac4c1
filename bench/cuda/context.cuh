// The device context every part of bench_cuda_lstm shares: one non-blocking stream, a cuBLAS
// handle with a capture-safe workspace (fp32, no TF32), the cuDNN handle (with
// CELLSERVE_HAVE_CUDNN), and a buffer of twice the L2 size for FlushL2 (the cold-L2 timings).
// Contract: Init once before use; every bench launch goes on `stream`, and buffers are allocated
// on GPU `device` (the current one) with kernels/cuda/device_buffer.h. Not copyable.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef CELLSERVE_HAVE_CUDNN
#include <cudnn.h>
#endif

#include <cstdint>
#include <functional>

#include "kernels/cuda/device_buffer.h"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

using FloatBuffer = cuda::DeviceBuffer<float>;
using IndexBuffer = cuda::DeviceBuffer<int32_t>;
using ByteBuffer = cuda::DeviceBuffer<uint8_t>;

// Work enqueued on Context::stream (a step, a graph launch, a cuDNN call).
using Enqueue = std::function<Status()>;

struct Context {
  int device = 0;  // the current device at Init
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  ByteBuffer blas_workspace;
  cuda::DeviceBuffer<float4> flush;  // 2x L2, read before each cold-L2 sample
  FloatBuffer sink;
#ifdef CELLSERVE_HAVE_CUDNN
  cudnnHandle_t dnn = nullptr;
#endif
  int l2_bytes = 0;

  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  Status Init();
  // Enqueues a read of the whole flush buffer, evicting whatever was in L2.
  Status FlushL2();
};

}  // namespace cellserve::lstm_bench
