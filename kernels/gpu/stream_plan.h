// The asynchronous transfer schedule of the CUDA backend: which stream runs which part of a round
// and which events order them, so that the copies of one round overlap the compute of another.
// Pure host code, no CUDA; the CUDA device turns each StreamOp into cudaMemcpyAsync, a graph launch,
// cudaEventRecord or cudaStreamWaitEvent, in the order given.
//
// A round (one batch) uses one staging slot s: a pinned host buffer, a device index buffer and a
// device output buffer, with three events per slot. Its ops, enqueued in this order:
//   upload stream:    kUpload (pinned -> device indices), record kUploaded[s]
//   compute stream:   wait kUploaded[s], kCompute (the cell's graph), record kComputed[s]
//   download stream:  wait kComputed[s], kDownload (device outputs -> pinned), record kDone[s]
//   (a round without outputs to copy back records kDone[s] on the compute stream instead)
// Uploads and downloads are on SEPARATE copy streams on purpose: on one copy stream, round n+1's
// upload would queue behind round n's download, which waits for round n's compute, so no upload
// could overlap compute and every round would pay upload + compute + download in sequence.
// Staging slots are used round-robin. Before writing slot s's pinned buffer again the host waits
// for the kDone of the slot's previous round (RoundPlan::wait_for_slot); that one wait also covers
// the device buffers, which that round's compute and download have finished with by then. With
// upload, compute and download of similar cost, 3 slots keep the compute stream busy; 2 make the
// host wait and halve the overlap.
//
// StreamPlanner is not thread-safe: the CUDA device calls it under its own lock. SimulateStreams is
// a pure function for tests and capacity planning.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

namespace cellserve::gpu {

enum class StreamKind { kUpload, kCompute, kDownload };
enum class OpKind { kWaitEvent, kRecordEvent, kUpload, kCompute, kDownload };
enum class EventKind { kUploaded, kComputed, kDone };  // one of each per staging slot

struct StreamOp {
  StreamKind stream;
  OpKind kind;
  EventKind event = EventKind::kDone;  // for kWaitEvent / kRecordEvent
};

struct RoundPlan {
  uint64_t round_id = 0;
  // The pinned host buffer, device index buffer and device output buffer this round uses.
  int32_t staging_slot = 0;
  // The slot's previous round has not completed: the host must wait for it (its kDone) before
  // writing the slot's pinned buffer.
  bool wait_for_slot = false;
  uint64_t previous_round = 0;  // that round (valid when wait_for_slot)
  bool download = false;        // the round copies outputs back (heads)
  std::vector<StreamOp> ops;    // to enqueue in this order
};

class StreamPlanner {
 public:
  explicit StreamPlanner(int32_t staging_slots);  // < 1 is taken as 1

  // Plans the next round on the next slot (round-robin). Rounds are planned in submission order.
  RoundPlan Plan(uint64_t round_id, bool needs_download);
  // The round's kDone event fired: its slot is free (unless a later round has taken it since).
  // Unknown or already completed rounds are ignored.
  void Completed(uint64_t round_id);

  // Rounds planned and not yet completed.
  int32_t in_flight() const;
  int32_t staging_slots() const;

 private:
  struct Slot {
    bool busy = false;        // its last round has not completed
    uint64_t last_round = 0;  // valid when busy
  };
  std::vector<Slot> slots_;
  uint64_t planned_ = 0;                  // rounds planned so far: the next slot is planned_ % slots
  std::map<uint64_t, int32_t> in_flight_;  // round id -> its staging slot
};

// --- Timeline simulation -------------------------------------------------------------------------
// Executes RoundPlans on three in-order streams with CUDA's semantics: an op starts when its stream
// has finished the ops enqueued before it and the host has enqueued it; a record fires when its
// stream reaches it; a wait blocks its stream until the most recent record of that (slot, event)
// enqueued before the wait has fired (cudaStreamWaitEvent's rule), and a wait on a never-recorded
// event is satisfied at once. Times in microseconds.

struct OpCost {
  double upload_us = 0, compute_us = 0, download_us = 0;
};

struct RoundTimes {
  double submit = 0, upload_start = 0, upload_end = 0, compute_start = 0, compute_end = 0, download_start = 0,
         download_end = 0, done = 0;
};

// plans[i] was enqueued at submit_us[i] (non-decreasing). If plans[i].wait_for_slot, its enqueue
// happens only when previous_round is done (the host waits), so its submit is max(submit_us[i], that
// round's done); and as the host enqueues rounds in order, never before plans[i-1]'s submit. A
// previous_round not among the plans counts as done. Returns one RoundTimes per plan.
// costs[i] is plans[i]'s cost; ops without a cost (a missing costs[i]; a download when not planned)
// take 0. The times of an op a plan lacks stay 0; done is when the plan's kDone record fires.
std::vector<RoundTimes> SimulateStreams(const std::vector<RoundPlan>& plans, const std::vector<OpCost>& costs,
                                        const std::vector<double>& submit_us);

}  // namespace cellserve::gpu
