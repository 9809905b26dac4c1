// StreamPlanner (staging slots, host waits, the op lists) and the stream timeline it produces:
// copies of one round overlap the compute of the next, steady state is compute-bound, and the same
// ops on a single copy stream lose the overlap (why uploads and downloads have separate streams).
#include "kernels/gpu/stream_plan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cellserve::gpu {
namespace {

using S = StreamKind;
using O = OpKind;
using E = EventKind;

bool Same(const StreamOp& a, const StreamOp& b) {
  return a.stream == b.stream && a.kind == b.kind && a.event == b.event;
}

bool Same(const std::vector<StreamOp>& a, const std::vector<StreamOp>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!Same(a[i], b[i])) return false;
  return true;
}

std::vector<StreamOp> ExpectedOps(bool download) {
  std::vector<StreamOp> ops = {
      {S::kUpload, O::kUpload},
      {S::kUpload, O::kRecordEvent, E::kUploaded},
      {S::kCompute, O::kWaitEvent, E::kUploaded},
      {S::kCompute, O::kCompute},
      {S::kCompute, O::kRecordEvent, E::kComputed},
  };
  if (download) {
    ops.push_back({S::kDownload, O::kWaitEvent, E::kComputed});
    ops.push_back({S::kDownload, O::kDownload});
    ops.push_back({S::kDownload, O::kRecordEvent, E::kDone});
  } else {
    ops.push_back({S::kCompute, O::kRecordEvent, E::kDone});
  }
  return ops;
}

TEST(StreamPlanner, OpListsAsSpecified) {
  StreamPlanner planner(3);
  const RoundPlan with = planner.Plan(1, true);
  const RoundPlan without = planner.Plan(2, false);
  EXPECT_TRUE(with.download);
  EXPECT_FALSE(without.download);
  EXPECT_TRUE(Same(with.ops, ExpectedOps(true)));
  EXPECT_TRUE(Same(without.ops, ExpectedOps(false)));
  ASSERT_EQ(with.ops.size(), 8u);
  ASSERT_EQ(without.ops.size(), 6u);
  EXPECT_TRUE(Same(without.ops.back(), StreamOp{S::kCompute, O::kRecordEvent, E::kDone}));
  EXPECT_TRUE(Same(with.ops.back(), StreamOp{S::kDownload, O::kRecordEvent, E::kDone}));
}

TEST(StreamPlanner, SlotsRoundRobinAndWaitOnlyWhenReusedBeforeCompleted) {
  StreamPlanner planner(2);
  EXPECT_EQ(planner.staging_slots(), 2);
  RoundPlan r10 = planner.Plan(10, true), r11 = planner.Plan(11, false);
  EXPECT_EQ(r10.round_id, 10u);
  EXPECT_EQ(r10.staging_slot, 0);
  EXPECT_EQ(r11.staging_slot, 1);
  EXPECT_FALSE(r10.wait_for_slot);
  EXPECT_FALSE(r11.wait_for_slot);
  EXPECT_EQ(planner.in_flight(), 2);

  planner.Completed(10);  // slot 0 free again
  EXPECT_EQ(planner.in_flight(), 1);
  RoundPlan r12 = planner.Plan(12, true);
  EXPECT_EQ(r12.staging_slot, 0);
  EXPECT_FALSE(r12.wait_for_slot);

  RoundPlan r13 = planner.Plan(13, true);  // slot 1 still holds round 11
  EXPECT_EQ(r13.staging_slot, 1);
  EXPECT_TRUE(r13.wait_for_slot);
  EXPECT_EQ(r13.previous_round, 11u);

  RoundPlan r14 = planner.Plan(14, true);  // slot 0 still holds round 12
  EXPECT_EQ(r14.staging_slot, 0);
  EXPECT_TRUE(r14.wait_for_slot);
  EXPECT_EQ(r14.previous_round, 12u);
  EXPECT_EQ(planner.in_flight(), 4);  // 11, 12, 13, 14

  // Round 11 completes after 13 took its slot: slot 1 stays busy with 13.
  planner.Completed(11);
  planner.Completed(12);
  EXPECT_EQ(planner.in_flight(), 2);
  RoundPlan r15 = planner.Plan(15, false);
  EXPECT_EQ(r15.staging_slot, 1);
  EXPECT_TRUE(r15.wait_for_slot);
  EXPECT_EQ(r15.previous_round, 13u);

  planner.Completed(99);  // unknown: ignored
  planner.Completed(12);  // twice: ignored
  EXPECT_EQ(planner.in_flight(), 3);  // 13, 14, 15
  for (uint64_t r : {13u, 14u, 15u}) planner.Completed(r);
  EXPECT_EQ(planner.in_flight(), 0);
  RoundPlan r16 = planner.Plan(16, true);
  EXPECT_EQ(r16.staging_slot, 0);
  EXPECT_FALSE(r16.wait_for_slot);
}

