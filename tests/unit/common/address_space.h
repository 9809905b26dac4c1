// For death tests' children that check what happens when memory runs out:
// LimitAddressSpaceTo(more) limits this process's address space (RLIMIT_AS) to what it has mapped
// now and `more` bytes; LimitDataTo(more) its data segment (RLIMIT_DATA: private writable
// mappings, malloc's included) to what it has and `more`, a limit the memory headroom
// (runtime/memory_limit.h) does not read, so an allocation can fail past a check that passed.
// Both return false if they could not. Never in the test process itself: a limit cannot be raised
// again. DataLimitIsEnforced says (from a forked child) whether this kernel enforces RLIMIT_DATA
// on malloc's mappings (Linux >= 4.7 without ignore_rlimit_data); skip such tests where not.
// Skip them under ASan too (sanitizers.h): its shadow memory needs terabytes of address space.
#pragma once

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include "runtime/cgroup.h"
#include "runtime/memory_limit.h"

namespace cellserve::testutil {

inline bool LimitAddressSpaceTo(int64_t more) {
  const double mapped = ReadMemoryOfThisProcess().address_space;
  if (mapped <= 0) return false;
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(mapped + static_cast<double>(more));
  return setrlimit(RLIMIT_AS, &limit) == 0;
}

inline bool LimitDataTo(int64_t more) {
  const StatusOr<double> data = ParseProcKbField(ReadWholeFile("/proc/self/status"), "VmData");
  if (!data.ok()) return false;
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(*data + static_cast<double>(more));
  return setrlimit(RLIMIT_DATA, &limit) == 0;
}

inline bool DataLimitIsEnforced() {
  const pid_t child = fork();
  if (child < 0) return false;
  if (child == 0) {
    if (!LimitDataTo(int64_t{1} << 20)) _exit(2);
    void* p = std::malloc(size_t{64} << 20);
    _exit(p == nullptr ? 0 : 1);
  }
  int status = 0;
  pid_t waited;
  do waited = waitpid(child, &status, 0);
  while (waited < 0 && errno == EINTR);
  return waited == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace cellserve::testutil
