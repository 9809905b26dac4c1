// cuDNN errors for bench_cuda_lstm, the cuDNN twin of kernels/cuda/cuda_check.h (which has no
// cuDNN helper): CudnnStatus / CS_CUDNN turn a cudnnStatus_t into a Status naming the call, and
// Warn prints a non-fatal cuDNN problem (its columns become n/a and the run goes on).
// Contract: only with CELLSERVE_HAVE_CUDNN; this header is empty without it.
#pragma once

#ifdef CELLSERVE_HAVE_CUDNN
#include <cudnn.h>

#include <cstdio>
#include <string>

#include "runtime/status.h"

namespace cellserve::lstm_bench {

inline Status CudnnStatus(cudnnStatus_t s, const char* call) {
  if (s == CUDNN_STATUS_SUCCESS) return OkStatus();
  return Internal(std::string(call) + ": " + cudnnGetErrorString(s));
}

// cuDNN problems are not fatal: its columns become n/a and the reason is printed and kept.
inline void Warn(const std::string& where, const Status& st) {
  std::fprintf(stderr, "bench_cuda_lstm: %s: %s\n", where.c_str(), st.ToString().c_str());
}

}  // namespace cellserve::lstm_bench

#define CS_CUDNN(call) RETURN_IF_ERROR(::cellserve::lstm_bench::CudnnStatus((call), #call))
#endif  // CELLSERVE_HAVE_CUDNN
