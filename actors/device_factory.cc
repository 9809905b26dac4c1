#include "actors/device_factory.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/cell_weights.h"
#include "kernels/cpu/cpu_device.h"
#include "kernels/cuda/cuda_plugin.h"
#include "kernels/gpu/precision.h"
#include "kernels/sim/sim_device.h"
#include "monitoring/log.h"
#include "runtime/this_thread.h"

#include "cellserve_plugin_abi_tag.h"  // generated at build time (cmake/plugin_abi_tag.cmake)

namespace cellserve {

namespace {

int CpuDeviceCount(const DeviceOptions& options) {
  return options.devices == 0 ? UsableCpuCount() : options.devices;
}

// Says on stderr which cell types get folded token inputs (runtime/token_fold.h) and the memory
// they take: an operator sees where the memory went. Once per backend, model name and cap in a
// process (bench starts a cluster per run). `where` says whose memory holds the tables.
void ReportFolding(const char* backend, const char* where, int64_t fold_max_bytes,
                   const std::vector<std::shared_ptr<const Model>>& models) {
  static std::mutex mu;
  static std::set<std::tuple<std::string, std::string, int64_t>> reported;
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& model : models) {
    if (!reported.emplace(backend, model->spec().name, fold_max_bytes).second) continue;
    std::string folded, kept;
    for (const CellType& type : model->cell_types()) {
      const int64_t bytes = FoldedTableBytes(type);
      if (bytes == 0) continue;
      std::string& list = WillFold(type, fold_max_bytes) ? folded : kept;
      list += (list.empty() ? "" : ", ") + type.name + " " + std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB";
    }
    if (!folded.empty())
      monitoring::LogLine("cellserve: %s: %s: token inputs folded (%s; %s)\n", backend, model->spec().name.c_str(),
                          folded.c_str(), where);
    if (!kept.empty())
      monitoring::LogLine("cellserve: %s: %s: token inputs not folded, over --fold-max-mib %lld (%s)\n", backend,
                          model->spec().name.c_str(), static_cast<long long>(fold_max_bytes >> 20), kept.c_str());
  }
}

StatusOr<std::vector<std::unique_ptr<Device>>> MakeCpuDevices(const DeviceOptions& options,
                                                              const std::vector<std::shared_ptr<const Model>>& models) {
  const int count = CpuDeviceCount(options);
  if (!options.device_cpus.empty() && options.device_cpus.size() < static_cast<size_t>(count))
    return InvalidArgument(std::to_string(count) + " CPU devices, but CPUs to pin only " +
                           std::to_string(options.device_cpus.size()) + " of them to");
  if (options.cpu_bf16) {
    RETURN_IF_ERROR(cpu::AmxBf16Available());
    static std::once_flag said;  // once per process, like ReportFolding (bench starts a cluster per run)
    std::call_once(said, [] {
      monitoring::LogLine("cellserve: cpu: bf16 compute on AMX tiles (--cpu-precision bf16): GEMM inputs rounded to "
                          "bf16, so answers differ from fp32's (docs/OPERATIONS.md)\n");
    });
  }
  ReportFolding("cpu", "shared by the devices", options.fold_max_bytes, models);
  // The devices share one copy of the packed weights (they share the machine's memory and cache).
  auto weight_cache = std::make_shared<cpu::PackedWeightCache>();
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < count; ++i) {
    cpu::CpuBackendOptions backend;
    backend.weight_cache = weight_cache;
    backend.cell_weights.fold_max_bytes = options.fold_max_bytes;
    backend.cell_weights.bf16_compute = options.cpu_bf16;
    const int cpu = options.device_cpus.empty() ? -1 : options.device_cpus[static_cast<size_t>(i)];
    ASSIGN_OR_RETURN(auto device, cpu::CpuDevice::Create("cpu:" + std::to_string(i), backend, cpu));
    devices.push_back(std::move(device));
  }
  return devices;
}

