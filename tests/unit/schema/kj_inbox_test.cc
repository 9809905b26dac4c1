// KjInbox: functions posted from other threads run on the kj loop's thread, each exactly once and
// in each poster's order; a closed inbox refuses (and destroys) what it is given. Every wait is
// bounded (PollUntil), so a lost wake-up fails a test instead of hanging it.
#include "schema/kj_inbox.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/debug.h>
#include <kj/exception.h>

namespace cellserve::rpc {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::seconds kPatience{10};  // far more than any test needs

// Pumps the loop without blocking until `done` or the time is up.
bool PollUntil(kj::WaitScope& ws, const std::function<bool()>& done,
               std::chrono::milliseconds limit = kPatience) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    ws.poll();
    if (done()) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Pumps the loop for a while (to give a wrongly queued function the chance to run).
void PollFor(kj::WaitScope& ws, std::chrono::milliseconds d) {
  PollUntil(ws, [] { return false; }, d);
}

// Resolves once Arrive() has been called `target` times, from any thread.
class Latch {
 public:
  explicit Latch(int target) : target_(target), paf_(kj::newPromiseAndCrossThreadFulfiller<void>()) {}
  void Arrive() {
    if (++count_ == target_) paf_.fulfiller->fulfill();
  }
  int count() const { return count_.load(); }
  kj::Promise<void> Reached() { return kj::mv(paf_.promise); }  // once

 private:
  const int target_;
  std::atomic<int> count_{0};
  kj::PromiseCrossThreadFulfillerPair<void> paf_;
};

// Runs the loop until `done` resolves (true) or `limit` passes (false). A watchdog thread ends the
// wait through a cross-thread fulfiller of its own, so a lost wake-up fails instead of hanging.
// Unlike polling, this returns while other threads are still posting.
bool WaitFor(kj::WaitScope& ws, kj::Promise<void> done, std::chrono::milliseconds limit = kPatience) {
  auto timeout = kj::newPromiseAndCrossThreadFulfiller<void>();
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;  // GUARDED_BY(mu)
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, limit, [&] { return finished; })) timeout.fulfiller->fulfill();
  });
  const bool ok = done.then([] { return true; })
                      .exclusiveJoin(timeout.promise.then([] { return false; }))
                      .wait(ws);
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
  }
  cv.notify_one();
  watchdog.join();
  return ok;
}

// Counts what became of posted functions: run, or destroyed without running.
struct Counters {
  std::atomic<int> ran{0};
  std::atomic<int> dropped{0};
};
struct Probe {
  explicit Probe(std::shared_ptr<Counters> c) : counters(std::move(c)) {}
  ~Probe() {
    if (!ran) ++counters->dropped;
  }
  std::shared_ptr<Counters> counters;
  bool ran = false;
};
KjInbox::Task ProbeTask(const std::shared_ptr<Counters>& counters) {
  auto probe = std::make_shared<Probe>(counters);
  return [probe] {
    probe->ran = true;
    ++probe->counters->ran;
  };
}

// The loop's side: an inbox whose Run() promise is kept alive, with its failure (if any) kept.
class Loop {
 public:
  explicit Loop(kj::WaitScope& ws) : ws_(ws) {
    run_ = inbox_.Run().eagerlyEvaluate([this](kj::Exception&& e) { run_error_ = kj::mv(e); });
  }
  KjInbox& inbox() { return inbox_; }
  kj::WaitScope& ws() { return ws_; }
  // The Run() promise never fails: not while serving, not after Close.
  void ExpectRunHealthy() {
    KJ_IF_MAYBE(e, run_error_) { ADD_FAILURE() << "Run() failed: " << e->getDescription().cStr(); }
  }

 private:
  kj::WaitScope& ws_;
  KjInbox inbox_;
  kj::Maybe<kj::Exception> run_error_;
  kj::Promise<void> run_ = nullptr;  // destroyed first: it refers to inbox_
};

