// The message protocol of the serving actors (DESIGN.md §3, §6): every atom and message type the
// node, worker and request actors exchange, declared here once, plus ReplySlot, the one answer of
// one request. Everything is local to one process, so the message types are announced with
// CAF_ALLOW_UNSAFE_MESSAGE_TYPE (they never cross the network: the router <-> node protocol is
// cluster/wire.h's).
//
// Message flow (who sends what to whom):
//   LocalCluster -> node      (infer_atom, InferMsg)          a new request
//                             (cancel_atom, RequestId)         client cancel
//                             (stop_atom) / (cancel_all_atom) / (shutdown_atom)   Stop, in order
//   node -> request actor     spawn(RequestActor, ...), (cancel_atom),
//                             (worker_lost_atom, std::string)  its worker ended: answer UNAVAILABLE
//   request -> worker         (admit_atom, AdmitMsg)           its whole graph, in ONE message
//                             (cancel_atom, CancelMsg)         client cancel or its own deadline
//   worker -> request         (update_atom, RequestUpdate)     one per request per round touched
//   request -> node           (finished_atom, RequestId, int worker, bool ran)   answered; forget
//                             me (ran = false: rejected before its worker admitted it)
//   worker -> node            (load_atom, LoadReport)          rate-limited load reports
//   device thread -> worker   (round_done_atom, DeviceCompletion)
//   worker -> itself          (wakeup_atom, int64_t at_us) deadlines / padded groups;
//                             (flush_atom) a delayed load report
//   anyone -> worker          (report_atom) -> WorkerReport;   (cancel_all_atom, Status)
//   anyone -> node            (report_atom) -> NodeReport;     (add_worker_atom, int, actor)
//   LocalCluster -> node      (probe_atom)   health's probe (Liveness): the node marks it read and
//   node -> worker            (probe_atom)   probes each worker whose last probe was read
// Thread-safety: the structs are plain values; ReplySlot and ClusterCounters are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "monitoring/log.h"
#include "monitoring/metrics.h"
#include "runtime/cell_graph.h"
#include "runtime/clock.h"
#include "runtime/device.h"
#include "runtime/progress_watch.h"
#include "runtime/scheduler.h"
#include "runtime/status.h"

namespace cellserve::actors {

// ---- atoms (at most 10 characters each) ----
using infer_atom = caf::atom_constant<caf::atom("infer")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using admit_atom = caf::atom_constant<caf::atom("admit")>;
using update_atom = caf::atom_constant<caf::atom("update")>;
using finished_atom = caf::atom_constant<caf::atom("finished")>;
using heap_trim_atom = caf::atom_constant<caf::atom("heaptrim")>;  // node -> itself: idle again?
using load_atom = caf::atom_constant<caf::atom("load")>;
using round_done_atom = caf::atom_constant<caf::atom("round_done")>;
using wakeup_atom = caf::atom_constant<caf::atom("wakeup")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using report_atom = caf::atom_constant<caf::atom("report")>;
using add_worker_atom = caf::atom_constant<caf::atom("addworker")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using cancel_all_atom = caf::atom_constant<caf::atom("cancel_all")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using worker_lost_atom = caf::atom_constant<caf::atom("wrk_lost")>;  // node -> request: its worker ended
using probe_atom = caf::atom_constant<caf::atom("probe")>;

using InferDone = std::function<void(StatusOr<RequestResult>)>;
// Called with each decoder token (seq2seq) in order, before the answer; on an actor thread.
using TokenSink = std::function<void(int32_t token)>;

// Counters of one cluster, shared by its actors and read by LocalCluster::Report. `unanswered`
// (requests handed in and not answered yet) is what Stop waits on.
//   rejected:  answered without running (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED at
//              admission, UNAVAILABLE while stopping, a deadline already passed on arrival)
//   accepted:  admitted by a worker's scheduler; later answered completed (OK) or failed.
struct ClusterCounters {
  std::atomic<int64_t> accepted{0}, completed{0}, failed{0}, rejected{0};
  // Outstanding cells summed over the workers' last load reports (the node actor keeps it).
  std::atomic<int64_t> outstanding_cells{0};

