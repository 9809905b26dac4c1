#include "kernels/gpu/precision.h"

namespace cellserve::gpu {

StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "fp32") return Precision::kF32;
  if (name == "fp16") return Precision::kF16;
  if (name == "bf16") return Precision::kBF16;
  return InvalidArgument("unknown GPU precision '" + name + "' (fp32, fp16 or bf16)");
}

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kF16: return "fp16";
    case Precision::kBF16: return "bf16";
    case Precision::kF32: break;
  }
  return "fp32";
}

}  // namespace cellserve::gpu
