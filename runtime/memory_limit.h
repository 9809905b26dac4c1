// How much memory this process may use: the least of the machine's memory, its cgroup's limit
// and those of their ancestors (cgroup v2 memory.max; v1 memory.limit_in_bytes), and its
// address-space limit (RLIMIT_AS). A Kubernetes memory limit is such a cgroup limit. Used to
// refuse, with a clear error, allocations that could only end in the OOM killer (--state-slots).
// The parsers are pure; MemoryLimitOfThisProcess reads /proc/self/cgroup and /sys/fs/cgroup.
// Errors: INVALID_ARGUMENT for text that is not a limit. Unlimited is +infinity.
#pragma once

#include <string>

#include "runtime/status.h"

namespace cellserve {

// cgroup v2 memory.max: "max" (no limit) or a byte count.
StatusOr<double> ParseCgroupMemoryMax(const std::string& text);

// cgroup v1 memory.limit_in_bytes: a byte count; the kernel's "no limit" is a value near 2^63.
StatusOr<double> ParseCgroupV1MemoryLimit(const std::string& text);

// This process's limit in bytes (the machine's memory at most); +infinity only where nothing at
// all can be read.
double MemoryLimitOfThisProcess();

}  // namespace cellserve
