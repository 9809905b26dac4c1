#include "runtime/sync_executor.h"

#include "runtime/clock.h"
#include "runtime/scheduler.h"

namespace cellserve {

SyncExecutor::SyncExecutor(Backend* backend, const Model* model, int32_t pool_slots)
    : backend_(backend), model_(model), pool_slots_(pool_slots) {}

std::vector<StatusOr<RequestResult>> SyncExecutor::Run(
    std::vector<std::unique_ptr<RequestGraph>>& graphs) {
  std::vector<StatusOr<RequestResult>> results(
      graphs.size(), StatusOr<RequestResult>(Internal("request graph stalled before finishing")));
  SchedulerOptions options;
  options.lookahead = 1;
  options.state_slots = pool_slots_;
  options.max_requests = static_cast<int64_t>(graphs.size()) + 1;
  FakeClock clock;  // no deadlines, no padded waits: time does not matter here
  auto scheduler = Scheduler::Create(model_, options, &clock);
  if (!scheduler.ok()) {
    for (auto& r : results) r = scheduler.status();
    return results;
  }
  Scheduler& s = **scheduler;
  // Returns whether any request got its answer.
  auto hear = [&](const std::vector<RequestEvent>& events) {
    bool answered = false;
    for (const RequestEvent& e : events) {
      if (e.kind == RequestEvent::Kind::kDone) results[e.id] = e.result;
      else if (e.kind == RequestEvent::Kind::kFailed) results[e.id] = e.status;
      answered |= e.kind != RequestEvent::Kind::kToken;
    }
    return answered;
  };
  for (size_t i = 0; i < graphs.size(); ++i) {
    // The scheduler shares the graph without owning it: it stays the caller's.
    std::shared_ptr<RequestGraph> borrowed(std::shared_ptr<RequestGraph>(), graphs[i].get());
    if (Status admitted = s.Admit(i, std::move(borrowed)); !admitted.ok()) results[i] = admitted;
  }
  while (s.requests_in() > 0) {
    auto round = s.NextRound();
    const bool shed = hear(s.TakeEvents());  // the pool was full: a request gave up its slots
    if (!round) {
      if (shed) continue;
      break;  // nothing can run: the graphs left are stalled (a bug), answered INTERNAL
    }
    ++stats_.batches;
    stats_.cells += round->real_rows;
    hear(s.OnRoundDone(round->id, backend_->Run(round->batch)));
  }
  slots_in_use_ = s.slots_in_use();
  return results;
}

}  // namespace cellserve
