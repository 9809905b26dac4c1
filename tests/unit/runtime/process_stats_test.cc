// The process stats behind Prometheus's standard process_* metrics (runtime/process_stats.h): the
// /proc parsers on fixed text, and this process's stats read from the real machine.
#include "runtime/process_stats.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

// A /proc/PID/stat line for command `comm`, with every field from 3 on set to its own number,
// except utime (14), stime (15) and starttime (22).
std::string StatLine(const std::string& comm, int utime, int stime, int start) {
  std::string line = "4242 (" + comm + ")";
  for (int field = 3; field <= 52; ++field) {
    const int v = field == 14 ? utime : field == 15 ? stime : field == 22 ? start : field;
    line += field == 3 ? " S" : " " + std::to_string(v);
  }
  return line + "\n";
}

TEST(ProcessStats, ParsesCpuTimeAndStartFromStat) {
  auto t = ParseProcStat(StatLine("cellserve", 250, 50, 12000), 100);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_DOUBLE_EQ(t->cpu_seconds, 3.0);
  EXPECT_DOUBLE_EQ(t->start_since_boot_seconds, 120.0);
  // A command name with spaces and parentheses: fields count from its last ')'.
  auto odd = ParseProcStat(StatLine("cs rpc) (x", 1, 2, 3), 1);
  ASSERT_TRUE(odd.ok()) << odd.status().ToString();
  EXPECT_DOUBLE_EQ(odd->cpu_seconds, 3.0);
  EXPECT_DOUBLE_EQ(odd->start_since_boot_seconds, 3.0);
  for (const std::string& bad : {std::string(""), std::string("4242 cellserve S 1 2 3"), std::string("4242 (x) S 1 2"),
                                StatLine("x", -1, 0, 0)})
    EXPECT_EQ(ParseProcStat(bad, 100).status().code(), StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(ParseProcStat(StatLine("x", 1, 1, 1), 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(ProcessStats, ParsesBootTime) {
  EXPECT_DOUBLE_EQ(*ParseBootTime("cpu  1 2 3\nintr 5\nbtime 1764000000\nprocesses 9\n"), 1764000000.0);
  for (const char* bad : {"", "cpu 1 2\n", "btime \n", "btime x\n", "btime 12 13\n"})
    EXPECT_EQ(ParseBootTime(bad).status().code(), StatusCode::kInvalidArgument) << bad;
}

TEST(ProcessStats, ThisProcessReadsSensibly) {
  const ProcessStats before = ReadProcessStats();
  EXPECT_GE(before.cpu_seconds, 0);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(before.start_time_seconds, now + 1);
  EXPECT_GT(before.start_time_seconds, now - 24 * 3600) << "a test process started within the day";
  EXPECT_GT(before.open_fds, 0);
  EXPECT_GE(before.max_fds, before.open_fds);
  // One more descriptor open is counted.
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ReadProcessStats().open_fds, before.open_fds + 1);
  ::close(fd);
  EXPECT_EQ(ReadProcessStats().open_fds, before.open_fds);
}

}  // namespace
}  // namespace cellserve