StatusOr<std::vector<std::unique_ptr<Device>>> MakeSimDevices(const DeviceOptions& options) {
  if (options.sim_profile.empty()) return InvalidArgument("the sim backend needs a profile (--sim-profile FILE)");
  if (options.devices < 1) return InvalidArgument("the sim backend needs --devices N (N >= 1)");
  ASSIGN_OR_RETURN(sim::SimProfile profile, sim::SimProfile::Load(options.sim_profile));
  auto timer = std::make_shared<sim::SimTimer>();  // one thread for all sim devices
  if (!options.device_cpus.empty()) RETURN_IF_ERROR(timer->Pin(options.device_cpus.front()));
  std::vector<std::unique_ptr<Device>> devices;
  for (int i = 0; i < options.devices; ++i) {
    ASSIGN_OR_RETURN(auto device, sim::SimDevice::Create("sim:" + std::to_string(i), profile, timer));
    devices.push_back(std::move(device));
  }
  return devices;
}

// Where libcellserve_cuda.so may be: $CELLSERVE_CUDA_PLUGIN, next to the running binary, in
// ../lib/cellserve/ beside it (an installed image), and where this build tree put it.
std::vector<std::string> PluginCandidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("CELLSERVE_CUDA_PLUGIN"); env && *env) return {env};
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    paths.push_back(dir + "/libcellserve_cuda.so");
    paths.push_back(dir + "/../lib/cellserve/libcellserve_cuda.so");
  }
#ifdef CELLSERVE_CUDA_PLUGIN_BUILD_PATH
  paths.push_back(CELLSERVE_CUDA_PLUGIN_BUILD_PATH);
#endif
  return paths;
}

// Loads the plugin once per process (it stays loaded: devices run its code).
StatusOr<cuda::PluginCreateDevicesFn> LoadCudaPlugin() {
  static std::mutex mu;
  static cuda::PluginCreateDevicesFn create = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (create) return create;
  std::string tried;
  for (const std::string& path : PluginCandidates()) {
    if (access(path.c_str(), F_OK) != 0) {
      tried += (tried.empty() ? "" : ", ") + path;
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) return Unavailable("cannot load the CUDA backend " + path + ": " + dlerror());
    auto tag = reinterpret_cast<cuda::PluginAbiTagFn>(dlsym(handle, cuda::kPluginAbiTagSymbol));
    auto entry = reinterpret_cast<cuda::PluginCreateDevicesFn>(dlsym(handle, cuda::kPluginCreateDevicesSymbol));
    std::string why;
    if (!tag || !entry)
      why = std::string("it lacks the symbol ") + (!tag ? cuda::kPluginAbiTagSymbol : cuda::kPluginCreateDevicesSymbol);
    else if (std::strcmp(tag(), cuda::kPluginAbiTag) != 0)
      why = std::string("its ABI tag is ") + tag() + ", this binary's " + cuda::kPluginAbiTag;
    if (!why.empty()) {
      dlclose(handle);
      return Unavailable("the CUDA backend " + path + " is not this build's (" + why + "): rebuild it with the binary");
    }
    create = entry;
    return create;
  }
  return Unavailable(HaveCudaBackend() ? "the CUDA backend plugin libcellserve_cuda.so is missing (looked at " +
                                             tried + "; set CELLSERVE_CUDA_PLUGIN)"
                                       : "this cellserve was built without CUDA (nvcc was not found when it was "
                                         "configured)");
}

StatusOr<std::vector<std::unique_ptr<Device>>> MakeCudaDevices(
    const DeviceOptions& options, const std::vector<std::shared_ptr<const Model>>& models) {
  RETURN_IF_ERROR(gpu::ParsePrecision(options.gpu_precision).status());  // before loading the plugin
  ASSIGN_OR_RETURN(cuda::PluginCreateDevicesFn create, LoadCudaPlugin());
  cuda::PluginRequest request;
  request.count = options.devices;
  request.precision = options.gpu_precision;
  request.use_graphs = options.cuda_graphs;
  request.completion_cpus = options.device_cpus;
  request.fold_max_bytes = options.fold_max_bytes;
  for (const auto& m : models) request.models.push_back(m.get());
  cuda::PluginResult result;
  create(request, &result);
  RETURN_IF_ERROR(result.status);
  ReportFolding("cuda", "in each GPU's memory", options.fold_max_bytes, models);
  return std::move(result.devices);
}

}  // namespace

