// Flags that no longer do anything, kept so that old command lines and config files still run:
// each is accepted with any value and, when given, says on stderr that it has no effect and what
// to use instead. Pure; single-threaded use (like Flags).
#pragma once

#include <string>

#include "tools/flags.h"

namespace cellserve::tools {

// Adds --blas-threads (retired: the CPU kernels are cellserve's own, not OpenBLAS).
void AddRetiredFlags(Flags& flags);

// One warning line on stderr per retired flag given, prefixed "cellserve COMMAND: ".
void WarnAboutRetiredFlags(const Flags& flags, const std::string& command);

}  // namespace cellserve::tools