// N threads post M functions each; every one runs once, on the loop's thread, in its poster's
// order. The posting threads start together to make them contend.
void ManyThreadsPost(kj::WaitScope& ws) {
  constexpr int kThreads = 8, kPerThread = 500;
  Loop loop(ws);
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::mutex mu;
  std::vector<std::vector<int>> seen(kThreads);  // GUARDED_BY(mu): per poster, in run order
  std::atomic<int> ran{0}, wrong_thread{0}, refused{0};
  std::atomic<bool> go{false};
  Latch all(kThreads * kPerThread);

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < kPerThread; ++i) {
        const bool ok = loop.inbox().Post([&, t, i] {
          if (std::this_thread::get_id() != loop_thread) ++wrong_thread;
          {
            std::lock_guard<std::mutex> lock(mu);
            seen[t].push_back(i);
          }
          ++ran;
          all.Arrive();
        });
        if (!ok) ++refused;
        if (i % 64 == 0) std::this_thread::yield();
      }
    });
  }
  go = true;
  const bool all_ran = WaitFor(ws, all.Reached());
  for (std::thread& th : threads) th.join();
  ASSERT_TRUE(all_ran) << "only " << ran << " of " << kThreads * kPerThread << " ran";
  PollFor(ws, std::chrono::milliseconds(20));  // nothing runs twice

  EXPECT_EQ(ran.load(), kThreads * kPerThread);
  EXPECT_EQ(refused.load(), 0);
  EXPECT_EQ(wrong_thread.load(), 0) << "functions ran off the loop's thread";
  EXPECT_EQ(loop.inbox().posted(), static_cast<uint64_t>(kThreads * kPerThread));
  std::lock_guard<std::mutex> lock(mu);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[t].size(), static_cast<size_t>(kPerThread)) << "thread " << t;
    for (int i = 0; i < kPerThread; ++i) ASSERT_EQ(seen[t][i], i) << "thread " << t << " out of order";
  }
  loop.ExpectRunHealthy();
}

TEST(KjInboxTest, ManyThreadsPostOnPlainEventLoop) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  ManyThreadsPost(ws);
}

// The RPC server's loop: kj::setupAsyncIo's (a UnixEventPort wakes it).
TEST(KjInboxTest, ManyThreadsPostOnAsyncIoLoop) {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  ManyThreadsPost(io.waitScope);
}

// Nothing runs until the loop turns, and nothing runs on the posting thread.
TEST(KjInboxTest, NothingRunsOnThePostingThread) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  Loop loop(ws);
  std::atomic<int> ran{0};
  std::thread poster([&] {
    for (int i = 0; i < 10; ++i) EXPECT_TRUE(loop.inbox().Post([&] { ++ran; }));
  });
  poster.join();
  EXPECT_EQ(ran.load(), 0) << "ran before the loop turned";
  ASSERT_TRUE(PollUntil(ws, [&] { return ran.load() == 10; })) << ran << " of 10 ran";
  loop.ExpectRunHealthy();
}

// The loop's own thread may post: from outside any task (the loop idle, waiting) and from inside a
// running function (the next one runs after it returns, in order).
TEST(KjInboxTest, PostFromTheLoopThread) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  Loop loop(ws);
  PollFor(ws, std::chrono::milliseconds(5));  // the inbox is idle, waiting for a wake-up

  std::vector<int> order;
  ASSERT_TRUE(loop.inbox().Post([&] { order.push_back(0); }));
  EXPECT_TRUE(order.empty()) << "Post ran the function inline";
  ASSERT_TRUE(PollUntil(ws, [&] { return order.size() == 1; }));

  // A chain: each function posts the next one; the function posting is finished before the next
  // starts.
  constexpr int kChain = 200;
  bool inside = false, nested = false;
  std::function<void(int)> step = [&](int i) {
    if (inside) nested = true;
    inside = true;
    order.push_back(i);
    if (i < kChain) {
      EXPECT_TRUE(loop.inbox().Post([&step, i] { step(i + 1); }));
    }
    inside = false;
  };
  ASSERT_TRUE(loop.inbox().Post([&] { step(1); }));
  ASSERT_TRUE(PollUntil(ws, [&] { return order.size() == kChain + 1; })) << order.size() << " ran";
  EXPECT_FALSE(nested) << "a function posted from a function ran inside it";
  for (int i = 0; i <= kChain; ++i) ASSERT_EQ(order[i], i);
  EXPECT_EQ(loop.inbox().posted(), static_cast<uint64_t>(kChain + 1));
  loop.ExpectRunHealthy();
}

