// cluster/tcp_probe.h against real sockets on 127.0.0.1: a listener, a closed port, a listener
// that drops SYNs (its accept queue full) and the stop flag; and name lookups that need no DNS
// server (addresses, localhost, the reserved .invalid domain).
#include "cluster/tcp_probe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/common/dead_end_listeners.h"
#include "tests/unit/common/open_fds.h"

namespace cellserve::cluster {
namespace {

using testutil::DeadEndListener;
using Clock = std::chrono::steady_clock;

TEST(ProbeTcp, AListenerIsReachable) {
  DeadEndListener silent = DeadEndListener::Silent();
  ASSERT_GT(silent.port(), 0);
  const Status s = ProbeTcp("127.0.0.1", silent.port(), 2000);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST(ProbeTcp, AClosedPortIsUnavailableAtOnce) {
  uint16_t port = 0;
  {
    DeadEndListener gone = DeadEndListener::Silent();  // a free port, closed again below
    port = gone.port();
  }
  ASSERT_GT(port, 0);
  const auto t0 = Clock::now();
  const Status s = ProbeTcp("127.0.0.1", port, 5000);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("refused"), std::string::npos) << s.message();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2)) << "a refusal is not a timeout";
}

TEST(ProbeTcp, DroppedSynsEndAtTheTimeout) {
  DeadEndListener blackhole = DeadEndListener::Blackhole();
  ASSERT_GT(blackhole.port(), 0);
  const auto t0 = Clock::now();
  const Status s = ProbeTcp("127.0.0.1", blackhole.port(), 300);
  const auto took = Clock::now() - t0;
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_NE(s.message().find("within 300 ms"), std::string::npos) << s.message();
  EXPECT_GE(took, std::chrono::milliseconds(290));
  EXPECT_LT(took, std::chrono::seconds(3)) << "the timeout did not bound the connect";
}

TEST(ProbeTcp, TheStopFlagEndsTheWait) {
  DeadEndListener blackhole = DeadEndListener::Blackhole();
  ASSERT_GT(blackhole.port(), 0);
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop = true;
  });
  const auto t0 = Clock::now();
  const Status s = ProbeTcp("127.0.0.1", blackhole.port(), 60000, &stop);
  const auto took = Clock::now() - t0;
  stopper.join();
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s.ToString();
  EXPECT_LT(took, std::chrono::seconds(5)) << "stop was not seen while connecting";
}

TEST(ProbeTcp, ATimeoutBelowOneMillisecondIsRefused) {
  EXPECT_EQ(ProbeTcp("127.0.0.1", 1, 0).code(), StatusCode::kInvalidArgument);
  DeadEndListener blackhole = DeadEndListener::Blackhole();
  ASSERT_GT(blackhole.port(), 0);
  EXPECT_EQ(ProbeTcp("127.0.0.1", blackhole.port(), 1).code(), StatusCode::kDeadlineExceeded) << "1 ms is allowed";
}

// The node agent probes every 250 ms while a router is away: each probe must close its socket.
TEST(ProbeTcp, EveryOutcomeClosesItsSocket) {
  DeadEndListener silent = DeadEndListener::Silent();
  DeadEndListener blackhole = DeadEndListener::Blackhole();
  uint16_t closed = 0;
  {
    DeadEndListener gone = DeadEndListener::Silent();
    closed = gone.port();
  }
  ASSERT_TRUE(silent.port() > 0 && blackhole.port() > 0 && closed > 0);
  const size_t before = testutil::OpenFdCount();
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(ProbeTcp("127.0.0.1", silent.port(), 2000).ok());
    EXPECT_EQ(ProbeTcp("127.0.0.1", closed, 2000).code(), StatusCode::kUnavailable);
    EXPECT_EQ(ProbeTcp("127.0.0.1", blackhole.port(), 20).code(), StatusCode::kDeadlineExceeded);
  }
  EXPECT_EQ(testutil::OpenFdCount(), before);
}

TEST(ResolveAddresses, AnAddressIsItself) {
  StatusOr<std::vector<std::string>> v4 = ResolveAddresses("127.0.0.1");
  ASSERT_TRUE(v4.ok()) << v4.status().ToString();
  EXPECT_EQ(*v4, std::vector<std::string>{"127.0.0.1"});
  StatusOr<std::vector<std::string>> v6 = ResolveAddresses("::1");
  ASSERT_TRUE(v6.ok()) << v6.status().ToString();
  EXPECT_EQ(*v6, std::vector<std::string>{"::1"});
}

TEST(ResolveAddresses, LocalhostHasALoopbackAddressOnce) {
  StatusOr<std::vector<std::string>> ips = ResolveAddresses("localhost");
  ASSERT_TRUE(ips.ok()) << ips.status().ToString();
  ASSERT_FALSE(ips->empty());
  for (const std::string& ip : *ips) {
    EXPECT_TRUE(ip == "::1" || ip.rfind("127.", 0) == 0) << ip;
    EXPECT_EQ(std::count(ips->begin(), ips->end(), ip), 1) << ip << " twice";
  }
}

TEST(ResolveAddresses, ANameThatDoesNotResolveSaysSo) {
  StatusOr<std::vector<std::string>> ips = ResolveAddresses("no-such-router.invalid");
  EXPECT_EQ(ips.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(ips.status().message().find("cannot resolve no-such-router.invalid: "), std::string::npos)
      << ips.status().message();
}

}  // namespace
}  // namespace cellserve::cluster
