#include "schema/kj_inbox.h"

#include <utility>

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
  // Destroyed outside the lock: a task's captures may post again (they find the inbox closed).
}

uint64_t KjInbox::posted() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->posted;
}

kj::Promise<void> KjInbox::Run() { return Drain(); }

kj::Promise<void> KjInbox::Drain() {
  std::deque<Task> batch;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->closed) return kj::NEVER_DONE;
    batch.swap(shared_->queue);
    if (batch.empty()) shared_->wake = std::move(paf.fulfiller);
  }
  for (Task& task : batch) task();
  if (!batch.empty()) return kj::evalLater([this] { return Drain(); });
  return paf.promise.then([this] { return Drain(); });
}

}  // namespace cellserve::rpc
