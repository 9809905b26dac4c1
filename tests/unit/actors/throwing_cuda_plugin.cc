// A CUDA backend plugin of this build whose one device throws std::bad_alloc from Submit, as a
// device out of memory might: the worker actor that calls it ends (CAF ends an actor whose handler
// throws). actor_failure_test points CELLSERVE_CUDA_PLUGIN at it to see what a LocalCluster does
// when a worker ends on its own.
#include <memory>
#include <new>
#include <string>

#include "cellserve_plugin_abi_tag.h"  // generated (cmake/plugin_abi_tag.cmake)
#include "kernels/cuda/cuda_plugin.h"

namespace {

class ThrowingDevice final : public cellserve::Device {
 public:
  std::string name() const override { return "throwing:0"; }
  cellserve::Status RegisterModel(const cellserve::Model&, int32_t) override { return cellserve::OkStatus(); }
  void Submit(uint64_t, cellserve::CellBatch, cellserve::CompletionCallback) override { throw std::bad_alloc(); }
  int64_t pending() const override { return 0; }
  cellserve::DeviceStats stats() const override { return {}; }
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const char* cellserve_cuda_abi_tag() {
  return cellserve::cuda::kPluginAbiTag;
}

extern "C" __attribute__((visibility("default"))) void cellserve_cuda_create_devices(
    const cellserve::cuda::PluginRequest&, cellserve::cuda::PluginResult* result) {
  result->devices.push_back(std::make_unique<ThrowingDevice>());
  result->status = cellserve::OkStatus();
}
