// The CUDA backend as a plugin: libcellserve_cuda.so, which actors/device_factory.cc loads with
// dlopen only when `--backend cuda` is asked for. So the cellserve binary links no CUDA library:
// it starts on machines without CUDA (CPU-only nodes), starts fast, and the metrics server's
// threads are not broken by cuBLAS's 94 KB of static thread-local storage (linked in, it made
// every small-stack thread creation fail, and with it prometheus-cpp's HTTP server).
// The plugin and the binary are built together from one tree (same compiler, same types). A
// stale plugin whose boundary types differ is refused by its ABI tag: both sides include the
// generated cellserve_plugin_abi_tag.h (cmake/plugin_abi_tag.cmake), a hash of the headers whose
// types cross this boundary (runtime/*.h, this file, kernels/gpu/precision.h) and of the
// compiler, so no one has to remember to bump a number. (Changes to .cc files or to compile
// flags do not change the tag.) No CUDA headers here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/model.h"
#include "runtime/status.h"

namespace cellserve::cuda {

struct PluginRequest {
  int count = 1;                      // GPUs; 0 = all
  std::string precision = "fp32";     // fp32, fp16, bf16
  bool use_graphs = true;
  std::vector<const Model*> models;   // loaded onto the GPUs once (CreateCudaDevices)
  std::vector<int> completion_cpus;   // where the GPUs' completion threads run; empty: anywhere
  int64_t fold_max_bytes = 0;         // the largest folded token-input table per cell type; 0: none
};

struct PluginResult {
  Status status;
  std::vector<std::unique_ptr<Device>> devices;
};

// The plugin's exported entry points (C names, looked up with dlsym).
using PluginAbiTagFn = const char* (*)();  // kPluginAbiTag, as the plugin was built
using PluginCreateDevicesFn = void (*)(const PluginRequest&, PluginResult*);
constexpr char kPluginAbiTagSymbol[] = "cellserve_cuda_abi_tag";
constexpr char kPluginCreateDevicesSymbol[] = "cellserve_cuda_create_devices";

}  // namespace cellserve::cuda
