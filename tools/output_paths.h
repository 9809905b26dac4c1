// Checking a command's output files before it works for minutes: each given one (flag, path) can
// be written (its folder exists; it is not a folder), and no two of them, nor an output and an
// input, are the same file (bench --json CORPUS overwrote the corpus; --json X --csv X kept only
// the CSV). Paths "" (not given) and "-" (stdout, for the flags that take it) are skipped. Errors: INVALID_ARGUMENT naming the
// flag and what to do (a usage error, exit 2). Reads the file system only.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "runtime/status.h"

namespace cellserve::tools {

using NamedPath = std::pair<std::string, std::string>;  // flag ("--json"), path

Status CheckOutputPaths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs = {});

}  // namespace cellserve::tools
