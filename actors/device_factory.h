// The devices a LocalCluster runs on, made from its options: CPU devices (kernels/cpu), sim
// devices (kernels/sim) or GPUs (kernels/cuda, when this build has CUDA: loaded from the plugin
// libcellserve_cuda.so on first use, kernels/cuda/cuda_plugin.h). One function so that serve,
// node and bench choose backends the same way.
// "cuda" with no usable GPU (or a build without CUDA) is UNAVAILABLE with the reason and what to
// do, unless cpu_fallback is set: then it says so on stderr and makes CPU devices.
// devices == 0 means "all": every GPU for cuda, one CPU device per core for cpu.
// Errors: INVALID_ARGUMENT for bad options (unknown backend, sim without a profile), UNAVAILABLE
// as above. Thread-compatible; the devices are owned by the caller.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/model.h"
#include "runtime/status.h"

namespace cellserve {

struct DeviceOptions {
  std::string backend = "cpu";      // cpu, sim or cuda
  int devices = 1;                  // 0 = all
  int blas_threads = 1;             // cpu: OpenBLAS threads (process-wide)
  std::string sim_profile;          // sim: the profile (required)
  std::string gpu_precision = "fp32";  // cuda: fp32, fp16 or bf16 (fp32 accumulation)
  bool cuda_graphs = true;          // cuda: one CUDA graph per (cell type, batch bucket)
  bool cpu_fallback = false;        // cuda: no usable GPU -> CPU devices instead of an error
};

// True when this build has the CUDA backend (nvcc was found at configure time).
bool HaveCudaBackend();

// Makes the devices; `models` are the ones they will serve (GPUs load their weights once).
StatusOr<std::vector<std::unique_ptr<Device>>> MakeDevices(const DeviceOptions& options,
                                                           const std::vector<std::shared_ptr<const Model>>& models);

}  // namespace cellserve
