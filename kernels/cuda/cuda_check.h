// Turning CUDA and cuBLAS errors into Status (DESIGN.md §7): every such call in kernels/cuda goes
// through one of these, so an error names the call and the library's error name
// ("cublasGemmEx: CUBLAS_STATUS_NOT_SUPPORTED"). NCCL's are converted beside their one use
// (cuda_weights.cu, NcclStatus), cuDNN's in the benchmark that calls it (bench/cuda/cudnn_check.cuh).
// Header-only; for CUDA code only (kernels/cuda, bench/cuda, tests/gpu): it pulls in the CUDA
// headers.
// Codes: a missing driver or device is UNAVAILABLE, out of memory RESOURCE_EXHAUSTED, anything
// else INTERNAL.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "runtime/status.h"

namespace cellserve::cuda {

// A failed call also clears the thread's pending error (cudaGetLastError), as the error is now this
// Status: otherwise it would stay pending (an allocation that ran out of memory, a refused capture)
// and a later check of cudaGetLastError, a library's or ours, would take it for its own.
inline Status CudaStatus(cudaError_t err, const char* call) {
  if (err == cudaSuccess) return OkStatus();
  (void)cudaGetLastError();
  std::string msg = std::string(call) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
  // The GPU cannot be used here (none, no driver, or held by another process in exclusive mode):
  // UNAVAILABLE, so that --cpu-fallback applies.
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInitializationError ||
      err == cudaErrorDevicesUnavailable)
    return Unavailable(std::move(msg));
  if (err == cudaErrorMemoryAllocation) return ResourceExhausted(std::move(msg));
  return Internal(std::move(msg));
}

inline const char* CublasErrorName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

inline Status CublasStatus(cublasStatus_t s, const char* call) {
  if (s == CUBLAS_STATUS_SUCCESS) return OkStatus();
  std::string msg = std::string(call) + ": " + CublasErrorName(s);
  if (s == CUBLAS_STATUS_ALLOC_FAILED) return ResourceExhausted(std::move(msg));
  return Internal(std::move(msg));
}

}  // namespace cellserve::cuda

// RETURN_IF_ERROR for a CUDA runtime / cuBLAS call; the call's text names it in the Status.
#define CS_CUDA(call) RETURN_IF_ERROR(::cellserve::cuda::CudaStatus((call), #call))
#define CS_CUBLAS(call) RETURN_IF_ERROR(::cellserve::cuda::CublasStatus((call), #call))
