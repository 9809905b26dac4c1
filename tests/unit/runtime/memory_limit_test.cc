// The memory-limit parsers, and this process's limit read from the real machine.
#include "runtime/memory_limit.h"

#include <unistd.h>

#include <cmath>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(MemoryLimit, ParsesCgroupV2MemoryMax) {
  EXPECT_TRUE(std::isinf(*ParseCgroupMemoryMax("max")));
  EXPECT_EQ(*ParseCgroupMemoryMax("4294967296"), 4294967296.0);  // a 4Gi Kubernetes limit
  for (const char* bad : {"", "-1", "4G", "12 34", "max "})
    EXPECT_EQ(ParseCgroupMemoryMax(bad).status().code(), StatusCode::kInvalidArgument) << bad;
}

TEST(MemoryLimit, ParsesCgroupV1LimitWithItsNoLimitValue) {
  EXPECT_TRUE(std::isinf(*ParseCgroupV1MemoryLimit("9223372036854771712")));
  EXPECT_EQ(*ParseCgroupV1MemoryLimit("536870912"), 536870912.0);
  EXPECT_EQ(ParseCgroupV1MemoryLimit("-1").status().code(), StatusCode::kInvalidArgument);
}

TEST(MemoryLimit, ThisProcessHasOneAndItIsAtMostTheMachines) {
  const double limit = MemoryLimitOfThisProcess();
  const double machine = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  EXPECT_GT(limit, 0);
  EXPECT_LE(limit, machine);
}

}  // namespace
}  // namespace cellserve
