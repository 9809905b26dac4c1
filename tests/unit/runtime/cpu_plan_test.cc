#include "runtime/cpu_plan.h"

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(PlanCpusTest, DevicesTakeTheLastCpusOneEachAndTheRestGoToEverythingElse) {
  auto plan = PlanCpus({0, 1, 2, 3, 4, 5}, 2);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->device_cpus, (std::vector<int>{4, 5}));
  EXPECT_EQ(plan->other_cpus, (std::vector<int>{0, 1, 2, 3}));
}

TEST(PlanCpusTest, SortsAndDropsRepeatsFirst) {
  // A container may allow scattered CPUs in any order (cpuset "7,2,5").
  auto plan = PlanCpus({7, 2, 5, 2}, 1);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->device_cpus, (std::vector<int>{7}));
  EXPECT_EQ(plan->other_cpus, (std::vector<int>{2, 5}));
}

TEST(PlanCpusTest, NeedsOneCpuMoreThanDeviceThreadsAndSaysHowMany) {
  auto plan = PlanCpus({0, 1}, 2);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("need 3 CPUs"), std::string::npos) << plan.status().message();
  EXPECT_NE(plan.status().message().find("may use 2"), std::string::npos) << plan.status().message();
  // Repeats do not count twice.
  EXPECT_FALSE(PlanCpus({3, 3}, 1).ok());
  EXPECT_TRUE(PlanCpus({3, 4}, 1).ok());
}

TEST(PlanCpusTest, RefusesNoDeviceThreads) {
  EXPECT_EQ(PlanCpus({0, 1, 2}, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanCpus({0, 1, 2}, -1).status().code(), StatusCode::kInvalidArgument);
}

TEST(DescribeCpuPlanTest, NamesSingleCpusRangesAndLists) {
  EXPECT_EQ(DescribeCpuPlan(*PlanCpus({0, 1}, 1)), "device threads on CPU 1; everything else on CPU 0");
  EXPECT_EQ(DescribeCpuPlan(*PlanCpus({0, 1, 2, 3, 4, 5}, 2)),
            "device threads on CPUs 4, 5; everything else on CPUs 0-3");
  EXPECT_EQ(DescribeCpuPlan(*PlanCpus({0, 2, 5, 9}, 1)), "device threads on CPU 9; everything else on CPUs 0, 2, 5");
  EXPECT_EQ(DescribeCpuPlan(CpuPlan{}), "not pinned");
  EXPECT_EQ(DescribeCpus({}), "no CPUs");
  EXPECT_EQ(DescribeCpus({4}), "CPU 4");
  EXPECT_EQ(DescribeCpus({0, 1}), "CPUs 0, 1");
  EXPECT_EQ(DescribeCpus({2, 3, 4, 5}), "CPUs 2-5");
}

}  // namespace
}  // namespace cellserve
