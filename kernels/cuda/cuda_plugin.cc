// The plugin's entry points (cuda_plugin.h): CUDA devices for actors/device_factory.cc.
#include "kernels/cuda/cuda_plugin.h"

#include "cellserve_plugin_abi_tag.h"  // generated (cmake/plugin_abi_tag.cmake)
#include "kernels/cuda/cuda_device.h"

extern "C" __attribute__((visibility("default"))) const char* cellserve_cuda_abi_tag() {
  return cellserve::cuda::kPluginAbiTag;
}

extern "C" __attribute__((visibility("default"))) void cellserve_cuda_create_devices(
    const cellserve::cuda::PluginRequest& request, cellserve::cuda::PluginResult* result) {
  using namespace cellserve;
  auto precision = cuda::ParsePrecision(request.precision);
  if (!precision.ok()) {
    result->status = precision.status();
    return;
  }
  cuda::CudaDeviceOptions base;
  base.precision = *precision;
  base.use_graphs = request.use_graphs;
  base.completion_cpus = request.completion_cpus;
  base.fold_max_bytes = request.fold_max_bytes;
  auto gpus = cuda::CreateCudaDevices(request.count, base, request.models);
  if (!gpus.ok()) {
    result->status = gpus.status();
    return;
  }
  for (auto& g : *gpus) result->devices.push_back(std::move(g));
  result->status = OkStatus();
}