TEST(StreamPlanner, AtLeastOneSlot) {
  StreamPlanner planner(0);
  EXPECT_EQ(planner.staging_slots(), 1);
  EXPECT_FALSE(planner.Plan(1, true).wait_for_slot);
  RoundPlan second = planner.Plan(2, true);
  EXPECT_EQ(second.staging_slot, 0);
  EXPECT_TRUE(second.wait_for_slot);
  EXPECT_EQ(second.previous_round, 1u);
}

// `rounds` rounds planned back to back (none completed in between: the host submits faster than the
// device finishes), all submitted at t = 0, each costing 10 us per stage.
struct Pipeline {
  std::vector<RoundPlan> plans;
  std::vector<RoundTimes> times;
};

Pipeline BackToBack(int32_t staging_slots, int rounds, bool download = true) {
  StreamPlanner planner(staging_slots);
  Pipeline run;
  for (int i = 0; i < rounds; ++i) run.plans.push_back(planner.Plan(100 + i, download));
  run.times = SimulateStreams(run.plans, std::vector<OpCost>(rounds, OpCost{10, 10, 10}),
                              std::vector<double>(rounds, 0.0));
  return run;
}

TEST(SimulateStreams, UploadOfNextRoundOverlapsCompute) {
  const Pipeline run = BackToBack(3, 8);
  ASSERT_EQ(run.times.size(), 8u);
  for (size_t n = 0; n < run.times.size(); ++n) {
    const RoundTimes& t = run.times[n];
    SCOPED_TRACE("round " + std::to_string(n));
    // A pipeline: upload [10n, 10n+10], compute [10n+10, 10n+20], download [10n+20, 10n+30].
    EXPECT_DOUBLE_EQ(t.upload_start, 10.0 * n);
    EXPECT_DOUBLE_EQ(t.upload_end, 10.0 * n + 10);
    EXPECT_DOUBLE_EQ(t.compute_start, 10.0 * n + 10);
    EXPECT_DOUBLE_EQ(t.compute_end, 10.0 * n + 20);
    EXPECT_DOUBLE_EQ(t.download_start, 10.0 * n + 20);
    EXPECT_DOUBLE_EQ(t.download_end, 10.0 * n + 30);
    EXPECT_DOUBLE_EQ(t.done, 10.0 * n + 30);
    if (n + 1 < run.times.size()) {
      EXPECT_LT(run.times[n + 1].upload_start, t.compute_end);     // the copy overlaps the compute
      EXPECT_LT(run.times[n + 1].compute_start, t.download_end);   // and so does the download
    }
  }
}

TEST(SimulateStreams, SteadyStateIsComputeBound) {
  const Pipeline run = BackToBack(3, 20);
  for (size_t n = 1; n < run.times.size(); ++n) {
    EXPECT_DOUBLE_EQ(run.times[n].done - run.times[n - 1].done, 10.0) << n;  // one round per 10 us
    EXPECT_DOUBLE_EQ(run.times[n].compute_start, run.times[n - 1].compute_end) << n;  // never idle
  }
  // With the slots reused, the host waited only as long as the pipeline needed anyway.
  EXPECT_TRUE(run.plans[3].wait_for_slot);
  EXPECT_DOUBLE_EQ(run.times[3].submit, run.times[0].done);
  EXPECT_DOUBLE_EQ(run.times[19].done, 19 * 10.0 + 30);
}

TEST(SimulateStreams, RoundsWithoutDownloadFinishOnTheComputeStream) {
  const Pipeline run = BackToBack(2, 6, /*download=*/false);
  ASSERT_EQ(run.times.size(), 6u);
  for (size_t n = 0; n < run.times.size(); ++n) {
    EXPECT_DOUBLE_EQ(run.times[n].done, run.times[n].compute_end) << n;
    EXPECT_DOUBLE_EQ(run.times[n].download_end, 0.0) << n;  // no download op: its times stay 0
    if (n > 0) {
      EXPECT_DOUBLE_EQ(run.times[n].done - run.times[n - 1].done, 10.0) << n;
    }
  }
}

