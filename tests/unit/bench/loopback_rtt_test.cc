// MeasureLoopbackRtt: one sample per round trip asked for, each a real (positive, bounded) time.
#include <gtest/gtest.h>

#include "bench/loopback_rtt.h"

namespace cellserve::bench {
namespace {

TEST(LoopbackRttTest, MeasuresEveryRoundTripAskedFor) {
  auto rtt = MeasureLoopbackRtt(20, 3, 1);
  ASSERT_TRUE(rtt.ok()) << rtt.status().ToString();
  ASSERT_EQ(rtt->back_to_back_us.size(), 20u);
  ASSERT_EQ(rtt->after_idle_us.size(), 3u);
  for (double us : rtt->back_to_back_us) {
    EXPECT_GT(us, 0.0);
    EXPECT_LT(us, 1e6);  // a loopback echo, not a second
  }
  for (double us : rtt->after_idle_us) EXPECT_GT(us, 0.0);
}

TEST(LoopbackRttTest, NothingAskedNothingMeasured) {
  auto rtt = MeasureLoopbackRtt(0, 0, 0);
  ASSERT_TRUE(rtt.ok()) << rtt.status().ToString();
  EXPECT_TRUE(rtt->back_to_back_us.empty());
  EXPECT_TRUE(rtt->after_idle_us.empty());
}

}  // namespace
}  // namespace cellserve::bench
