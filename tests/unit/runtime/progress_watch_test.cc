// ProgressWatch: stuck only while work is outstanding and none of it finishes; idle and busy
// parts never are; LongestStuck picks the part stuck longest beyond the limit.
#include "runtime/progress_watch.h"

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(ProgressWatchTest, AnIdlePartIsNeverStuckHoweverLongAgoItWorked) {
  ProgressWatch w;
  EXPECT_EQ(w.StuckForUs(1'000'000'000), 0);
  w.Began(100);
  w.Ended(200);
  EXPECT_EQ(w.outstanding(), 0);
  EXPECT_EQ(w.StuckForUs(1'000'000'000), 0);
}

TEST(ProgressWatchTest, WorkOutstandingCountsFromItsHandingOverWhenThePartWasIdle) {
  ProgressWatch w;
  w.Began(1'000);  // long after any earlier work: the clock starts here, not at the last Ended
  EXPECT_EQ(w.StuckForUs(1'500), 500);
  w.Began(1'400);  // more work queued behind it moves nothing
  EXPECT_EQ(w.StuckForUs(2'000), 1'000);
}

TEST(ProgressWatchTest, APartThatKeepsFinishingWorkIsNotStuckHoweverLongItsQueue) {
  ProgressWatch w;
  for (int i = 0; i < 10; ++i) w.Began(0);
  for (int i = 1; i <= 9; ++i) w.Ended(i * 1'000);  // one a millisecond, one left
  EXPECT_EQ(w.outstanding(), 1);
  EXPECT_EQ(w.StuckForUs(9'250), 250);  // since the last one finished, not since the queue began
  w.Ended(10'000);
  EXPECT_EQ(w.StuckForUs(50'000), 0);
}

TEST(ProgressWatchTest, AClockThatReadsEarlierThanTheProgressIsNotNegative) {
  ProgressWatch w;
  w.Began(5'000);
  EXPECT_EQ(w.StuckForUs(4'000), 0);
}

TEST(ProgressWatchTest, LongestStuckNamesThePartStuckLongestBeyondTheLimit) {
  ProgressWatch idle, busy, stuck_a, stuck_b;
  busy.Began(0);
  busy.Ended(9'900);
  busy.Began(9'950);
  stuck_a.Began(2'000);
  stuck_b.Began(1'000);
  const ProgressWatch* parts[] = {&idle, &busy, &stuck_a, &stuck_b};

  StuckPart p = LongestStuck(parts, 4, 10'000, 5'000);
  EXPECT_TRUE(p.stuck);
  EXPECT_EQ(p.index, 3);
  EXPECT_EQ(p.for_us, 9'000);

  p = LongestStuck(parts, 4, 10'000, 9'000);  // at the limit is not beyond it
  EXPECT_FALSE(p.stuck);
  EXPECT_EQ(p.index, -1);

  EXPECT_FALSE(LongestStuck(parts, 4, 10'000, 0).stuck) << "a limit of 0 turns the check off";
  EXPECT_FALSE(LongestStuck(parts, 0, 10'000, 1).stuck);
}

}  // namespace
}  // namespace cellserve
