// The memory-limit parsers, the headroom computed from readings, and this process's readings taken
// from the real machine.
#include "runtime/memory_limit.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <gtest/gtest.h>

#include "tests/unit/common/address_space.h"
#include "tests/unit/common/sanitizers.h"

namespace cellserve {
namespace {

constexpr double kMiB = 1 << 20;

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

TEST(MemoryLimit, ParsesProcKbFields) {
  const std::string meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
  EXPECT_EQ(*ParseProcKbField(meminfo, "MemAvailable"), 2048.0 * 1024);
  EXPECT_EQ(*ParseProcKbField(meminfo, "MemTotal"), 24000000.0 * 1024);
  EXPECT_EQ(ParseProcKbField(meminfo, "Mem").status().code(), StatusCode::kInvalidArgument);  // a prefix is no name
  EXPECT_EQ(ParseProcKbField(meminfo, "SwapTotal").status().code(), StatusCode::kInvalidArgument);
  for (const char* bad : {"RssAnon:\t-5 kB", "RssAnon: 5 MB", "RssAnon: 5", "RssAnon: 5 kB x", "RssAnon: five kB"})
    EXPECT_EQ(ParseProcKbField(bad, "RssAnon").status().code(), StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(*ParseProcKbField("Name:\tx\nRssAnon:\t    7 kB\n", "RssAnon"), 7.0 * 1024);
}

TEST(MemoryLimit, HeadroomIsTheLeastOfWhatEachLimitLeaves) {
  MemoryReadings r;
  EXPECT_TRUE(std::isinf(MemoryHeadroom(r))) << "nothing read: nothing known to limit it";
  r.machine_total = 1000 * kMiB;  // the machine, less what this process holds
  r.anon_resident = 300 * kMiB;
  EXPECT_EQ(MemoryHeadroom(r), 700 * kMiB);
  r.cgroup_limit = 800 * kMiB;  // a container's limit, less the same
  EXPECT_EQ(MemoryHeadroom(r), 500 * kMiB);
  r.address_space_limit = 2000 * kMiB;  // an address-space limit, less what is mapped
  r.address_space = 1700 * kMiB;
  EXPECT_EQ(MemoryHeadroom(r), 300 * kMiB);
  r.anon_resident = 900 * kMiB;  // over the limit already (e.g. a limit lowered while running)
  EXPECT_EQ(MemoryHeadroom(r), 0);
}

TEST(MemoryLimit, CheckHeadroomSaysWhatDoesNotFitAndWhatToDo) {
  EXPECT_TRUE(CheckHeadroom(100 * kMiB, 100 * kMiB, "x").ok());
  const Status over = CheckHeadroom(101 * kMiB, 100 * kMiB, "a file of 101 MiB", "lower --thing");
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(over.message().rfind("a file of 101 MiB, more than the memory this process may still take (100 MiB: ", 0), 0u)
      << over.message();
  EXPECT_NE(over.message().find("cgroup"), std::string::npos) << over.message();
  EXPECT_EQ(over.message().substr(over.message().size() - 16), "); lower --thing") << over.message();
  EXPECT_EQ(CheckHeadroom(2, 1, "y").message().back(), ')') << "no advice, no trailing '; '";
}

TEST(MemoryLimit, SummarySaysWhichLimitBinds) {
  MemoryReadings r;
  r.resident = 320 * kMiB;
  EXPECT_EQ(MemorySummary(r), "320 MiB resident; no memory limit could be read");  // not "unlimited MiB"
  r.machine_total = 8000 * kMiB;
  r.anon_resident = 300 * kMiB;
  EXPECT_EQ(MemorySummary(r), "320 MiB resident; 7700 MiB more may be taken, of a 8000 MiB limit (the machine's)");
  r.cgroup_limit = 4096 * kMiB;
  EXPECT_EQ(MemorySummary(r), "320 MiB resident; 3796 MiB more may be taken, of a 4096 MiB limit (the cgroup's)");
  r.address_space_limit = 2000 * kMiB;
  r.address_space = 1500 * kMiB;
  EXPECT_EQ(MemorySummary(r),
            "320 MiB resident; 500 MiB more may be taken, of a 2000 MiB limit (the address-space limit)");
}

// Reserved memory not yet resident (ZeroFloats) comes off the machine's or cgroup's side only:
// the address-space side counts it already (VmSize holds every mapping).
TEST(MemoryLimit, ReservedMemoryComesOffTheMemorySideOfTheHeadroom) {
  MemoryReadings r;
  r.machine_total = 8000 * kMiB;
  r.anon_resident = 300 * kMiB;
  r.resident = 320 * kMiB;
  EXPECT_EQ(ReservableHeadroom(r, 0), MemoryHeadroom(r));
  EXPECT_EQ(ReservableHeadroom(r, 1700 * kMiB), 6000 * kMiB);
  EXPECT_EQ(ReservableHeadroom(r, 9000 * kMiB), 0) << "never below 0";
  r.address_space_limit = 2000 * kMiB;
  r.address_space = 1500 * kMiB;  // the reservation's mapping is in here
  EXPECT_EQ(ReservableHeadroom(r, 1000 * kMiB), 500 * kMiB) << "not subtracted twice";
  EXPECT_EQ(MemorySummary(r, 1000 * kMiB),
            "320 MiB resident (and 1000 MiB of state slots reserved, taken as they fill); 500 MiB more may be taken, "
            "of a 2000 MiB limit (the address-space limit)");
  // Reserved enough that the memory side leaves less than the address space: that side binds.
  EXPECT_EQ(ReservableHeadroom(r, 7300 * kMiB), 400 * kMiB);
  EXPECT_EQ(MemorySummary(r, 7300 * kMiB),
            "320 MiB resident (and 7300 MiB of state slots reserved, taken as they fill); 400 MiB more may be taken, "
            "of a 8000 MiB limit (the machine's)");
  r.address_space_limit = MemoryReadings::kNone;
  EXPECT_EQ(MemorySummary(r, 1000 * kMiB),
            "320 MiB resident (and 1000 MiB of state slots reserved, taken as they fill); 6700 MiB more may be taken, "
            "of a 8000 MiB limit (the machine's)");
}

TEST(MemoryLimit, TheLimitIsTheOneTheHeadroomIsMeasuredAgainst) {
  MemoryReadings r;
  EXPECT_TRUE(std::isinf(MemoryLimit(r)));
  r.machine_total = 1000 * kMiB;
  r.anon_resident = 300 * kMiB;
  EXPECT_EQ(MemoryLimit(r), 1000 * kMiB);
  r.cgroup_limit = 800 * kMiB;
  EXPECT_EQ(MemoryLimit(r), 800 * kMiB);
  r.address_space_limit = 2000 * kMiB;  // leaves 300 MiB, less than the cgroup's 500
  r.address_space = 1700 * kMiB;
  EXPECT_EQ(MemoryLimit(r), 2000 * kMiB);
  r.address_space = 1000 * kMiB;  // leaves 1000 MiB: the cgroup binds again
  EXPECT_EQ(MemoryLimit(r), 800 * kMiB);
}

TEST(MemoryLimit, ThisProcessHasSomeAndAtMostTheMachinesMemory) {
  const MemoryReadings r = ReadMemoryOfThisProcess();
  const double machine = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  EXPECT_GT(r.machine_total, 0);
  EXPECT_LE(r.machine_total, machine);  // less in a container whose /proc shows its limit (LXCFS)
  EXPECT_GT(r.anon_resident, 0);
  EXPECT_GE(r.resident, r.anon_resident);
  EXPECT_GT(r.address_space, r.resident);
  const double headroom = MemoryHeadroomOfThisProcess();
  EXPECT_GT(headroom, 0);
  EXPECT_LE(headroom, machine);
}

TEST(MemoryLimit, MemoryTouchedCountsAsHeld) {
  // What the cgroup term subtracts: anonymous memory written to (not merely reserved). Half of
  // it at least: the kernel's count may lag a little per CPU (it is summed lazily since 6.2).
  const double before = ReadMemoryOfThisProcess().anon_resident;
  const size_t bytes = size_t{256} << 20;
  std::unique_ptr<char[]> block(new char[bytes]);
  char* volatile escaped = block.get();  // so the compiler cannot leave the allocation out
  std::memset(escaped, 1, bytes);
  const double after = ReadMemoryOfThisProcess().anon_resident;
  EXPECT_GE(after - before, 128 * kMiB) << "RssAnon " << before / kMiB << " -> " << after / kMiB << " MiB";
  EXPECT_EQ(block[bytes - 1], 1);
}

TEST(MemoryLimitDeathTest, AnAddressSpaceLimitLeavesItLessWhatIsMapped) {
  CELLSERVE_SKIP_UNDER_ASAN("it limits the address space");
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto child = [] {
    if (!testutil::LimitAddressSpaceTo(int64_t{256} << 20)) std::_Exit(3);
    // The address-space term alone (the machine's or a cgroup's may be less on a busy machine).
    auto left = [] {
      const MemoryReadings r = ReadMemoryOfThisProcess();
      return r.address_space_limit - r.address_space;
    };
    const double before = left();
    if (before > 256 * kMiB || before < 200 * kMiB) std::_Exit(4);
    std::unique_ptr<char[]> block(new char[size_t{100} << 20]);  // mapped, not written
    char* volatile escaped = block.get();  // so the compiler cannot leave the allocation out
    const double after = left();
    const bool counted = before - after >= 100 * kMiB && MemoryHeadroomOfThisProcess() <= after;
    std::_Exit(counted && escaped ? 0 : 5);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace cellserve
