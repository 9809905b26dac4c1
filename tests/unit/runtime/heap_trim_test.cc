// When an idle node gives its freed heap back (runtime/heap_trim.h): at once when idle, at most
// once per interval, and a node that stays idle past a throttled trim is trimmed when the check
// it asked for comes.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <vector>

#include "runtime/heap_trim.h"

namespace cellserve {
namespace {

using Action = IdleHeapTrim::Action;

TEST(IdleHeapTrimTest, TheFirstIdleMomentTrims) {
  IdleHeapTrim trim(1000);
  EXPECT_EQ(trim.OnIdle(5).action, Action::kTrimNow);
}

TEST(IdleHeapTrimTest, AtMostOncePerIntervalAndOneCheckAskedForWhenThrottled) {
  IdleHeapTrim trim(1000);
  ASSERT_EQ(trim.OnIdle(0).action, Action::kTrimNow);
  const IdleHeapTrim::Decision throttled = trim.OnIdle(300);
  EXPECT_EQ(throttled.action, Action::kCheckLater);
  EXPECT_EQ(throttled.check_in_us, 700) << "the check is due when the interval ends";
  EXPECT_EQ(trim.OnIdle(400).action, Action::kNothing) << "a check is due already";
  EXPECT_EQ(trim.OnIdle(999).action, Action::kNothing);
  trim.CheckCame();
  EXPECT_EQ(trim.OnIdle(1000).action, Action::kTrimNow) << "idle when the check came: trimmed";
  const IdleHeapTrim::Decision again = trim.OnIdle(1500);
  EXPECT_EQ(again.action, Action::kCheckLater);
  EXPECT_EQ(again.check_in_us, 500);
}

// Busy when the check came: nothing then; the next idle moment decides again.
TEST(IdleHeapTrimTest, ACheckThatFindsTheNodeBusyLeavesItToTheNextIdleMoment) {
  IdleHeapTrim trim(1000);
  ASSERT_EQ(trim.OnIdle(0).action, Action::kTrimNow);
  ASSERT_EQ(trim.OnIdle(100).action, Action::kCheckLater);
  trim.CheckCame();  // busy: OnIdle not called
  EXPECT_EQ(trim.OnIdle(2500).action, Action::kTrimNow);
}

// A steady trickle of requests (idle between each) trims once per interval, not per request.
TEST(IdleHeapTrimTest, ATrickleOfRequestsTrimsOncePerInterval) {
  IdleHeapTrim trim(1000);
  int trims = 0, checks = 0;
  for (int64_t t = 0; t < 10'000; t += 10) {
    const Action a = trim.OnIdle(t).action;
    trims += a == Action::kTrimNow;
    if (a == Action::kCheckLater) {
      ++checks;
      trim.CheckCame();  // as if it came at once and found the node busy
    }
  }
  EXPECT_EQ(trims, 10);
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// A burst's memory freed in holes between blocks still in use stays resident (glibc returns only
// the top of the heap by itself) until ReleaseFreeHeap.
TEST(IdleHeapTrimTest, ReleaseFreeHeapGivesBackTheHolesABurstLeft) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "malloc_trim is glibc's";
#endif
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan's allocator is not glibc's";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  GTEST_SKIP() << "a sanitizer's allocator is not glibc's";
#endif
#endif
  std::vector<std::vector<char>> burst;
  for (int i = 0; i < 1000; ++i) burst.emplace_back(100000, 'x');  // 100 MB, under the mmap threshold
  for (size_t i = 0; i < burst.size(); ++i)
    if (i % 10 != 9) std::vector<char>().swap(burst[i]);  // every tenth block stays: 90 MB of holes
  const int64_t before = ResidentBytes();
  ReleaseFreeHeap();
  const int64_t after = ResidentBytes();
  EXPECT_LT(after, before - (int64_t{45} << 20)) << "resident before " << (before >> 20) << " MiB, after "
                                                  << (after >> 20) << " MiB";
}

}  // namespace
}  // namespace cellserve