// Two staging slots, rounds submitted faster than they complete: round n+2 reuses round n's slot,
// so the host waits for round n's done before enqueuing it, and the pipeline runs at 2 rounds per
// 30 us (15 us per round) instead of 10.
TEST(SimulateStreams, HostWaitsForTheSlotWithTwoSlots) {
  const Pipeline run = BackToBack(2, 6);
  EXPECT_FALSE(run.plans[0].wait_for_slot);
  EXPECT_FALSE(run.plans[1].wait_for_slot);
  for (size_t n = 2; n < run.plans.size(); ++n) {
    SCOPED_TRACE("round " + std::to_string(n));
    ASSERT_TRUE(run.plans[n].wait_for_slot);
    EXPECT_EQ(run.plans[n].previous_round, run.plans[n - 2].round_id);
    EXPECT_DOUBLE_EQ(run.times[n].submit, run.times[n - 2].done);  // the host waited
    EXPECT_GT(run.times[n].submit, 0.0);
    EXPECT_DOUBLE_EQ(run.times[n].upload_start, run.times[n].submit);
  }
  EXPECT_DOUBLE_EQ(run.times[0].done, 30.0);
  EXPECT_DOUBLE_EQ(run.times[1].done, 40.0);
  EXPECT_DOUBLE_EQ(run.times[2].submit, 30.0);
  EXPECT_DOUBLE_EQ(run.times[2].done, 60.0);
  EXPECT_DOUBLE_EQ(run.times[3].done, 70.0);
  EXPECT_DOUBLE_EQ(run.times[5].done - run.times[3].done, 30.0);  // 15 us per round
  // Compute idles while the host waits: round 2's compute starts 10 us after round 1's ended.
  EXPECT_DOUBLE_EQ(run.times[2].compute_start - run.times[1].compute_end, 10.0);
}

// The counter-example: the same rounds with uploads AND downloads on one copy stream. Round n+1's
// upload is enqueued behind round n's download, which waits for round n's compute, so it cannot
// overlap that compute: every round pays upload + compute + download in sequence.
std::vector<RoundPlan> OneCopyStreamPlans(int rounds, int32_t staging_slots) {
  std::vector<RoundPlan> plans;
  for (int i = 0; i < rounds; ++i) {
    RoundPlan plan;
    plan.round_id = 100 + i;
    plan.staging_slot = i % staging_slots;
    plan.download = true;
    plan.ops = {
        {S::kUpload, O::kUpload},
        {S::kUpload, O::kRecordEvent, E::kUploaded},
        {S::kCompute, O::kWaitEvent, E::kUploaded},
        {S::kCompute, O::kCompute},
        {S::kCompute, O::kRecordEvent, E::kComputed},
        {S::kUpload, O::kWaitEvent, E::kComputed},  // the download on the upload stream
        {S::kUpload, O::kDownload},
        {S::kUpload, O::kRecordEvent, E::kDone},
    };
    plans.push_back(plan);
  }
  return plans;
}

TEST(SimulateStreams, OneCopyStreamLosesTheOverlap) {
  const int rounds = 6;
  const std::vector<RoundTimes> times = SimulateStreams(
      OneCopyStreamPlans(rounds, 3), std::vector<OpCost>(rounds, OpCost{10, 10, 10}),
      std::vector<double>(rounds, 0.0));
  for (int n = 0; n + 1 < rounds; ++n) {
    SCOPED_TRACE("round " + std::to_string(n));
    EXPECT_GE(times[n + 1].upload_start, times[n].compute_end);  // no overlap
    EXPECT_DOUBLE_EQ(times[n + 1].upload_start, times[n].download_end);
    EXPECT_DOUBLE_EQ(times[n + 1].done - times[n].done, 30.0);  // 30 us per round, not 10
  }
  EXPECT_DOUBLE_EQ(times[rounds - 1].done, 30.0 * rounds);
  // Against the planner's three streams on the same load: 3x the throughput.
  const Pipeline two_streams = BackToBack(3, rounds);
  EXPECT_DOUBLE_EQ(two_streams.times[rounds - 1].done, 10.0 * (rounds - 1) + 30);
}

