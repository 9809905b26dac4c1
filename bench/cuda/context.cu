// The shared device context (context.cuh).
#include "bench/cuda/context.cuh"

#include <algorithm>
#include <cstddef>

#include "bench/cuda/cudnn_check.cuh"
#include "bench/cuda/device_util.cuh"
#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {

Context::~Context() {
#ifdef CELLSERVE_HAVE_CUDNN
  if (dnn != nullptr) cudnnDestroy(dnn);
#endif
  if (blas != nullptr) cublasDestroy(blas);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

Status Context::Init() {
  CS_CUDA(cudaGetDevice(&device));
  CS_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CS_CUBLAS(cublasCreate(&blas));
  CS_CUBLAS(cublasSetStream(blas, stream));
  CS_CUBLAS(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));  // with COMPUTE_32F: no TF32
  // A workspace set before capture makes cuBLAS capture-safe (no allocation inside the graph).
  constexpr size_t kWorkspace = size_t{32} << 20;
  ASSIGN_OR_RETURN(blas_workspace, ByteBuffer::Allocate(device, kWorkspace));
  CS_CUBLAS(cublasSetWorkspace(blas, blas_workspace.get(), kWorkspace));
  CS_CUDA(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
  const size_t flush_bytes = std::max<size_t>(size_t{2} * l2_bytes, size_t{64} << 20);
  ASSIGN_OR_RETURN(flush, cuda::DeviceBuffer<float4>::Allocate(device, flush_bytes / sizeof(float4)));
  ASSIGN_OR_RETURN(sink, FloatBuffer::Allocate(device, 1));
  CS_CUDA(cudaMemsetAsync(flush.get(), 0, flush.bytes(), stream));
#ifdef CELLSERVE_HAVE_CUDNN
  CS_CUDNN(cudnnCreate(&dnn));
  CS_CUDNN(cudnnSetStream(dnn, stream));
#endif
  return OkStatus();
}

Status Context::FlushL2() { return ReadAll(flush.get(), static_cast<int64_t>(flush.count()), sink.get(), stream); }

}  // namespace cellserve::lstm_bench
