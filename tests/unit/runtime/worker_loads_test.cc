// WorkerLoads (runtime/worker_loads.h): where a node places requests.
#include "runtime/worker_loads.h"

#include <gtest/gtest.h>

namespace cellserve {
namespace {

WorkerLoads TwoWorkers(int models, int64_t max_requests) {
  WorkerLoads loads(models, max_requests);
  loads.Add(0);
  loads.Add(1);
  return loads;
}

TEST(WorkerLoadsTest, LeastOutstandingWorkThenFewestInFlightThenLowestIndex) {
  WorkerLoads loads = TwoWorkers(1, 0);
  EXPECT_EQ(loads.Pick(0), 0);  // a tie everywhere: the lowest index
  loads.Place(0, 0, 10);
  EXPECT_EQ(loads.Pick(0), 1);  // worker 0 has 10 estimated cells
  loads.Place(1, 0, 10);
  loads.Report(0, 3);           // the report replaces worker 0's estimates
  EXPECT_EQ(loads.Pick(0), 0);
  loads.Report(1, 3);
  loads.Place(1, 0, 0);         // same cells: the fewer requests in flight wins
  EXPECT_EQ(loads.Pick(0), 0);
  EXPECT_EQ(loads.in_flight(1), 2);
  EXPECT_EQ(loads.assigned(1), 2);
}

TEST(WorkerLoadsTest, AModelFullOnTheQuietWorkerGoesWhereItHasRoom) {
  // Model 0 keeps worker 1 busy; model 1 admits 2 per worker. Its third request would be refused
  // on worker 0 (full for it) while worker 1 had room: it goes to worker 1.
  WorkerLoads loads = TwoWorkers(2, 2);
  loads.Report(1, 500);
  EXPECT_EQ(loads.Pick(1), 0);
  loads.Place(0, 1, 5);
  EXPECT_EQ(loads.Pick(1), 0);
  loads.Place(0, 1, 5);
  EXPECT_EQ(loads.in_flight(0, 1), 2);
  EXPECT_EQ(loads.Pick(1), 1);
  EXPECT_EQ(loads.Pick(0), 0);  // model 0 has room on both: the load decides
  // Full everywhere: the least loaded takes it (its scheduler refuses it, in one place).
  loads.Place(1, 1, 5);
  loads.Place(1, 1, 5);
  EXPECT_EQ(loads.Pick(1), 0);
  loads.Report(0, 1000);
  loads.Report(1, 2000);
  EXPECT_EQ(loads.Pick(1), 0);
  // One finished on the busier worker: room there again, and it goes there.
  WorkerLoads::Placement p = loads.Place(1, 1, 5);
  EXPECT_EQ(loads.in_flight(1, 1), 3);
  loads.Finished(p, true);
  loads.Finished(WorkerLoads::Placement{1, 1, 5, 0}, true);
  EXPECT_EQ(loads.in_flight(1, 1), 1);
  EXPECT_EQ(loads.Pick(1), 1);
}

TEST(WorkerLoadsTest, NoBoundMeansLoadAlone) {
  WorkerLoads loads = TwoWorkers(1, 0);
  loads.Report(1, 100);
  for (int i = 0; i < 50; ++i) loads.Place(0, 0, 1);
  EXPECT_EQ(loads.Pick(0), 0);  // 50 estimated cells < 100 reported
}

TEST(WorkerLoadsTest, ARefusalBeforeAdmissionTakesItsEstimateBackUnlessAReportCameSince) {
  WorkerLoads loads = TwoWorkers(1, 0);
  WorkerLoads::Placement refused = loads.Place(0, 0, 40);
  loads.Finished(refused, /*ran=*/false);
  EXPECT_EQ(loads.Pick(0), 0);  // back to a tie
  EXPECT_EQ(loads.in_flight(0), 0);
  WorkerLoads::Placement ran = loads.Place(0, 0, 40);
  loads.Finished(ran, /*ran=*/true);  // its worker's next report takes it back, not this
  EXPECT_EQ(loads.Pick(0), 1);
  WorkerLoads::Placement late = loads.Place(1, 0, 40);
  loads.Report(1, 70);                // counts `late` already
  loads.Finished(late, /*ran=*/false);
  EXPECT_EQ(loads.reported_cells(1), 70);
  EXPECT_EQ(loads.Pick(0), 0);        // 40 < 70: the report was not reduced by the estimate
}

TEST(WorkerLoadsTest, AnEndedWorkerGetsNothingAndItsLoadGoes) {
  WorkerLoads loads = TwoWorkers(1, 0);
  loads.Report(0, 100);
  loads.Remove(1);
  EXPECT_FALSE(loads.running(1));
  EXPECT_EQ(loads.Pick(0), 0);
  loads.Remove(0);
  EXPECT_EQ(loads.reported_cells(0), 0);
  EXPECT_EQ(loads.Pick(0), -1);
  WorkerLoads none(1, 4);
  EXPECT_EQ(none.Pick(0), -1);
  EXPECT_EQ(none.Place(3, 0, 1).worker, -1);  // an unknown worker is not counted
}

}  // namespace
}  // namespace cellserve
