#include "actors/device_factory.h"

#include <cstdio>
#include <thread>

#include "kernels/cpu/cpu_device.h"
#include "kernels/sim/sim_device.h"
#if CELLSERVE_HAVE_CUDA
#include "kernels/cuda/cuda_device.h"
#endif

namespace cellserve {

namespace {

StatusOr<std::vector<std::unique_ptr<Device>>> MakeCpuDevices(const DeviceOptions& options) {
  int count = options.devices;
  if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
  // The devices share one copy of the packed weights (they share the machine's memory and cache).
  auto weight_cache = std::make_shared<cpu::PackedWeightCache>();
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < count; ++i) {
    cpu::CpuBackendOptions backend;
    backend.blas_threads = options.blas_threads;
    backend.weight_cache = weight_cache;
    ASSIGN_OR_RETURN(auto device, cpu::CpuDevice::Create("cpu:" + std::to_string(i), backend));
    devices.push_back(std::move(device));
  }
  return devices;
}

StatusOr<std::vector<std::unique_ptr<Device>>> MakeSimDevices(const DeviceOptions& options) {
  if (options.sim_profile.empty()) return InvalidArgument("the sim backend needs a profile (--sim-profile FILE)");
  if (options.devices < 1) return InvalidArgument("the sim backend needs --devices N (N >= 1)");
  ASSIGN_OR_RETURN(sim::SimProfile profile, sim::SimProfile::Load(options.sim_profile));
  auto timer = std::make_shared<sim::SimTimer>();  // one thread for all sim devices
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < options.devices; ++i) {
    ASSIGN_OR_RETURN(auto device, sim::SimDevice::Create("sim:" + std::to_string(i), profile, timer));
    devices.push_back(std::move(device));
  }
  return devices;
}

StatusOr<std::vector<std::unique_ptr<Device>>> MakeCudaDevices(
    const DeviceOptions& options, const std::vector<std::shared_ptr<const Model>>& models) {
#if CELLSERVE_HAVE_CUDA
  ASSIGN_OR_RETURN(cuda::Precision precision, cuda::ParsePrecision(options.gpu_precision));
  cuda::CudaDeviceOptions base;
  base.precision = precision;
  base.use_graphs = options.cuda_graphs;
  std::vector<const Model*> raw;
  for (const auto& m : models) raw.push_back(m.get());
  ASSIGN_OR_RETURN(auto gpus, cuda::CreateCudaDevices(options.devices, base, raw));
  std::vector<std::unique_ptr<Device>> devices;
  for (auto& g : gpus) devices.push_back(std::move(g));
  return devices;
#else
  (void)options;
  (void)models;
  return Unavailable("this cellserve was built without CUDA (nvcc was not found when it was configured)");
#endif
}

}  // namespace

bool HaveCudaBackend() { return CELLSERVE_HAVE_CUDA != 0; }

StatusOr<std::vector<std::unique_ptr<Device>>> MakeDevices(const DeviceOptions& options,
                                                           const std::vector<std::shared_ptr<const Model>>& models) {
  if (options.devices < 0) return InvalidArgument("devices must be >= 1, or 0 for all");
  if (options.blas_threads < 0) return InvalidArgument("blas_threads must be >= 0");
  if (options.backend == "cpu") return MakeCpuDevices(options);
  if (options.backend == "sim") return MakeSimDevices(options);
  if (options.backend != "cuda") return InvalidArgument("unknown backend '" + options.backend + "' (cpu, sim or cuda)");
  auto gpus = MakeCudaDevices(options, models);
  if (gpus.ok() || gpus.status().code() != StatusCode::kUnavailable) return gpus;
  if (!options.cpu_fallback)
    return Unavailable("backend cuda: no usable GPU: " + gpus.status().message() +
                       ". Run with --backend cpu, or add --cpu-fallback to use the CPU when no GPU is usable");
  std::fprintf(stderr, "cellserve: no usable GPU (%s); --cpu-fallback: serving on the CPU\n",
               gpus.status().message().c_str());
  DeviceOptions cpu = options;
  cpu.backend = "cpu";
  return MakeCpuDevices(cpu);
}

}  // namespace cellserve
