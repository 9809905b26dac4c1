// CUDA device discovery. Every CUDA call's error becomes a Status naming the call and the error
// (UNAVAILABLE when no driver or device is usable). Thread-safe (the CUDA runtime is).
#pragma once

#include <string>
#include <vector>

#include "runtime/status.h"

namespace cellserve::cuda {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  size_t memory_bytes = 0;
};

// The usable CUDA devices, or UNAVAILABLE ("cudaGetDeviceCount: cudaErrorNoDevice ...").
StatusOr<std::vector<CudaDeviceInfo>> ListCudaDevices();

}  // namespace cellserve::cuda