// A function that throws is dropped (and said); the ones after it, and later posts, still run.
TEST(KjInboxTest, AFunctionThatThrowsDoesNotStopTheInbox) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  Loop loop(ws);
  std::vector<int> ran;
  ASSERT_TRUE(loop.inbox().Post([&] { ran.push_back(1); }));
  ASSERT_TRUE(loop.inbox().Post([] { KJ_FAIL_REQUIRE("a task's bug"); }));
  ASSERT_TRUE(loop.inbox().Post([] { throw std::runtime_error("another"); }));
  ASSERT_TRUE(loop.inbox().Post([&] { ran.push_back(2); }));
  ASSERT_TRUE(PollUntil(ws, [&] { return ran.size() == 2; })) << ran.size() << " of 2 ran";
  ASSERT_TRUE(loop.inbox().Post([&] { ran.push_back(3); }));
  ASSERT_TRUE(PollUntil(ws, [&] { return ran.size() == 3; })) << "the inbox stopped after the failures";
  loop.ExpectRunHealthy();
}

// After Close, Post refuses: the function is not queued, never runs, and is destroyed before Post
// returns, on the posting thread.
TEST(KjInboxTest, PostAfterCloseIsRefused) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  Loop loop(ws);
  auto counters = std::make_shared<Counters>();
  ASSERT_TRUE(loop.inbox().Post(ProbeTask(counters)));
  ASSERT_TRUE(PollUntil(ws, [&] { return counters->ran.load() == 1; }));

  loop.inbox().Close();
  PollFor(ws, std::chrono::milliseconds(20));
  loop.ExpectRunHealthy();  // closing an idle inbox parks Run(); it does not fail it
  EXPECT_FALSE(loop.inbox().Post(ProbeTask(counters)));
  EXPECT_EQ(counters->dropped.load(), 1) << "the refused function was not destroyed by Post";

  // From another thread: destroyed there, before Post returns.
  std::thread::id destroyed_on;
  std::thread poster([&] {
    struct OnDestroy {
      explicit OnDestroy(std::thread::id* w) : where(w) {}
      std::thread::id* where;
      ~OnDestroy() {
        if (where) *where = std::this_thread::get_id();
      }
    };
    auto guard = std::make_shared<OnDestroy>(&destroyed_on);
    std::weak_ptr<OnDestroy> weak = guard;
    bool ok = loop.inbox().Post([guard] { ADD_FAILURE() << "ran after Close"; });
    guard.reset();
    EXPECT_FALSE(ok);
    EXPECT_TRUE(weak.expired()) << "the refused function outlived Post";
  });
  const std::thread::id poster_id = poster.get_id();
  poster.join();
  EXPECT_EQ(destroyed_on, poster_id);

  PollFor(ws, std::chrono::milliseconds(20));
  EXPECT_EQ(counters->ran.load(), 1);
  EXPECT_EQ(loop.inbox().posted(), 1u) << "refused functions are not counted as posted";
}

// Functions queued but not yet run when Close is called are dropped: destroyed, never run.
TEST(KjInboxTest, CloseDropsQueuedFunctions) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  Loop loop(ws);
  PollFor(ws, std::chrono::milliseconds(5));
  auto counters = std::make_shared<Counters>();
  std::thread poster([&] {
    for (int i = 0; i < 50; ++i) EXPECT_TRUE(loop.inbox().Post(ProbeTask(counters)));
  });
  poster.join();
  loop.inbox().Close();
  EXPECT_EQ(counters->dropped.load(), 50);
  PollFor(ws, std::chrono::milliseconds(20));
  EXPECT_EQ(counters->ran.load(), 0);
  EXPECT_EQ(loop.inbox().posted(), 50u);
}