  void AddUnanswered() { unanswered.fetch_add(1); }
  // Only the step to zero takes the lock: a waiter either sees zero when it checks, or is waiting
  // (the lock released) by the time this notifies.
  void OnAnswered() {
    if (unanswered.fetch_sub(1) != 1) return;
    std::lock_guard<std::mutex> lock(mu);
    idle.notify_all();
  }
  // Lock-free: the idle pollers read it in their SCHED_IDLE threads, which the kernel may park
  // for a long time at any instruction; one parked holding `mu` would stall every arrival and
  // answer of the process behind it.
  int64_t Unanswered() const { return unanswered.load(std::memory_order_relaxed); }
  // True if every request was answered within `timeout`.
  bool WaitAllAnswered(std::chrono::microseconds timeout) {
    std::unique_lock<std::mutex> lock(mu);
    return idle.wait_for(lock, timeout, [&] { return unanswered.load() == 0; });
  }

 private:
  std::mutex mu;  // the `idle` wake-up and its wait (no lost wake-up)
  std::condition_variable idle;
  std::atomic<int64_t> unanswered{0};
};

// What health reads to tell a stuck node from a busy one (runtime/progress_watch.h), shared by
// LocalCluster, the node, the workers and the devices' completion callbacks (so it outlives them
// all). Each actor's watch counts probes: LocalCluster::state() sends the node one when its last
// was read, and the node sends each worker one the same way, so an actor that does not get to
// its mailbox has a probe outstanding that nobody reads. Each device's watch counts rounds:
// Began when its worker submits one, Ended in the device's completion callback. Every time is
// read from `clock`, which it owns with its users: a device left running by a Stop that gave up
// on it (a hung GPU) may call back after the cluster is gone.
struct Liveness {
  Liveness(size_t workers, std::shared_ptr<const Clock> clock)
      : clock(std::move(clock)), worker(workers), device(workers) {}
  const std::shared_ptr<const Clock> clock;
  ProgressWatch node;
  std::vector<ProgressWatch> worker;  // by worker index (fixed size)
  std::vector<ProgressWatch> device;  // by worker index: its device's rounds
};

// How an answer is counted.
enum class AnswerKind { kRejected, kRan };

// What a request's answer is recorded in (cellserve_requests_total, _request_duration_seconds and
// _requests_in_flight). `metrics` null: nothing is recorded.
struct AnswerMetrics {
  monitoring::ServingMetrics* metrics = nullptr;  // borrowed; outlives the slot
  monitoring::ModelMetrics* model = nullptr;      // the request's model; null = not served ("(unknown)")
  const Clock* clock = nullptr;                   // required with metrics
  int64_t arrival_us = 0;                         // when the cluster got the request, on `clock`
};

// The one answer of one request. Whoever holds it may Answer; the first call wins and later ones
// do nothing, so an answer can never be given twice. If nobody answered by the time the last
// holder lets go (a message lost at shutdown, an actor killed), the destructor answers
// UNAVAILABLE (the server's doing, not the client's: CANCELLED would hide it from the error
// ratio, and a router would not retry it), so an answer can never be missed either. Thread-safe.
class ReplySlot {
 public:
  ReplySlot(RequestId id, InferDone done, std::shared_ptr<ClusterCounters> counters, AnswerMetrics metrics = {})
      : id_(id), done_(std::move(done)), counters_(std::move(counters)), metrics_(metrics) {
    if (counters_) counters_->AddUnanswered();
    if (metrics_.metrics) metrics_.metrics->OnArrived();
  }
  ~ReplySlot() {
    Answer(Unavailable("request " + std::to_string(id_) + " was dropped while the cluster stopped"),
           AnswerKind::kRan);
  }
  ReplySlot(const ReplySlot&) = delete;
  ReplySlot& operator=(const ReplySlot&) = delete;

  RequestId id() const { return id_; }
  bool answered() const { return answered_.load(std::memory_order_acquire); }

