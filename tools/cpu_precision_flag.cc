#include "tools/cpu_precision_flag.h"

#include <string>

#include "kernels/cpu/amx_gemm.h"

namespace cellserve::tools {

void AddCpuPrecisionFlag(Flags& flags) {
  flags.Add("cpu-precision", "fp32",
            "cpu: fp32, or bf16: every GEMM on AMX tiles (Intel Xeon 4th generation or later) with its inputs "
            "rounded to bf16 and fp32 accumulation: about 2x faster alone and several times on large batches, but "
            "answers differ from fp32's (more on long inputs: compare on your data first); they still do not "
            "depend on batch-mates");
}

StatusOr<bool> CpuBf16Compute(const Flags& flags) {
  const std::string v = flags.Get("cpu-precision");
  if (v == "fp32") return false;
  if (v != "bf16") return InvalidArgument("--cpu-precision must be fp32 or bf16, not '" + v + "'");
  RETURN_IF_ERROR(cpu::AmxBf16Available());  // before the model loads
  return true;
}

}  // namespace cellserve::tools
