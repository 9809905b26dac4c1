// The serving commands' start-up pieces (tools/front_door.h) that touch the process: the open-file
// limit is raised to what --max-connections needs, or a warning says what to raise. Each case
// runs in a child process (death-test style), since it changes this process's limits.
#include "tools/front_door.h"

#include <sys/resource.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "monitoring/log.h"

namespace cellserve::tools {
namespace {

// Soft limit `soft` (and hard `hard`, if lower than now), then FitOpenFileLimit(1024). Exits 0
// when it returned `want_returned` and the soft limit is that now; 1 otherwise (says why).
[[noreturn]] void FitFrom(rlim_t soft, rlim_t hard, int64_t want_returned) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = soft;
  if (hard < limit.rlim_max) limit.rlim_max = hard;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) std::_Exit(2);
  const int64_t returned = FitOpenFileLimit(1024, "test");
  getrlimit(RLIMIT_NOFILE, &limit);
  (void)monitoring::FlushLog(std::chrono::seconds(5));  // its warning first
  std::fprintf(stderr, "returned %lld, soft limit %llu\n", static_cast<long long>(returned),
               static_cast<unsigned long long>(limit.rlim_cur));
  std::fflush(stderr);
  std::_Exit(returned == want_returned && static_cast<int64_t>(limit.rlim_cur) == want_returned ? 0 : 1);
}

TEST(FitOpenFileLimitTest, RaisesASoftLimitBelowWhatTheConnectionsNeed) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < 1152) GTEST_SKIP() << "the hard limit is below 1152";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // 1024 connections + 128: raised to that, not further, and nothing to warn about.
  EXPECT_EXIT(FitFrom(256, RLIM_INFINITY, 1152), ::testing::ExitedWithCode(0), "^returned 1152, soft limit 1152\n$");
}

TEST(FitOpenFileLimitTest, AHardLimitTooLowIsRaisedToAndNamed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(FitFrom(100, 300, 300), ::testing::ExitedWithCode(0),
              "cellserve test: the open-file limit is 300, below the 1152 that --max-connections 1024 needs;.*"
              "`ulimit -n 1152`.*\nreturned 300, soft limit 300");
}

TEST(FitOpenFileLimitTest, ALimitHighEnoughIsLeftAlone) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < 4096) GTEST_SKIP() << "the hard limit is below 4096";
  EXPECT_EXIT(FitFrom(4096, RLIM_INFINITY, 4096), ::testing::ExitedWithCode(0), "^returned 4096, soft limit 4096\n$");
}

}  // namespace
}  // namespace cellserve::tools