  // Calls the callback with `result` unless an answer was given already. Returns whether it did.
  bool Answer(StatusOr<RequestResult> result, AnswerKind kind) {
    if (answered_.exchange(true, std::memory_order_acq_rel)) return false;
    if (counters_) {
      if (kind == AnswerKind::kRejected) ++counters_->rejected;
      else if (result.ok()) ++counters_->completed;
      else ++counters_->failed;
    }
    if (metrics_.metrics)  // before the callback: whoever hears the answer sees it counted
      metrics_.metrics->OnAnswered(metrics_.model, result.ok() ? StatusCode::kOk : result.status().code(),
                                   metrics_.clock->NowMicros() - metrics_.arrival_us);
    // A callback that throws (the caller's bug) is said and goes no further: it must not end
    // the actor that answers (a request actor would never tell the node it finished), and the
    // answer still counts, or Stop would wait its whole grace for it.
    InferDone done = std::move(done_);
    try {
      if (done) done(std::move(result));
    } catch (const std::exception& e) {
      monitoring::LogLine("cellserve: the answer callback of request %llu threw: %s\n",
                          static_cast<unsigned long long>(id_), e.what());
    } catch (...) {
      monitoring::LogLine("cellserve: the answer callback of request %llu threw\n",
                          static_cast<unsigned long long>(id_));
    }
    if (counters_) counters_->OnAnswered();
    return true;
  }

 private:
  const RequestId id_;
  InferDone done_;  // moved out by the one Answer that runs
  std::shared_ptr<ClusterCounters> counters_;
  AnswerMetrics metrics_;
  std::atomic<bool> answered_{false};
};

// ---- messages ----

// LocalCluster -> node: run one request.
struct InferMsg {
  RequestId id = 0;
  std::string model;
  RequestInput input;
  int64_t deadline_us = 0;              // absolute, the cluster's clock; 0 = none
  std::shared_ptr<ReplySlot> reply;
  TokenSink on_token;                   // may be empty
};

// The graph travels as a box so the unique_ptr can be moved out of a (copy-on-write) message.
struct GraphBox {
  std::unique_ptr<RequestGraph> graph;
};

// request -> worker: admit this request (its whole graph, moved).
struct AdmitMsg {
  RequestId id = 0;
  std::shared_ptr<GraphBox> graph;
  int64_t deadline_us = 0;
  caf::actor requester;                 // where its updates go
};

// request (or anyone) -> worker: remove the request and report `reason` as its failure.
struct CancelMsg {
  RequestId id = 0;
  Status reason;
};

// worker -> request: what one round (or a cancel/expiry/admission) meant for the request, in
// order. A kDone or kFailed event is the last thing a request hears from its worker.
struct RequestUpdate {
  RequestId id = 0;
  std::vector<RequestEvent> events;
  bool rejected = false;                // the admission itself was refused (never ran)
};

// worker -> node.
struct LoadReport {
  int worker = 0;
  int64_t outstanding_cells = 0;        // sum over the worker's schedulers
  int64_t requests_in = 0;
};

// worker -> anyone asking (report_atom): its device and schedulers now.
struct WorkerReport {
  std::string device;
  int64_t rounds = 0, cells = 0, padding_rows = 0;     // SchedulerStats, summed over models
  int64_t requests_done = 0, requests_failed = 0;
  int64_t busy_us = 0;                                 // Device::stats()
  int64_t device_batches = 0;
  int64_t requests_in = 0;                             // admitted, unfinished (all models)
  int64_t tracked_requests = 0;                        // requests the worker will still answer
  int64_t outstanding_cells = 0;
  int64_t slots_in_use = 0;
  int64_t rounds_in_flight = 0;
  int64_t load_reports = 0;                            // sent to the node so far
};

// node -> anyone asking (report_atom): what the node sees.
struct NodeReport {
  int64_t requests_in_flight = 0;                      // request actors alive
  std::vector<int64_t> assigned;                       // per worker: requests sent there so far
  std::vector<int64_t> in_flight;                      // per worker: of those, not yet finished
  std::vector<int64_t> reported_cells;                 // per worker: its last load report
};

}  // namespace cellserve::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::Status)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::DeviceCompletion)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::InferMsg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::AdmitMsg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::CancelMsg)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::RequestUpdate)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::LoadReport)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::WorkerReport)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::actors::NodeReport)
