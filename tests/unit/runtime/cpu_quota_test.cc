// The cgroup CPU quota parsers behind --idle-poll's check (runtime/cpu_quota.h).
#include "runtime/cpu_quota.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(CpuQuotaTest, ParsesCgroupV2CpuMax) {
  EXPECT_TRUE(std::isinf(*ParseCgroupCpuMax("max 100000")));
  EXPECT_DOUBLE_EQ(*ParseCgroupCpuMax("200000 100000"), 2.0);
  EXPECT_DOUBLE_EQ(*ParseCgroupCpuMax("50000 100000\n"), 0.5);
  for (const char* bad : {"", "max", "100000", "abc 100000", "100000 0", "-5 100000", "1 2 3"}) {
    auto q = ParseCgroupCpuMax(bad);
    ASSERT_FALSE(q.ok()) << bad;
    EXPECT_EQ(q.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(CpuQuotaTest, ParsesCgroupV1CfsQuota) {
  EXPECT_TRUE(std::isinf(*ParseCfsQuota("-1", "100000")));
  EXPECT_DOUBLE_EQ(*ParseCfsQuota("300000", "100000"), 3.0);
  EXPECT_FALSE(ParseCfsQuota("", "100000").ok());
  EXPECT_FALSE(ParseCfsQuota("100000", "0").ok());
  EXPECT_FALSE(ParseCfsQuota("-2", "100000").ok());
}

TEST(CpuQuotaTest, IdlePollNeedsAQuotaForEveryCpu) {
  EXPECT_TRUE(CheckQuotaAllowsIdlePoll(4, 3, std::numeric_limits<double>::infinity()).ok());
  EXPECT_TRUE(CheckQuotaAllowsIdlePoll(4, 3, 4.0).ok());
  const Status short_quota = CheckQuotaAllowsIdlePoll(4, 3, 2.5);
  ASSERT_FALSE(short_quota.ok());
  EXPECT_EQ(short_quota.code(), StatusCode::kInvalidArgument);
  for (const char* part : {"--idle-poll spins on 3 CPU(s)", "all 4 CPU(s)", "2.5 CPU(s)", "throttle", "raise the limit to 4"})
    EXPECT_NE(short_quota.message().find(part), std::string::npos) << part << " in: " << short_quota.message();
  EXPECT_NE(short_quota.message().find("device threads"), std::string::npos);
  // A router polls every CPU it may use: no device threads to speak of.
  const Status router = CheckQuotaAllowsIdlePoll(2, 2, 1.5);
  ASSERT_FALSE(router.ok());
  EXPECT_EQ(router.message().find("device threads"), std::string::npos) << router.message();
  EXPECT_NE(router.message().find("--idle-poll spins on 2 CPU(s): this process"), std::string::npos) << router.message();
}

TEST(CpuQuotaTest, ThisProcessHasAQuotaOrNone) {
  const double q = CpuQuotaOfThisProcess();
  EXPECT_TRUE(std::isinf(q) || q > 0) << q;
}

}  // namespace
}  // namespace cellserve