bool HaveCudaBackend() { return CELLSERVE_HAVE_CUDA != 0; }

int DeviceThreads(const DeviceOptions& options) {
  if (options.backend == "cpu") return CpuDeviceCount(options);
  if (options.backend == "sim") return 1;
  return options.backend == "cuda" ? 1 : 0;
}

Status CheckGpuPrecisionApplies(const std::string& backend, const std::string& gpu_precision) {
  if (backend == "cuda" || gpu_precision == "fp32") return OkStatus();  // it was silently ignored before
  return InvalidArgument("--gpu-precision " + gpu_precision + " applies to --backend cuda only (this is --backend " +
                         backend + "; on the CPU see --cpu-precision)");
}

Status CheckCpuPrecisionApplies(const std::string& backend, bool cpu_fallback, bool cpu_bf16) {
  if (!cpu_bf16 || backend == "cpu" || (backend == "cuda" && cpu_fallback)) return OkStatus();
  return InvalidArgument("--cpu-precision bf16 applies to --backend cpu only (or cuda's --cpu-fallback devices; this "
                         "is --backend " + backend + (backend == "cuda" ? " without --cpu-fallback" : "") +
                         "; on GPUs see --gpu-precision)");
}

StatusOr<std::vector<std::unique_ptr<Device>>> MakeDevices(const DeviceOptions& options,
                                                           const std::vector<std::shared_ptr<const Model>>& models) {
  if (options.devices < 0) return InvalidArgument("devices must be >= 1, or 0 for all");
  if (options.fold_max_bytes < 0) return InvalidArgument("fold_max_bytes must be >= 0 (0: no folding)");
  for (int cpu : options.device_cpus)
    if (cpu < 0) return InvalidArgument("device_cpus: " + std::to_string(cpu) + " is not a CPU number");
  RETURN_IF_ERROR(CheckGpuPrecisionApplies(options.backend, options.gpu_precision));
  RETURN_IF_ERROR(CheckCpuPrecisionApplies(options.backend, options.cpu_fallback, options.cpu_bf16));
  if (options.backend == "cpu") return MakeCpuDevices(options, models);
  if (options.backend == "sim") return MakeSimDevices(options);
  if (options.backend != "cuda") return InvalidArgument("unknown backend '" + options.backend + "' (cpu, sim or cuda)");
  auto gpus = MakeCudaDevices(options, models);
  if (gpus.ok() && options.cpu_bf16)
    monitoring::LogLine("cellserve: --cpu-precision bf16 is for the --cpu-fallback's CPU devices; these are GPUs "
                        "(their precision: --gpu-precision)\n");
  if (gpus.ok() || gpus.status().code() != StatusCode::kUnavailable) return gpus;
  if (!options.cpu_fallback)
    return Unavailable("backend cuda: no usable GPU: " + gpus.status().message() +
                       ". Run with --backend cpu, or add --cpu-fallback to use the CPU when no GPU is usable");
  monitoring::LogLine("cellserve: no usable GPU (%s); --cpu-fallback: serving on the CPU\n",
                      gpus.status().message().c_str());
  DeviceOptions cpu = options;
  cpu.backend = "cpu";
  if (!cpu.device_cpus.empty() && cpu.device_cpus.size() < static_cast<size_t>(CpuDeviceCount(cpu))) {
    monitoring::LogLine("cellserve: --cpu-fallback: CPU devices not pinned (the plan kept one core for GPU threads)\n");
    cpu.device_cpus.clear();
  }
  return MakeCpuDevices(cpu, models);
}

}  // namespace cellserve
