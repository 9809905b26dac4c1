#include "kernels/gpu/stream_plan.h"

#include <algorithm>
#include <utility>

namespace cellserve::gpu {

namespace {

std::vector<StreamOp> RoundOps(bool needs_download) {
  std::vector<StreamOp> ops = {
      {StreamKind::kUpload, OpKind::kUpload},
      {StreamKind::kUpload, OpKind::kRecordEvent, EventKind::kUploaded},
      {StreamKind::kCompute, OpKind::kWaitEvent, EventKind::kUploaded},
      {StreamKind::kCompute, OpKind::kCompute},
      {StreamKind::kCompute, OpKind::kRecordEvent, EventKind::kComputed},
  };
  if (needs_download) {
    ops.push_back({StreamKind::kDownload, OpKind::kWaitEvent, EventKind::kComputed});
    ops.push_back({StreamKind::kDownload, OpKind::kDownload});
    ops.push_back({StreamKind::kDownload, OpKind::kRecordEvent, EventKind::kDone});
  } else {
    ops.push_back({StreamKind::kCompute, OpKind::kRecordEvent, EventKind::kDone});
  }
  return ops;
}

}  // namespace

StreamPlanner::StreamPlanner(int32_t staging_slots) : slots_(std::max(staging_slots, 1)) {}

RoundPlan StreamPlanner::Plan(uint64_t round_id, bool needs_download) {
  RoundPlan plan;
  plan.round_id = round_id;
  plan.staging_slot = static_cast<int32_t>(planned_++ % slots_.size());
  Slot& slot = slots_[plan.staging_slot];
  plan.wait_for_slot = slot.busy;
  if (slot.busy) plan.previous_round = slot.last_round;
  plan.download = needs_download;
  plan.ops = RoundOps(needs_download);
  slot.busy = true;
  slot.last_round = round_id;
  in_flight_[round_id] = plan.staging_slot;
  return plan;
}

void StreamPlanner::Completed(uint64_t round_id) {
  auto it = in_flight_.find(round_id);
  if (it == in_flight_.end()) return;
  Slot& slot = slots_[it->second];
  if (slot.busy && slot.last_round == round_id) slot.busy = false;
  in_flight_.erase(it);
}

int32_t StreamPlanner::in_flight() const { return static_cast<int32_t>(in_flight_.size()); }

int32_t StreamPlanner::staging_slots() const { return static_cast<int32_t>(slots_.size()); }

// --- SimulateStreams ------------------------------------------------------------------------------

namespace {

// Three in-order streams and the events recorded on them so far, in enqueue order.
class Timeline {
 public:
  // Enqueues `plan`'s ops at host time `submit` and returns when each part ran.
  RoundTimes Run(const RoundPlan& plan, const OpCost& cost, double submit) {
    RoundTimes t;
    t.submit = submit;
    for (const StreamOp& op : plan.ops) {
      double& tail = stream_end_[static_cast<int>(op.stream)];
      const double start = std::max(tail, submit);  // the stream is free and the op is enqueued
      const std::pair<int32_t, EventKind> event{plan.staging_slot, op.event};
      switch (op.kind) {
        case OpKind::kWaitEvent: {
          auto recorded = event_time_.find(event);  // the most recent record enqueued before this wait
          tail = recorded == event_time_.end() ? start : std::max(start, recorded->second);
          break;
        }
        case OpKind::kRecordEvent:
          tail = event_time_[event] = start;
          if (op.event == EventKind::kDone) t.done = start;
          break;
        case OpKind::kUpload: tail = Work(start, cost.upload_us, t.upload_start, t.upload_end); break;
        case OpKind::kCompute: tail = Work(start, cost.compute_us, t.compute_start, t.compute_end); break;
        case OpKind::kDownload: tail = Work(start, cost.download_us, t.download_start, t.download_end); break;
      }
    }
    return t;
  }

 private:
  static double Work(double start, double duration, double& start_out, double& end_out) {
    start_out = start;
    end_out = start + duration;
    return end_out;
  }

  double stream_end_[3] = {0, 0, 0};                             // by StreamKind
  std::map<std::pair<int32_t, EventKind>, double> event_time_;  // (slot, event) -> when it fired
};

}  // namespace

std::vector<RoundTimes> SimulateStreams(const std::vector<RoundPlan>& plans, const std::vector<OpCost>& costs,
                                        const std::vector<double>& submit_us) {
  Timeline timeline;
  std::map<uint64_t, double> done;  // round id -> its kDone
  std::vector<RoundTimes> times;
  times.reserve(plans.size());
  double host = 0;  // the host enqueues rounds in order
  for (size_t i = 0; i < plans.size(); ++i) {
    const RoundPlan& plan = plans[i];
    double submit = std::max(host, i < submit_us.size() ? submit_us[i] : 0.0);
    if (plan.wait_for_slot) {
      auto previous = done.find(plan.previous_round);
      if (previous != done.end()) submit = std::max(submit, previous->second);  // the host waits
    }
    host = submit;
    times.push_back(timeline.Run(plan, i < costs.size() ? costs[i] : OpCost{}, submit));
    done[plan.round_id] = times.back().done;
  }
  return times;
}

}  // namespace cellserve::gpu
