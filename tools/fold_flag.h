// --fold-max-mib, which serve, node, bench and run share: how large a table of folded token
// inputs (runtime/token_fold.h) a cell type may get, on the CPU and the CUDA backends. One
// definition of the flag, its default and its check. Pure; no threads.
#pragma once

#include <cstdint>

#include "runtime/status.h"
#include "tools/flags.h"

namespace cellserve::tools {

// Adds --fold-max-mib (default kDefaultFoldMaxBytes: 512).
void AddFoldFlag(Flags& flags);

// The flag in bytes. INVALID_ARGUMENT, naming the flag, for a non-number, a negative or one
// above 1 TiB.
StatusOr<int64_t> FoldMaxBytes(const Flags& flags);

}  // namespace cellserve::tools