// CUDA's rule: a wait sees the most recent record enqueued BEFORE it, not a later one; a wait on
// an event never recorded does not block.
TEST(SimulateStreams, WaitsSeeTheRecordEnqueuedBeforeThem) {
  RoundPlan waits_first;  // waits on slot 0's kComputed before anything recorded it
  waits_first.round_id = 1;
  waits_first.ops = {{S::kDownload, O::kWaitEvent, E::kComputed}, {S::kDownload, O::kDownload},
                     {S::kDownload, O::kRecordEvent, E::kDone}};
  RoundPlan computes;  // then records kComputed after a long compute
  computes.round_id = 2;
  computes.ops = {{S::kCompute, O::kCompute}, {S::kCompute, O::kRecordEvent, E::kComputed},
                  {S::kDownload, O::kWaitEvent, E::kComputed}, {S::kDownload, O::kDownload},
                  {S::kDownload, O::kRecordEvent, E::kDone}};
  const std::vector<RoundTimes> times =
      SimulateStreams({waits_first, computes}, {OpCost{0, 0, 5}, OpCost{0, 100, 5}}, {2.0, 3.0});
  EXPECT_DOUBLE_EQ(times[0].download_start, 2.0);  // not blocked by the later record
  EXPECT_DOUBLE_EQ(times[0].done, 7.0);
  EXPECT_DOUBLE_EQ(times[1].compute_start, 3.0);
  EXPECT_DOUBLE_EQ(times[1].download_start, 103.0);  // blocked by the record before it
  EXPECT_DOUBLE_EQ(times[1].done, 108.0);
}

// The host enqueues rounds in order: a round that need not wait for its slot is still enqueued
// only after the round before it, which did wait.
TEST(SimulateStreams, ARoundAfterAWaitingOneIsNotEnqueuedBeforeIt) {
  StreamPlanner planner(2);
  std::vector<RoundPlan> plans = {planner.Plan(1, true), planner.Plan(2, true), planner.Plan(3, true)};
  planner.Completed(2);  // slot 1 is free again: round 4 need not wait
  plans.push_back(planner.Plan(4, true));
  ASSERT_TRUE(plans[2].wait_for_slot);
  ASSERT_FALSE(plans[3].wait_for_slot);
  const OpCost cost{1, 2, 3};
  const std::vector<RoundTimes> times = SimulateStreams(plans, {cost, cost, cost, cost}, {0, 0, 0, 0});
  EXPECT_DOUBLE_EQ(times[2].submit, times[0].done);  // round 3 waited for round 1
  EXPECT_GT(times[2].submit, 0.0);
  EXPECT_DOUBLE_EQ(times[3].submit, times[2].submit);  // round 4 queued behind it on the host
  EXPECT_GE(times[3].upload_start, times[3].submit);
}

TEST(SimulateStreams, LateSubmissionsAndMissingCosts) {
  StreamPlanner planner(3);
  const std::vector<RoundPlan> plans = {planner.Plan(1, true), planner.Plan(2, true)};
  // Round 2 arrives long after round 1 finished: it starts at its submit, not at the stream's end.
  const std::vector<RoundTimes> times = SimulateStreams(plans, {OpCost{1, 2, 3}}, {5.0, 100.0});
  EXPECT_DOUBLE_EQ(times[0].upload_start, 5.0);
  EXPECT_DOUBLE_EQ(times[0].compute_start, 6.0);
  EXPECT_DOUBLE_EQ(times[0].download_start, 8.0);
  EXPECT_DOUBLE_EQ(times[0].done, 11.0);
  EXPECT_DOUBLE_EQ(times[1].submit, 100.0);
  EXPECT_DOUBLE_EQ(times[1].upload_start, 100.0);
  EXPECT_DOUBLE_EQ(times[1].done, 100.0);  // no cost given: every op takes 0

  // Fewer submit times than plans: the rest are enqueued as soon as the host may (0 here).
  const std::vector<RoundTimes> early = SimulateStreams(plans, {OpCost{1, 2, 3}, OpCost{1, 2, 3}}, {5.0});
  ASSERT_EQ(early.size(), 2u);
  EXPECT_DOUBLE_EQ(early[1].submit, 5.0);  // not before round 1, which the host enqueued first
  EXPECT_DOUBLE_EQ(early[1].upload_start, 6.0);  // behind round 1's upload
}

}  // namespace
}  // namespace cellserve::gpu
