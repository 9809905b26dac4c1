// OpenFdCount: how many file descriptors this process has open now (/proc/self/fd), for tests that
// check a path closes what it opened. Linux only; not thread-safe against other threads opening.
#pragma once

#include <cstddef>
#include <filesystem>

namespace cellserve::testutil {

inline size_t OpenFdCount() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace cellserve::testutil
