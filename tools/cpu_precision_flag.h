// --cpu-precision, which serve, node, bench and run share: fp32 (the default: our batch-invariant
// fp32 GEMM, kernels/cpu/packed_gemm.h) or bf16 (AMX tiles: every product's inputs rounded to
// bf16, fp32 accumulation; kernels/cpu/amx_gemm.h). One definition of the flag and its checks.
// Pure but for asking the kernel for AMX once; no threads.
#pragma once

#include "runtime/status.h"
#include "tools/flags.h"

namespace cellserve::tools {

// Adds --cpu-precision (default fp32).
void AddCpuPrecisionFlag(Flags& flags);

// True for bf16, false for fp32. INVALID_ARGUMENT for another value; UNAVAILABLE, saying why and
// what to do, for bf16 where this CPU or kernel cannot run AMX-BF16.
StatusOr<bool> CpuBf16Compute(const Flags& flags);

}  // namespace cellserve::tools
