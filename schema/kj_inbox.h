// KjInbox: how other threads (CAF actor threads, device callbacks) hand work to a kj event loop
// without blocking either side. Post() may be called from any thread: it queues a function and
// wakes the loop with a kj cross-thread fulfiller; the loop runs queued functions in order, on
// its own thread, from the task started by Run(). Nothing is ever run on the posting thread.
// Ownership: created, run and destroyed on the kj loop's thread. Other threads post through a
// Sender, a cheap copyable handle that stays safe to use after the inbox is gone: a post after
// Close() (or after destruction) returns false and drops the function (destroyed on the posting
// thread, so it must not capture kj objects; capture plain values and ids instead).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include <kj/async.h>

namespace cellserve::rpc {

class KjInbox {
 public:
  using Task = std::function<void()>;

  KjInbox();
  ~KjInbox();

  // The loop's side: a promise that runs posted functions (at most kMaxBatch per loop turn, so
  // I/O is not starved when the loop polls between turns: see WaitScope::setBusyPollInterval)
  // until Close, then never resolves (it does not fail). Call once, on the loop's thread, and
  // keep the promise (e.g. .eagerlyEvaluate()); it may outlive the inbox.
  kj::Promise<void> Run();

  // Posts from any thread, also after the inbox is destroyed (then Post returns false).
  class Sender {
   public:
    bool Post(Task task) const;

   private:
    friend class KjInbox;
    struct Shared;
    explicit Sender(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
    std::shared_ptr<Shared> shared_;
  };
  Sender sender() const;

  // Any thread. Returns false if the inbox is closed (the function was not queued).
  bool Post(Task task);

  // The loop's side: stop taking functions; those queued already are dropped.
  void Close();

  // Functions posted so far (for tests).
  uint64_t posted() const;

 private:
  using Shared = Sender::Shared;
  static constexpr size_t kMaxBatch = 256;  // functions run per loop turn at most
  static kj::Promise<void> Drain(std::shared_ptr<Shared> shared);
  std::shared_ptr<Shared> shared_;
};

}  // namespace cellserve::rpc
