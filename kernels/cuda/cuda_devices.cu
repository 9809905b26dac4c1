#include "kernels/cuda/cuda_devices.h"

#include <cuda_runtime.h>

namespace cellserve::cuda {

namespace {

Status FromCuda(cudaError_t err, const char* call) {
  if (err == cudaSuccess) return OkStatus();
  return Unavailable(std::string(call) + ": " + cudaGetErrorName(err) + " (" +
                     cudaGetErrorString(err) + ")");
}

}  // namespace

StatusOr<std::vector<CudaDeviceInfo>> ListCudaDevices() {
  int count = 0;
  RETURN_IF_ERROR(FromCuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount"));
  std::vector<CudaDeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    RETURN_IF_ERROR(FromCuda(cudaGetDeviceProperties(&prop, i), "cudaGetDeviceProperties"));
    devices.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  if (devices.empty()) return Unavailable("no CUDA device found");
  return devices;
}

}  // namespace cellserve::cuda
