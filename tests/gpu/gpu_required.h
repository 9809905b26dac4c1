// What a GPU test does where no GPU can be used: it skips, so that every build without a GPU
// stays green; or, when CELLSERVE_REQUIRE_GPU is set in the environment (to anything but "" or
// "0"), it fails. tools/gpu/run.sh
// sets it: on a GPU machine a skip means something is wrong (a driver that does not match the
// runtime, a plugin that did not load), and a run whose every test skipped would pass having
// tested nothing. Header only; for use inside a gtest test body.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string_view>

namespace cellserve {

inline bool GpuRequired() {
  const char* v = std::getenv("CELLSERVE_REQUIRE_GPU");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}

}  // namespace cellserve

// Skips the test with `why`, or fails it when CELLSERVE_REQUIRE_GPU is set.
#define SKIP_UNLESS_GPU_REQUIRED(why)                                                        \
  do {                                                                                       \
    if (::cellserve::GpuRequired()) FAIL() << "CELLSERVE_REQUIRE_GPU is set, but " << why;  \
    GTEST_SKIP() << why;                                                                     \
  } while (0)
