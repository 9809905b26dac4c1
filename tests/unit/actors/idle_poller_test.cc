// IdlePoller (--idle-poll): one thread per CPU, named, pinned there, in the SCHED_IDLE class,
// spinning; all gone when the poller is; bad CPU lists refused with no thread left behind.
#include "actors/idle_poller.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/this_thread.h"
#include "tests/unit/common/thread_probe.h"

namespace cellserve {
namespace {

using testing_threads::AllowedCpusOfThread;
using testing_threads::TaskNamed;

std::string PollerName(int cpu) { return "cs-idle-poll:" + std::to_string(cpu); }

// Nanoseconds the thread has run (/proc/.../schedstat), or -1.
long long RunTimeNs(const std::filesystem::path& task) {
  long long ns = -1;
  std::ifstream(task / "schedstat") >> ns;
  return ns;
}

TEST(IdlePollerTest, SpinsOnEachCpuInTheIdleClassUntilDestroyed) {
  const std::vector<int> cpus = ThisThreadCpus();
  ASSERT_FALSE(cpus.empty());
  {
    auto poller = IdlePoller::Start(cpus);
    ASSERT_TRUE(poller.ok()) << poller.status().ToString();
    EXPECT_EQ((*poller)->cpus(), cpus);
    for (int cpu : cpus) {
      EXPECT_EQ(AllowedCpusOfThread(PollerName(cpu)), std::to_string(cpu));
      const auto task = TaskNamed(PollerName(cpu));
      ASSERT_FALSE(task.empty());
      const pid_t tid = static_cast<pid_t>(std::stol(task.filename().string()));
      EXPECT_EQ(sched_getscheduler(tid), SCHED_IDLE) << PollerName(cpu);
      // It runs without ever sleeping: its CPU time grows (given time, on a busy machine too).
      const long long before = RunTimeNs(task);
      long long after = before;
      for (int i = 0; i < 500 && after <= before; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        after = RunTimeNs(task);
      }
      EXPECT_GT(after, before) << PollerName(cpu) << " did not run";
    }
  }
  for (int cpu : cpus) EXPECT_TRUE(TaskNamed(PollerName(cpu)).empty()) << PollerName(cpu) << " outlived its poller";
}

// While `hold` says true the threads sleep (asking again each millisecond); then they spin again.
TEST(IdlePollerTest, SleepsWhileHoldSaysSo) {
  const int cpu = ThisThreadCpus().front();
  std::atomic<bool> busy{true};
  std::atomic<int> asked{0};
  auto poller = IdlePoller::Start({cpu}, [&] {
    ++asked;
    return busy.load();
  });
  ASSERT_TRUE(poller.ok()) << poller.status().ToString();
  ASSERT_EQ(AllowedCpusOfThread(PollerName(cpu)), std::to_string(cpu));
  const auto task = TaskNamed(PollerName(cpu));
  ASSERT_FALSE(task.empty());
  const long long held_from = RunTimeNs(task);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const long long held_for = RunTimeNs(task) - held_from;
  EXPECT_GT(asked.load(), 10) << "hold is asked about every millisecond while it holds";
  EXPECT_LT(held_for, 60'000'000) << "held, it ran " << held_for / 1000000 << " ms of 300";

  // Released, it spins whenever the CPU is free: its run time grows well past the held rate (on a
  // busy machine a SCHED_IDLE thread gets little, so the bar is low and the wait long).
  busy = false;
  const long long want = std::max<long long>(3 * held_for, 5'000'000);
  const long long free_from = RunTimeNs(task);
  long long free_for = 0;
  for (int i = 0; i < 500 && free_for <= want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    free_for = RunTimeNs(task) - free_from;
  }
  EXPECT_GT(free_for, want) << "released, it should spin";
}

TEST(IdlePollerTest, RefusesBadCpuListsAndLeavesNoThread) {
  auto none = IdlePoller::Start({});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);

  const int cpu = ThisThreadCpus().front();
  auto twice = IdlePoller::Start({cpu, cpu});
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(twice.status().message().find("twice"), std::string::npos) << twice.status().message();

  // The first thread starts, the second cannot be pinned: the first is stopped and joined.
  auto out_of_range = IdlePoller::Start({cpu, 1 << 20});
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_TRUE(TaskNamed(PollerName(cpu)).empty());
}

}  // namespace
}  // namespace cellserve
