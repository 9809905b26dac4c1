// cluster/join_slots.h: the node agent's router-address table, without threads or sockets. The
// "connected" table is a set the test sets, as the agent's actor does.
#include "cluster/join_slots.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace cellserve::cluster {
namespace {

class JoinSlotsTest : public ::testing::Test {
 protected:
  void Resolve(size_t entry, const std::vector<std::string>& ips) {
    table_.Resolved(entry, "routers:7000", "routers", 7000, ips, connected_fn_);
  }
  const JoinSlot* Find(size_t entry, const std::string& ip) const {
    for (const JoinSlot& slot : table_.slots())
      if (slot.entry == entry && slot.host == ip) return &slot;
    return nullptr;
  }
  std::set<size_t> Links() const {
    std::set<size_t> links;
    for (const JoinSlot& slot : table_.slots()) links.insert(slot.link);
    return links;
  }

  JoinSlots table_;
  std::set<size_t> connected_;
  JoinSlots::IsConnected connected_fn_ = [this](size_t link) { return connected_.count(link) > 0; };
};

TEST_F(JoinSlotsTest, EachAddressGetsASlotWithItsOwnLink) {
  Resolve(0, {"10.0.0.1", "10.0.0.2"});
  ASSERT_EQ(table_.slots().size(), 2u);
  const JoinSlot* a = Find(0, "10.0.0.1");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->port, 7000);
  EXPECT_EQ(a->display, "routers:7000 (10.0.0.1)");
  EXPECT_TRUE(a->current);
  EXPECT_EQ(Links(), (std::set<size_t>{0, 1}));
  EXPECT_EQ(table_.links_used(), 2u);
  Resolve(0, {"10.0.0.2", "10.0.0.1"});  // the same addresses again, in another order
  EXPECT_EQ(table_.slots().size(), 2u);
  EXPECT_EQ(table_.links_used(), 2u);
}

TEST_F(JoinSlotsTest, AnAddressGivenAsItselfIsShownAsGiven) {
  table_.Resolved(0, "10.0.0.9:7000", "10.0.0.9", 7000, {"10.0.0.9"}, connected_fn_);
  ASSERT_EQ(table_.slots().size(), 1u);
  EXPECT_EQ(table_.slots()[0].display, "10.0.0.9:7000");
}

TEST_F(JoinSlotsTest, AGoneAddressNotConnectedIsDroppedAndItsLinkReused) {
  Resolve(0, {"10.0.0.1", "10.0.0.2"});
  const size_t link_of_1 = Find(0, "10.0.0.1")->link;
  Resolve(0, {"10.0.0.2"});
  EXPECT_EQ(Find(0, "10.0.0.1"), nullptr);
  ASSERT_EQ(table_.slots().size(), 1u);
  Resolve(0, {"10.0.0.2", "10.0.0.3"});
  ASSERT_NE(Find(0, "10.0.0.3"), nullptr);
  EXPECT_EQ(Find(0, "10.0.0.3")->link, link_of_1);
  EXPECT_EQ(table_.links_used(), 2u);
}

// Several dropped links are handed out again, each once.
TEST_F(JoinSlotsTest, DroppedLinksAreReusedEachOnce) {
  Resolve(0, {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"});
  Resolve(0, {"10.0.0.1"});
  Resolve(0, {"10.0.0.1", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"});
  EXPECT_EQ(table_.slots().size(), 5u);
  EXPECT_EQ(Links().size(), 5u) << "two new addresses got the same link";
  EXPECT_EQ(table_.links_used(), 5u) << "three dropped links, four new addresses: one new number";
}

// A known address keeps its slot across resolutions, with what the connector noted on it (said
// that it cannot be reached, not before when): a fresh slot each time would log every round.
TEST_F(JoinSlotsTest, AKnownAddressKeepsItsSlotAndWhatWasNotedOnIt) {
  Resolve(0, {"10.0.0.1"});
  table_.slots()[0].warned = true;
  const size_t link = table_.slots()[0].link;
  Resolve(0, {"10.0.0.1", "10.0.0.2"});
  const JoinSlot* a = Find(0, "10.0.0.1");
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->warned);
  EXPECT_EQ(a->link, link);
}

TEST_F(JoinSlotsTest, AGoneAddressStillConnectedStaysUntilItDisconnects) {
  Resolve(0, {"10.0.0.1"});
  const size_t link = Find(0, "10.0.0.1")->link;
  connected_.insert(link);
  Resolve(0, {"10.0.0.2"});
  ASSERT_NE(Find(0, "10.0.0.1"), nullptr) << "its router still serves: keep its link";
  EXPECT_FALSE(Find(0, "10.0.0.1")->current) << "not tried again once lost";
  EXPECT_NE(Find(0, "10.0.0.2")->link, link);
  EXPECT_TRUE(table_.AnyConnected(0, connected_fn_));
  connected_.erase(link);
  EXPECT_FALSE(table_.AnyConnected(0, connected_fn_));
  Resolve(0, {"10.0.0.2"});
  EXPECT_EQ(Find(0, "10.0.0.1"), nullptr);
  EXPECT_EQ(table_.slots().size(), 1u);
}

TEST_F(JoinSlotsTest, AnAddressBackInTheResolutionIsTriedAgain) {
  Resolve(0, {"10.0.0.1"});
  connected_.insert(Find(0, "10.0.0.1")->link);
  Resolve(0, {"10.0.0.2"});
  EXPECT_FALSE(Find(0, "10.0.0.1")->current);
  Resolve(0, {"10.0.0.1", "10.0.0.2"});
  EXPECT_TRUE(Find(0, "10.0.0.1")->current);
  EXPECT_EQ(table_.slots().size(), 2u);
}

TEST_F(JoinSlotsTest, AFailedLookupKeepsTheKnownAddresses) {
  Resolve(0, {"10.0.0.1"});
  Resolve(0, {});
  ASSERT_NE(Find(0, "10.0.0.1"), nullptr);
  EXPECT_TRUE(Find(0, "10.0.0.1")->current) << "a DNS blip must not stop the retries";
}

TEST_F(JoinSlotsTest, EntriesAreIndependent) {
  Resolve(0, {"10.0.0.1"});
  Resolve(1, {"10.0.0.1"});
  EXPECT_EQ(table_.slots().size(), 2u) << "the same address under two --join entries";
  connected_.insert(Find(1, "10.0.0.1")->link);
  EXPECT_FALSE(table_.AnyConnected(0, connected_fn_));
  EXPECT_TRUE(table_.AnyConnected(1, connected_fn_));
  Resolve(0, {"10.0.0.7"});
  EXPECT_EQ(Find(0, "10.0.0.1"), nullptr);
  EXPECT_NE(Find(1, "10.0.0.1"), nullptr);
}

// Routers restarted under a new IP every time, for a long time: the table (and the links, which
// size the agent's per-router state) stays at the addresses in use.
TEST_F(JoinSlotsTest, RotatingAddressesDoNotGrowTheTable) {
  for (int i = 0; i < 10000; ++i) {
    Resolve(0, {"10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250), "10.0.0.1"});
    if (i % 3 == 0) connected_.insert(Find(0, "10.0.0.1")->link);
  }
  EXPECT_EQ(table_.slots().size(), 2u);
  EXPECT_LE(table_.links_used(), 3u);
}

}  // namespace
}  // namespace cellserve::cluster
