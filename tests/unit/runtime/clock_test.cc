#include "runtime/clock.h"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(FakeClockTest, StartsWhereToldAndDefaultsToZero) {
  EXPECT_EQ(FakeClock().NowMicros(), 0);
  EXPECT_EQ(FakeClock(123456).NowMicros(), 123456);
}

TEST(FakeClockTest, MovesOnlyWhenTold) {
  FakeClock clock(1000);
  const Clock& c = clock;  // used through the interface, as production code does
  EXPECT_EQ(c.NowMicros(), 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  EXPECT_EQ(c.NowMicros(), 1000);  // real time passing does not move it
  EXPECT_EQ(c.NowMicros(), 1000);
  clock.AdvanceMicros(250);
  EXPECT_EQ(c.NowMicros(), 1250);
  clock.AdvanceMicros(0);
  EXPECT_EQ(c.NowMicros(), 1250);
  clock.AdvanceMicros(int64_t{5} * 1000 * 1000 * 1000 * 1000);  // large values don't truncate
  EXPECT_EQ(c.NowMicros(), 1250 + int64_t{5} * 1000 * 1000 * 1000 * 1000);
  clock.SetMicros(42);
  EXPECT_EQ(c.NowMicros(), 42);
}

TEST(SteadyClockTest, MonotonicAndAdvances) {
  SteadyClock clock;
  const Clock& c = clock;
  int64_t prev = c.NowMicros();
  const int64_t first = prev;
  for (int i = 0; i < 10000; ++i) {
    const int64_t now = c.NowMicros();
    ASSERT_GE(now, prev) << "at iteration " << i;
    prev = now;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int64_t after = c.NowMicros();
  EXPECT_GE(after - first, 5000);        // microseconds, not ms or ns
  EXPECT_LT(after - first, 60'000'000);  // and not some other unit either
}

TEST(SteadyClockTest, AgreesWithStdSteadyClock) {
  SteadyClock clock;
  const int64_t ours = clock.NowMicros();
  const int64_t std_us = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  EXPECT_LE(ours, std_us);
  EXPECT_LT(std_us - ours, 1'000'000);
}

}  // namespace
}  // namespace cellserve
