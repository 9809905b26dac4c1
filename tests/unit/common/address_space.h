// LimitAddressSpaceTo(more): for death tests' children that check what happens when memory runs
// out. Limits this process's address space (RLIMIT_AS) to what it has mapped now and `more` bytes;
// false if it could not. Never in the test process itself: the limit cannot be raised again. Skip
// such tests under ASan (sanitizers.h), whose shadow memory needs terabytes of address space.
#pragma once

#include <sys/resource.h>

#include <cstdint>

#include "runtime/memory_limit.h"

namespace cellserve::testutil {

inline bool LimitAddressSpaceTo(int64_t more) {
  const double mapped = ReadMemoryOfThisProcess().address_space;
  if (mapped <= 0) return false;
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(mapped + static_cast<double>(more));
  return setrlimit(RLIMIT_AS, &limit) == 0;
}

}  // namespace cellserve::testutil
