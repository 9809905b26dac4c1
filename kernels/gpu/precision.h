// The GPU backend's GEMM precision and its command-line spelling (--gpu-precision), host-only so
// that the device factory checks the flag without loading the CUDA plugin. Pure functions.
#pragma once

#include <string>

#include "runtime/status.h"

namespace cellserve::gpu {

// fp32 (default), or fp16/bf16 weights and inputs with fp32 accumulation.
enum class Precision { kF32, kF16, kBF16 };

// "fp32", "fp16", "bf16"; anything else is INVALID_ARGUMENT naming the three.
StatusOr<Precision> ParsePrecision(const std::string& name);
const char* PrecisionName(Precision p);

}  // namespace cellserve::gpu
