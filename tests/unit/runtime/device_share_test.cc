// DeviceShare (runtime/device_share.h): whose round a shared device runs next, and how many it holds.
#include "runtime/device_share.h"

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(DeviceShareTest, AModelAloneKeepsItsLookahead) {
  DeviceShare share(3, 2);
  EXPECT_TRUE(share.Room(100));  // nobody busy
  share.SetBusy(1, true);
  EXPECT_TRUE(share.Room(100));  // one busy: its scheduler's lookahead is the bound
  share.SetBusy(2, true);
  EXPECT_TRUE(share.Room(1));
  EXPECT_FALSE(share.Room(2));   // two busy: the device holds two rounds at most
  share.SetBusy(1, false);
  EXPECT_TRUE(share.Room(100));
  EXPECT_EQ(share.busy_models(), 1);
  share.SetBusy(2, true);        // no change
  EXPECT_EQ(share.busy_models(), 1);
}

TEST(DeviceShareTest, TheLeastChargedModelGoesFirst) {
  DeviceShare share(3, 1);
  for (int m = 0; m < 3; ++m) share.SetBusy(m, true);
  EXPECT_EQ(share.Order(), (std::vector<int>{0, 1, 2}));  // ties: the lower index
  share.Charge(0, 3500);  // a big model's round
  share.Charge(1, 100);   // a small one's
  EXPECT_EQ(share.Order(), (std::vector<int>{2, 1, 0}));
  share.Charge(2, 200);
  share.Charge(1, 100);
  EXPECT_EQ(share.Order(), (std::vector<int>{1, 2, 0}));
  share.Charge(1, 0);  // nothing, not negative
  share.Charge(1, -5);
  share.Charge(7, 10);  // unknown: ignored
  EXPECT_EQ(share.charged_us(1), 200);
  EXPECT_EQ(share.charged_us(7), 0);
}

TEST(DeviceShareTest, IdleTimeEarnsNoCredit) {
  DeviceShare share(2, 2);
  share.SetBusy(0, true);
  share.Charge(0, 1'000'000);  // model 0 ran alone for a second
  share.SetBusy(1, true);      // model 1 arrives: it starts level, not a second ahead
  EXPECT_EQ(share.charged_us(1), 1'000'000);
  share.Charge(0, 10);
  EXPECT_EQ(share.Order().front(), 1);
  // A model ahead of the others keeps its charge when it comes back.
  share.Charge(1, 5'000'000);
  share.SetBusy(1, false);
  share.SetBusy(1, true);
  EXPECT_EQ(share.charged_us(1), 6'000'000);
  EXPECT_EQ(share.Order().front(), 0);
}

// The floor is held while the device is idle: a model that turns busy in a gap between another
// model's requests starts level with what that model ran, and both models turning busy at once
// start level too. (It kept 0 against the other's hour and went first for an hour.)
TEST(DeviceShareTest, AModelArrivingWhileTheDeviceIsIdleGetsNoCreditEither) {
  DeviceShare share(2, 2);
  share.SetBusy(0, true);
  share.Charge(0, 3'600'000'000);  // an hour alone
  share.SetBusy(0, false);         // a gap
  share.SetBusy(1, true);          // model 1 arrives in it
  EXPECT_EQ(share.charged_us(1), 3'600'000'000);
  share.SetBusy(0, true);
  EXPECT_EQ(share.charged_us(0), 3'600'000'000);
  share.Charge(1, 1000);
  EXPECT_EQ(share.Order().front(), 0) << "model 1 must not go first for an hour";
  // Both idle, then both busy in one pass: neither keeps a lead from before.
  DeviceShare pair(2, 2);
  pair.SetBusy(0, true);
  pair.Charge(0, 500);
  pair.SetBusy(0, false);
  pair.SetBusy(0, true);
  pair.SetBusy(1, true);
  EXPECT_EQ(pair.charged_us(1), 500);
}

}  // namespace
}  // namespace cellserve
