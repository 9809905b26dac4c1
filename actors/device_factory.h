// The devices a LocalCluster runs on, made from its options: CPU devices (kernels/cpu), sim
// devices (kernels/sim) or GPUs (kernels/cuda, when this build has CUDA: loaded from the plugin
// libcellserve_cuda.so on first use, kernels/cuda/cuda_plugin.h). One function so that serve,
// node and bench choose backends the same way.
// "cuda" with no usable GPU (or a build without CUDA) is UNAVAILABLE with the reason and what to
// do, unless cpu_fallback is set: then it says so on stderr and makes CPU devices.
// devices == 0 means "all": every GPU for cuda, one CPU device per core this process may use for
// cpu (its affinity: a container's cpuset, not the host's core count).
// Errors: INVALID_ARGUMENT for bad options (unknown backend, sim without a profile), UNAVAILABLE
// as above. Thread-compatible; the devices are owned by the caller.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/model.h"
#include "runtime/status.h"
#include "runtime/token_fold.h"

namespace cellserve {

struct DeviceOptions {
  std::string backend = "cpu";      // cpu, sim or cuda
  int devices = 1;                  // 0 = all
  // cpu and cuda: the largest folded token-input table per cell type (runtime/token_fold.h); 0: none.
  int64_t fold_max_bytes = kDefaultFoldMaxBytes;
  // cpu: --cpu-precision bf16, every GEMM on AMX tiles (kernels/cpu/amx_gemm.h); UNAVAILABLE
  // where AMX-BF16 is not.
  bool cpu_bf16 = false;
  std::string sim_profile;          // sim: the profile (required)
  std::string gpu_precision = "fp32";  // cuda: fp32, fp16 or bf16 (fp32 accumulation)
  bool cuda_graphs = true;          // cuda: one CUDA graph per (cell type, batch bucket)
  bool cpu_fallback = false;        // cuda: no usable GPU -> CPU devices instead of an error
  // Where the device threads run (runtime/cpu_plan.h): cpu, device i's thread on device_cpus[i];
  // sim, the one timer thread, and cuda, every GPU's completion thread, on device_cpus (one CPU,
  // as planned). Empty: wherever the OS puts them.
  std::vector<int> device_cpus;
};

// The CPUs a plan should keep for device threads: cpu, one per device (0 = all: one per core,
// which leaves none to spare); sim, one (a timer for all devices); cuda, one, shared by the GPUs'
// completion threads (they sleep on CUDA events).
int DeviceThreads(const DeviceOptions& options);

// True when this build has the CUDA backend (nvcc was found at configure time).
bool HaveCudaBackend();

// INVALID_ARGUMENT when a GPU precision other than fp32 is asked of a backend other than cuda
// (tools check it before loading models; MakeDevices checks it again).
Status CheckGpuPrecisionApplies(const std::string& backend, const std::string& gpu_precision);

// INVALID_ARGUMENT when bf16 CPU compute is asked of devices that are not CPUs: a backend other
// than cpu, except cuda with cpu_fallback (whose CPU devices use it). Checked like the GPU's.
Status CheckCpuPrecisionApplies(const std::string& backend, bool cpu_fallback, bool cpu_bf16);

// Makes the devices; `models` are the ones they will serve (GPUs load their weights once).
StatusOr<std::vector<std::unique_ptr<Device>>> MakeDevices(const DeviceOptions& options,
                                                           const std::vector<std::shared_ptr<const Model>>& models);

}  // namespace cellserve