// Threads keep posting while the loop closes the inbox: every accepted function either runs (all
// of them before Close returns) or is dropped, none twice; after Close returns nothing runs.
TEST(KjInboxTest, CloseWhileThreadsPost) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  // Posters that never stop keep the inbox's Drain always scheduled, and by default kj looks at
  // cross-thread events (the latch, the watchdog) only when its queue runs empty: it would not
  // notice the latch until the posters gave up. A busy-poll interval makes it look regularly.
  ws.setBusyPollInterval(16);
  auto counters = std::make_shared<Counters>();
  std::atomic<int> accepted{0};
  Latch thousand(1000);
  constexpr int kThreads = 4;
  {
    Loop loop(ws);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        const auto deadline = Clock::now() + kPatience;
        while (Clock::now() < deadline) {
          // Four posters outrun one loop, and the inbox runs everything queued in one turn: an
          // unpaced backlog grows without bound and so does the turn. Slow down when it is long.
          if (accepted.load() - counters->ran.load() > 1000) {
            std::this_thread::sleep_for(std::chrono::microseconds(50));
          }
          KjInbox::Task probe = ProbeTask(counters);
          if (!loop.inbox().Post([probe, &thousand] {
                probe();
                thousand.Arrive();
              }))
            return;
          ++accepted;
        }
        ADD_FAILURE() << "Post kept accepting after Close";
      });
    }
    const bool started = WaitFor(ws, thousand.Reached());
    for (int i = 0; i < 10; ++i) {  // a backlog for Close to drop, whatever the posters managed
      if (loop.inbox().Post(ProbeTask(counters))) ++accepted;
    }
    loop.inbox().Close();  // before any ASSERT: the posting threads stop only when refused
    const int ran_at_close = counters->ran.load();
    for (std::thread& th : threads) th.join();
    ASSERT_TRUE(started) << "only " << thousand.count() << " of the first 1000 ran";
    PollFor(ws, std::chrono::milliseconds(20));
    EXPECT_EQ(counters->ran.load(), ran_at_close) << "functions ran after Close";
    EXPECT_GT(accepted.load(), ran_at_close) << "the inbox never had a backlog to drop";
  }  // the inbox and its Run() promise are gone: every function has been destroyed
  // Dropped: those queued at Close, and each thread's last function, the one Post refused.
  EXPECT_EQ(counters->ran.load() + counters->dropped.load(), accepted.load() + kThreads);
}

// A Sender posts like Post, from any thread, and stays safe after the inbox is gone: then it
// refuses, destroying the function on its own thread without running it.
TEST(KjInboxTest, SenderOutlivesTheInbox) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  auto counters = std::make_shared<Counters>();
  std::unique_ptr<KjInbox::Sender> sender;
  {
    Loop loop(ws);
    sender = std::make_unique<KjInbox::Sender>(loop.inbox().sender());
    const KjInbox::Sender copy = *sender;
    std::thread poster([&] {
      for (int i = 0; i < 20; ++i) EXPECT_TRUE(copy.Post(ProbeTask(counters)));
    });
    poster.join();
    ASSERT_TRUE(PollUntil(ws, [&] { return counters->ran.load() == 20; })) << counters->ran << " of 20 ran";
    EXPECT_EQ(loop.inbox().posted(), 20u);
    loop.ExpectRunHealthy();
  }
  std::thread late([&] {
    EXPECT_FALSE(sender->Post(ProbeTask(counters)));
    EXPECT_EQ(counters->dropped.load(), 1) << "the refused function outlived Post";
  });
  late.join();
  PollFor(ws, std::chrono::milliseconds(10));
  EXPECT_EQ(counters->ran.load(), 20);
  sender.reset();  // the last reference to the inbox's shared state, released off the loop
}

// Destroying the inbox (after its Run() promise) destroys what was queued without running it.
TEST(KjInboxTest, DestructionDropsQueuedFunctions) {
  kj::EventLoop event_loop;
  kj::WaitScope ws(event_loop);
  auto counters = std::make_shared<Counters>();
  {
    Loop loop(ws);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(loop.inbox().Post(ProbeTask(counters)));
  }
  EXPECT_EQ(counters->ran.load(), 0);
  EXPECT_EQ(counters->dropped.load(), 5);
}

}  // namespace
}  // namespace cellserve::rpc
