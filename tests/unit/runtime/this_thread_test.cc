#include "runtime/this_thread.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

#ifdef __linux__
TEST(ThisThreadTest, NamesTheCallingThreadOnlyCutToFifteenCharacters) {
  const std::string main_name = ThisThreadName();
  std::string seen;
  std::thread t([&] {
    NameThisThread("cs-a-rather-long-thread-name");
    seen = ThisThreadName();
  });
  t.join();
  EXPECT_EQ(seen, "cs-a-rather-lon");
  EXPECT_EQ(ThisThreadName(), main_name);
}

TEST(ThisThreadTest, PinsTheCallingThreadToTheCpusGiven) {
  const std::vector<int> all = ThisThreadCpus();
  ASSERT_FALSE(all.empty());
  std::vector<int> seen;
  Status pinned;
  std::thread t([&] {
    pinned = PinThisThread({all.back()});
    seen = ThisThreadCpus();
  });
  t.join();
  ASSERT_TRUE(pinned.ok()) << pinned.ToString();
  EXPECT_EQ(seen, std::vector<int>{all.back()});
  EXPECT_EQ(ThisThreadCpus(), all);  // the caller is untouched
}

TEST(ThisThreadTest, PinsAnotherThread) {
  const std::vector<int> all = ThisThreadCpus();
  ASSERT_FALSE(all.empty());
  std::vector<int> seen;
  bool go = false;
  std::mutex mu;
  std::condition_variable cv;
  std::thread t([&] {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return go; });
    seen = ThisThreadCpus();
  });
  Status pinned = PinThread(t, {all.front()});
  {
    std::lock_guard<std::mutex> lock(mu);
    go = true;
  }
  cv.notify_all();
  t.join();
  ASSERT_TRUE(pinned.ok()) << pinned.ToString();
  EXPECT_EQ(seen, std::vector<int>{all.front()});
}

TEST(ThisThreadTest, UsableCpusAreTheAffinityNotTheMachine) {
  const std::vector<int> all = ThisThreadCpus();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(UsableCpuCount(), static_cast<int>(all.size()));
  int in_one = 0;
  std::thread t([&] {
    if (PinThisThread({all.front()}).ok()) in_one = UsableCpuCount();
  });
  t.join();
  EXPECT_EQ(in_one, 1);
}

TEST(ThisThreadTest, RefusesNoCpusACpuOutOfRangeAndAThreadNotRunning) {
  EXPECT_EQ(PinThisThread({}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PinThisThread({-1}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PinThisThread({1 << 20}).code(), StatusCode::kInvalidArgument);
  std::thread none;
  EXPECT_EQ(PinThread(none, {0}).code(), StatusCode::kInvalidArgument);
}
#endif

}  // namespace
}  // namespace cellserve
