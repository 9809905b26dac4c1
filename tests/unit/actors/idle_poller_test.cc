// IdlePoller (--idle-poll): one thread per CPU, named, pinned there, in the SCHED_IDLE class,
// spinning; all gone when the poller is; bad CPU lists refused with no thread left behind.
#include "actors/idle_poller.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/this_thread.h"
#include "tests/unit/common/thread_probe.h"
#include "tests/unit/common/wait_for.h"

namespace cellserve {
namespace {

using testing_threads::AllowedCpusOfThread;
using testing_threads::TaskNamed;
using testing_threads::ThreadGone;

std::string PollerName(int cpu) { return "cs-idle-poll:" + std::to_string(cpu); }

// Nanoseconds the thread has run (/proc/.../schedstat), or -1.
long long RunTimeNs(const std::filesystem::path& task) {
  long long ns = -1;
  std::ifstream(task / "schedstat") >> ns;
  return ns;
}

// How many times the thread gave up its CPU of its own accord (slept, waited), or -1.
long long VoluntarySwitches(const std::filesystem::path& task) {
  std::ifstream status(task / "status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0) return std::stoll(line.substr(24));
  return -1;
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
  for (int cpu : cpus) EXPECT_TRUE(ThreadGone(PollerName(cpu))) << PollerName(cpu) << " outlived its poller";
}

// While `hold` says true the threads sleep (asking again each millisecond); then they spin again.
// Judged so that how loaded the machine is does not matter. Held: never two asks within a
// millisecond, since the thread sleeps between them. Released: hundreds of asks with (nearly) no
// sleep among them, counted by the kernel's voluntary context switches. Wall-clock gaps between
// asks cannot show spinning: on a busy machine a SCHED_IDLE thread is preempted so often that
// no two asks come within 200 us (seen with two busy loops on two cores).
TEST(IdlePollerTest, SleepsWhileHoldSaysSo) {
  const int cpu = ThisThreadCpus().front();
  std::atomic<bool> busy{true};
  std::atomic<int> asked{0};
  std::atomic<int64_t> shortest_gap_ns{INT64_MAX};  // between two asks, since the last reset
  int64_t last_ns = 0;                               // the polling thread's only
  auto poller = IdlePoller::Start({cpu}, [&] {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    if (last_ns > 0 && now - last_ns < shortest_gap_ns.load()) shortest_gap_ns = now - last_ns;
    last_ns = now;
    ++asked;
    return busy.load();
  });
  ASSERT_TRUE(poller.ok()) << poller.status().ToString();
  ASSERT_EQ(AllowedCpusOfThread(PollerName(cpu)), std::to_string(cpu));
  auto wait_for = [](const std::function<bool()>& done) { return testutil::WaitFor(done, std::chrono::seconds(30)); };
  // Held: 50 asks, never two within a millisecond (0.9 ms allows for the clock's grain).
  ASSERT_TRUE(wait_for([&] { return asked.load() >= 5; }));
  shortest_gap_ns = INT64_MAX;
  const int from = asked.load();
  ASSERT_TRUE(wait_for([&] { return asked.load() - from >= 50; })) << "hold was not asked 50 times in 30 s";
  EXPECT_GE(shortest_gap_ns.load(), 900'000) << "held, it asked again after " << shortest_gap_ns.load() / 1000
                                             << " us: it did not sleep";
  const auto task = TaskNamed(PollerName(cpu));
  ASSERT_FALSE(task.empty());
  const long long held_switches = VoluntarySwitches(task);
  ASSERT_GE(held_switches, 50) << "held, it asked 50 times without sleeping";
  // Released: it spins. 100 asks need up to 15 ms of run time (a SCHED_IDLE thread beside a busy
  // loop gets well under 1% of a core, so seconds); a sleep among them would be a voluntary
  // switch. A few are allowed for the one sleep in progress at the release.
  busy = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int released_from = asked.load();
  const long long released_switches = VoluntarySwitches(task);
  ASSERT_TRUE(wait_for([&] { return asked.load() - released_from >= 100; }))
      << "released, it asked " << asked.load() - released_from << " times in 30 s";
  EXPECT_LE(VoluntarySwitches(task) - released_switches, 5) << "released, it still slept between asks";
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
  EXPECT_TRUE(ThreadGone(PollerName(cpu)));
}

}  // namespace
}  // namespace cellserve
