// A stand-in for a libcellserve_cuda.so from another build: both entry points, but an ABI tag that
// is not this build's. device_factory_test points CELLSERVE_CUDA_PLUGIN at it and expects the
// loader to refuse it by the tag, before it ever calls the entry point.
#include <cstdlib>

extern "C" __attribute__((visibility("default"))) const char* cellserve_cuda_abi_tag() { return "stale-build"; }

extern "C" __attribute__((visibility("default"))) void cellserve_cuda_create_devices(const void*, void*) {
  std::abort();  // never reached: a plugin with another tag is not called
}
