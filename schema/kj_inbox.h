// KjInbox: how other threads (CAF actor threads, device callbacks) hand work to a kj event loop
// without blocking either side. Post() may be called from any thread: it queues a function and
// wakes the loop with a kj cross-thread fulfiller; the loop runs queued functions in order, on
// its own thread, from the task started by Run(). Nothing is ever run on the posting thread.
// Ownership: created, run and destroyed on the kj loop's thread. Post() after Close() (or after
// destruction began) drops the function (it is destroyed on the posting thread); owners that
// post into a closing loop must tolerate that (the RPC server closes its inbox only after the
// cluster has stopped answering).
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

  // The loop's side: a promise that runs posted functions forever (until Close). Call once, on
  // the loop's thread, and keep the promise (e.g. in a kj::TaskSet or .eagerlyEvaluate()).
  kj::Promise<void> Run();

  // Any thread. Returns false if the inbox is closed (the function was not queued).
  bool Post(Task task);

  // The loop's side: stop taking functions; those queued already are dropped.
  void Close();

  // Functions posted so far (for tests).
  uint64_t posted() const;

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
  kj::Promise<void> Drain();
};

}  // namespace cellserve::rpc
