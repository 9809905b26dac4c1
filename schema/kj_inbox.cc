#include "schema/kj_inbox.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "monitoring/log.h"

namespace cellserve::rpc {

struct KjInbox::Sender::Shared {
  std::mutex mu;
  std::deque<Task> queue;                                    // GUARDED_BY(mu)
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake;       // GUARDED_BY(mu); null while awake
  bool closed = false;                                       // GUARDED_BY(mu)
  uint64_t posted = 0;                                       // GUARDED_BY(mu)
};

KjInbox::KjInbox() : shared_(std::make_shared<Shared>()) {}

KjInbox::~KjInbox() { Close(); }

KjInbox::Sender KjInbox::sender() const { return Sender(shared_); }

bool KjInbox::Post(Task task) { return Sender(shared_).Post(std::move(task)); }

bool KjInbox::Sender::Post(Task task) const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  if (shared_->closed) return false;
  shared_->queue.push_back(std::move(task));
  ++shared_->posted;
  if (shared_->wake) {
    shared_->wake->fulfill();
    shared_->wake = nullptr;
  }
  return true;
}

void KjInbox::Close() {
  std::deque<Task> dropped;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->closed = true;
    dropped.swap(shared_->queue);
    wake = std::move(shared_->wake);
  }
  // Outside the lock: a task's captures may post again (they find the inbox closed). Waking the
  // idle Run() promise lets it see `closed` and park for good, instead of failing because its
  // fulfiller was destroyed unfulfilled.
  if (wake) wake->fulfill();
}

uint64_t KjInbox::posted() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->posted;
}

kj::Promise<void> KjInbox::Run() { return Drain(shared_); }

// Static over the shared state, so a Run() promise that outlives the inbox only finds it closed.
// The cross-thread promise is made only when the queue is empty and the loop is about to wait:
// one made and dropped unfulfilled on every busy turn would be rejected through the loop's event
// port, an eventfd write and a spurious wake-up of this thread for every answer delivered.
kj::Promise<void> KjInbox::Drain(std::shared_ptr<Shared> shared) {
  std::deque<Task> batch;
  kj::Maybe<kj::Promise<void>> woken;
  {
    std::lock_guard<std::mutex> lock(shared->mu);
    if (shared->closed) return kj::NEVER_DONE;
    // At most kMaxBatch per turn, so a flood of posts cannot hold the loop for long.
    const size_t n = std::min(shared->queue.size(), kMaxBatch);
    for (size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(shared->queue.front()));
      shared->queue.pop_front();
    }
    if (batch.empty()) {
      auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
      shared->wake = std::move(paf.fulfiller);
      woken = std::move(paf.promise);
    }
  }
  // One task that throws must not reject the drain: nothing awaits it, so every later answer and
  // health report would silently never be delivered. Said, and the loop goes on.
  for (Task& task : batch) {
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { task(); })) {
      monitoring::LogLine("cellserve: an RPC task failed and was dropped: %s\n", e->getDescription().cStr());
    }
  }
  KJ_IF_MAYBE(promise, woken) {
    return promise->then([shared] { return Drain(shared); });
  }
  return kj::evalLater([shared] { return Drain(shared); });
}

}  // namespace cellserve::rpc
