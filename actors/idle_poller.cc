#include "actors/idle_poller.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <string>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "actors/messages.h"
#include "runtime/cpu_quota.h"
#include "runtime/this_thread.h"

namespace cellserve {

namespace {

// Tells the core this is a spin-wait: less power, and on SMT the sibling gets the core's units.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// The calling thread into SCHED_IDLE: it runs only when nothing else on its CPU wants to.
Status EnterIdleClass() {
#if defined(__linux__)
  sched_param param{};
  param.sched_priority = 0;
  if (sched_setscheduler(0, SCHED_IDLE, &param) != 0)
    return Unavailable(std::string("cannot put an idle-poll thread in the SCHED_IDLE class: ") + std::strerror(errno));
  return OkStatus();
#else
  return Unavailable("--idle-poll needs Linux (SCHED_IDLE)");
#endif
}

}  // namespace

StatusOr<std::unique_ptr<IdlePoller>> IdlePoller::Start(const std::vector<int>& cpus, std::function<bool()> hold) {
  if (cpus.empty()) return InvalidArgument("idle poll: no CPUs given");
  std::vector<int> sorted = cpus;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    return InvalidArgument("idle poll: a CPU is given twice");
  std::unique_ptr<IdlePoller> poller(new IdlePoller());
  poller->cpus_ = cpus;
  poller->hold_ = std::move(hold);
  for (int cpu : cpus) {
    // Shared: this thread may return from get() and end the loop's turn while set_value is
    // still waking it up inside the promise.
    auto ready = std::make_shared<std::promise<Status>>();
    std::future<Status> started = ready->get_future();
    IdlePoller* self = poller.get();
    poller->threads_.emplace_back([self, cpu, ready] {
      NameThisThread("cs-idle-poll:" + std::to_string(cpu));
      Status status = PinThisThread({cpu});
      if (status.ok()) status = EnterIdleClass();
      const bool ok = status.ok();
      ready->set_value(std::move(status));
      if (!ok) return;
      self->Poll();
    });
    Status status = started.get();
    if (!status.ok()) return status;  // the destructor stops and joins the threads started so far
  }
  return poller;
}

void IdlePoller::Poll() {
  constexpr int kSpinsPerCheck = 1024;  // 10 µs (Sapphire Rapids, measured) to 150 µs of pauses
  while (!stop_.load(std::memory_order_relaxed)) {
    if (hold_ && hold_()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    for (int i = 0; i < kSpinsPerCheck; ++i) CpuRelax();
  }
}

IdlePoller::~IdlePoller() {
  stop_.store(true, std::memory_order_relaxed);
  for (std::thread& t : threads_) t.join();
}

Status CheckIdlePollQuota(int other_cpus) {
  const int polled = static_cast<int>(ThisThreadCpus().size());
  return CheckQuotaAllowsIdlePoll(polled + other_cpus, polled, CpuQuotaOfThisProcess());
}

StatusOr<std::unique_ptr<IdlePoller>> StartServingIdlePoller(std::shared_ptr<actors::ClusterCounters> counters,
                                                             int64_t below, int other_cpus) {
  if (below < 0) return InvalidArgument("idle_poll_below must be >= 0");
  RETURN_IF_ERROR(CheckIdlePollQuota(other_cpus));
  std::function<bool()> busy;
  if (below > 0) busy = [counters = std::move(counters), below] { return counters->Unanswered() >= below; };
  return IdlePoller::Start(ThisThreadCpus(), std::move(busy));
}

}  // namespace cellserve
