// The router's placement policy on hand-built node tables: every policy's choice, model
// awareness, the three load estimates, node down and retry, drain, bounds and errors, p2c
// switching in `auto`, and determinism under a seed. A FakeClock drives report times.
// Most tables set their loads by load reports, so they use the report_plus_placed estimate
// (Reported()); the default estimate (own) has its own tests.
#include <gtest/gtest.h>

#include <iterator>
#include <map>
#include <random>
#include <set>

#include "runtime/router_policy.h"

namespace cellserve {
namespace {

// Options whose loads come from load reports.
RouterPolicyOptions Reported() {
  RouterPolicyOptions o;
  o.estimate = LoadEstimate::kReportPlusPlaced;
  return o;
}

RouterPolicyOptions With(RoutePolicy policy, uint64_t seed = 1) {
  RouterPolicyOptions o = Reported();
  o.policy = policy;
  o.seed = seed;
  return o;
}

class Table {
 public:
  explicit Table(RouterPolicyOptions options = Reported()) {
    policy = RouterPolicy::Create(options, &clock).value();
  }
  // Node `id` named n<id>, serving `models`, with `devices` devices and `cells` reported.
  void Add(NodeId id, std::vector<std::string> models, int32_t devices = 1, int64_t cells = 0) {
    NodeRegistration reg;
    reg.id = id;
    reg.name = "n" + std::to_string(id);
    reg.models = std::move(models);
    reg.devices = devices;
    ASSERT_TRUE(policy->Register(reg).ok());
    if (cells) {
      ASSERT_TRUE(policy->ReportLoad(id, {cells, 0}).ok());
    }
  }
  NodeId Pick(const std::string& model) {
    auto r = policy->Pick(model);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : 0;
  }
  // Picks n times without placing anything; counts per node.
  std::map<NodeId, int> Counts(const std::string& model, int n) {
    std::map<NodeId, int> c;
    for (int i = 0; i < n; ++i) ++c[Pick(model)];
    return c;
  }
  FakeClock clock{1000};
  std::unique_ptr<RouterPolicy> policy;
};

TEST(RouterPolicyTest, CreateRejectsBadOptions) {
  FakeClock clock;
  auto bad = [&](RouterPolicyOptions o, const Clock* c) {
    auto r = RouterPolicy::Create(o, c);
    return !r.ok() && r.status().code() == StatusCode::kInvalidArgument;
  };
  RouterPolicyOptions o;
  EXPECT_TRUE(bad(o, nullptr));
  EXPECT_TRUE(RouterPolicy::Create(o, &clock).ok());
  o.p2c_threshold = 0;
  EXPECT_TRUE(bad(o, &clock));
  o = {};
  o.max_nodes = 0;
  EXPECT_TRUE(bad(o, &clock));
  o = {};
  o.max_models = 0;
  EXPECT_TRUE(bad(o, &clock));
  o = {};
  o.max_in_flight = 0;
  EXPECT_TRUE(bad(o, &clock));
  o.max_in_flight = (int64_t{1} << 22) + 1;
  EXPECT_TRUE(bad(o, &clock));
  o = {};
  o.report_timeout_us = -1;
  EXPECT_TRUE(bad(o, &clock));
}

TEST(RouterPolicyTest, PolicyNamesRoundTrip) {
  for (RoutePolicy p : {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded, RoutePolicy::kP2C,
                        RoutePolicy::kRoundRobin, RoutePolicy::kRandom}) {
    auto parsed = ParseRoutePolicy(RoutePolicyName(p));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_EQ(std::string(RoutePolicyName(RoutePolicy::kP2C)), "p2c");
  EXPECT_EQ(ParseRoutePolicy("fastest").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(RouterPolicyOptions().policy, RoutePolicy::kAuto);
  EXPECT_EQ(RouterPolicyOptions().p2c_threshold, 8);
  EXPECT_EQ(RouterPolicyOptions().estimate, LoadEstimate::kOwn);
  for (LoadEstimate e :
       {LoadEstimate::kOwn, LoadEstimate::kOwnPlusReported, LoadEstimate::kReportPlusPlaced}) {
    auto parsed = ParseLoadEstimate(LoadEstimateName(e));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, e);
  }
  EXPECT_EQ(std::string(LoadEstimateName(LoadEstimate::kOwnPlusReported)), "own_plus_reported");
  EXPECT_EQ(ParseLoadEstimate("fresh").status().code(), StatusCode::kInvalidArgument);
}

TEST(RouterPolicyTest, EmptyTableIsNotFound) {
  for (RoutePolicy p : {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded, RoutePolicy::kP2C,
                        RoutePolicy::kRoundRobin, RoutePolicy::kRandom}) {
    Table t(With(p));
    auto r = t.policy->Pick("sentiment");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
    EXPECT_NE(r.status().message().find("'sentiment'"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find("live nodes: none"), std::string::npos);
  }
}

TEST(RouterPolicyTest, UnknownModelIsNotFoundAndNamesTheLiveNodes) {
  Table t;
  t.Add(1, {"sentiment"});
  t.Add(2, {"translate", "sentiment"});
  auto r = t.policy->Pick("parse");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("'parse'"), std::string::npos) << m;
  EXPECT_NE(m.find("n1 (sentiment)"), std::string::npos) << m;
  EXPECT_NE(m.find("n2 (sentiment, translate)"), std::string::npos) << m;
}

// With many nodes the message names the first 16 by id (whatever order they joined in) and
// counts the rest.
TEST(RouterPolicyTest, TheNodesInAMessageAreSortedByIdAndTheRestCounted) {
  Table t;
  for (NodeId id = 20; id >= 1; --id) t.Add(id, {"sentiment"});
  auto r = t.policy->Pick("parse");
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  const size_t first = m.find("n1 (sentiment), n2 (sentiment), n3 (sentiment)");
  EXPECT_NE(first, std::string::npos) << m;
  EXPECT_NE(m.find("n16 (sentiment) and 4 more"), std::string::npos) << m;
  EXPECT_EQ(m.find("n17 "), std::string::npos) << m;
}

TEST(RouterPolicyTest, LeastLoadedComparesCellsPerDevice) {
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"m"}, /*devices=*/4, /*cells=*/40);  // 10 per device
  t.Add(2, {"m"}, 1, 8);                          // 8 per device: the least
  t.Add(3, {"m"}, 2, 30);                         // 15 per device
  EXPECT_EQ(t.Counts("m", 10), (std::map<NodeId, int>{{2, 10}}));
  ASSERT_TRUE(t.policy->ReportLoad(2, {12, 0}).ok());  // 12 > 10: node 1 now
  EXPECT_EQ(t.Pick("m"), 1u);
  ASSERT_TRUE(t.policy->ReportLoad(3, {2, 0}).ok());  // 1 per device
  EXPECT_EQ(t.Pick("m"), 3u);
  // devices 0 in a report leaves the count; another value changes it.
  ASSERT_TRUE(t.policy->ReportLoad(3, {28, 0}).ok());  // 14 per device on 2
  EXPECT_EQ(t.Pick("m"), 1u);
  ASSERT_TRUE(t.policy->ReportLoad(3, {28, 4}).ok());  // 7 per device on 4
  EXPECT_EQ(t.Pick("m"), 3u);
  EXPECT_EQ(t.policy->node(3)->devices, 4);
}

TEST(RouterPolicyTest, LeastLoadedTiesTakeTurns) {
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"m"});
  t.Add(2, {"m"});
  t.Add(3, {"m"});
  std::vector<NodeId> seq;
  for (int i = 0; i < 6; ++i) seq.push_back(t.Pick("m"));
  EXPECT_EQ(seq, (std::vector<NodeId>{1, 2, 3, 1, 2, 3}));
  // A strictly less loaded node wins whatever the turn.
  ASSERT_TRUE(t.policy->ReportLoad(1, {5, 0}).ok());
  ASSERT_TRUE(t.policy->ReportLoad(3, {5, 0}).ok());
  EXPECT_EQ(t.Counts("m", 5), (std::map<NodeId, int>{{2, 5}}));
}

TEST(RouterPolicyTest, PlacedSinceReportCountsUntilTheNextReport) {
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"m"}, 1, 10);
  t.Add(2, {"m"}, 1, 20);
  // Node 1 looks idler, but what was placed there since its report counts.
  ASSERT_TRUE(t.policy->OnPlaced(100, "m", 15, 1).ok());
  EXPECT_EQ(t.policy->node(1)->placed_since_cells, 15);
  EXPECT_EQ(t.Pick("m"), 2u);  // 25 vs 20
  // Answered before the next report: its cells come off again.
  ASSERT_TRUE(t.policy->OnAnswered(100, 1).ok());
  EXPECT_EQ(t.policy->node(1)->placed_since_cells, 0);
  EXPECT_EQ(t.Pick("m"), 1u);
  // Placed, then a report (which includes it): the estimate restarts from the report...
  ASSERT_TRUE(t.policy->OnPlaced(101, "m", 15, 1).ok());
  ASSERT_TRUE(t.policy->ReportLoad(1, {12, 0}).ok());
  EXPECT_EQ(t.policy->node(1)->placed_since_cells, 0);
  EXPECT_EQ(t.policy->node(1)->reported_cells, 12);
  EXPECT_EQ(t.Pick("m"), 1u);
  // ...and its answer after that report does not take its cells off a second time.
  ASSERT_TRUE(t.policy->OnPlaced(102, "m", 3, 1).ok());
  ASSERT_TRUE(t.policy->OnAnswered(101, 1).ok());
  EXPECT_EQ(t.policy->node(1)->placed_since_cells, 3);
  EXPECT_EQ(t.policy->node(1)->in_flight, 1);
  EXPECT_EQ(t.policy->node(1)->reports, 2);
}

TEST(RouterPolicyTest, OwnEstimateCountsThisRoutersCellsInFlightOnly) {
  RouterPolicyOptions o;  // the default: estimate own
  o.policy = RoutePolicy::kLeastLoaded;
  Table t(o);
  t.Add(1, {"m"}, /*devices=*/2, /*cells=*/100000);  // reports do not count...
  t.Add(2, {"m"}, 1);
  ASSERT_TRUE(t.policy->OnPlaced(1, "m", 10, 2).ok());  // 10 per device on node 2
  EXPECT_EQ(t.Pick("m"), 1u);
  ASSERT_TRUE(t.policy->OnPlaced(2, "m", 30, 1).ok());  // 15 per device on node 1
  EXPECT_EQ(t.Pick("m"), 2u);
  EXPECT_EQ(t.policy->node(1)->in_flight_cells, 30);
  EXPECT_EQ(t.policy->node(1)->estimate, 30);
  // ...and answers count at once, whenever they come.
  ASSERT_TRUE(t.policy->ReportLoad(1, {5, 0}).ok());
  ASSERT_TRUE(t.policy->OnAnswered(2, 1).ok());
  EXPECT_EQ(t.policy->node(1)->in_flight_cells, 0);
  EXPECT_EQ(t.Pick("m"), 1u);
  // ...but a report's device count does: 16 cells over 2 devices < 10 over 1, > 10 over 4.
  ASSERT_TRUE(t.policy->OnPlaced(3, "m", 16, 1).ok());
  EXPECT_EQ(t.Pick("m"), 1u);
  ASSERT_TRUE(t.policy->ReportLoad(2, {0, 4}).ok());
  EXPECT_EQ(t.policy->node(2)->estimate, 10);
  EXPECT_EQ(t.Pick("m"), 2u);
  ASSERT_TRUE(t.policy->ReportLoad(2, {0, 1}).ok());
  EXPECT_EQ(t.Pick("m"), 1u);
}

TEST(RouterPolicyTest, OwnPlusReportedAddsWhatOtherRoutersPlaced) {
  RouterPolicyOptions o;
  o.policy = RoutePolicy::kLeastLoaded;
  o.estimate = LoadEstimate::kOwnPlusReported;
  Table t(o);
  t.Add(1, {"m"});
  t.Add(2, {"m"});
  ASSERT_TRUE(t.policy->OnPlaced(1, "m", 10, 1).ok());
  // Node 1 reports 25 with our 10 in flight there: 15 from others. Node 2: 20 from others.
  ASSERT_TRUE(t.policy->ReportLoad(1, {25, 0}).ok());
  ASSERT_TRUE(t.policy->ReportLoad(2, {20, 0}).ok());
  EXPECT_EQ(t.policy->node(1)->others_cells, 15);
  EXPECT_EQ(t.policy->node(1)->estimate, 25);
  EXPECT_EQ(t.Pick("m"), 2u);
  ASSERT_TRUE(t.policy->OnPlaced(2, "m", 10, 2).ok());  // 25 vs 30
  EXPECT_EQ(t.Pick("m"), 1u);
  ASSERT_TRUE(t.policy->OnAnswered(1, 1).ok());  // 15 vs 30: our part counts at once
  EXPECT_EQ(t.policy->node(1)->estimate, 15);
  // A report below our own cells in flight (it counts cells left, we count whole requests):
  // others 0, never negative.
  ASSERT_TRUE(t.policy->ReportLoad(2, {3, 0}).ok());
  EXPECT_EQ(t.policy->node(2)->others_cells, 0);
  EXPECT_EQ(t.policy->node(2)->estimate, 10);
  EXPECT_EQ(t.Pick("m"), 2u);
}

TEST(RouterPolicyTest, LeastLoadedSpreadsABurstBetweenReports) {
  // Four idle nodes, no reports during a burst of 8 requests of 10 cells: two each.
  Table t(With(RoutePolicy::kLeastLoaded));
  for (NodeId id = 1; id <= 4; ++id) t.Add(id, {"m"});
  std::map<NodeId, int> c;
  for (RequestId r = 1; r <= 8; ++r) {
    const NodeId n = t.Pick("m");
    ++c[n];
    ASSERT_TRUE(t.policy->OnPlaced(r, "m", 10, n).ok());
  }
  EXPECT_EQ(c, (std::map<NodeId, int>{{1, 2}, {2, 2}, {3, 2}, {4, 2}}));
}

TEST(RouterPolicyTest, EveryPolicyIsModelAware) {
  for (RoutePolicy p : {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded, RoutePolicy::kP2C,
                        RoutePolicy::kRoundRobin, RoutePolicy::kRandom}) {
    Table t(With(p));
    t.Add(1, {"a"}, 1, 1000);  // the busiest, but the only one with "a"
    t.Add(2, {"b"});
    t.Add(3, {"b", "c"}, 1, 500);
    t.Add(4, {"c"});
    t.Add(5, {"b"});
    EXPECT_EQ(t.Counts("a", 20), (std::map<NodeId, int>{{1, 20}})) << RoutePolicyName(p);
    for (const auto& [node, n] : t.Counts("b", 60)) {
      (void)n;
      EXPECT_TRUE(node == 2 || node == 3 || node == 5) << RoutePolicyName(p) << " " << node;
    }
    for (const auto& [node, n] : t.Counts("c", 60)) {
      (void)n;
      EXPECT_TRUE(node == 3 || node == 4) << RoutePolicyName(p) << " " << node;
    }
  }
}

TEST(RouterPolicyTest, RoundRobinIgnoresLoadAndTurnsPerModel) {
  Table t(With(RoutePolicy::kRoundRobin));
  t.Add(1, {"a", "b"}, 1, 1000);
  t.Add(2, {"a"});
  t.Add(3, {"a", "b"});
  std::vector<NodeId> a, b;
  for (int i = 0; i < 6; ++i) {
    a.push_back(t.Pick("a"));
    if (i < 4) b.push_back(t.Pick("b"));
  }
  EXPECT_EQ(a, (std::vector<NodeId>{1, 2, 3, 1, 2, 3}));
  EXPECT_EQ(b, (std::vector<NodeId>{1, 3, 1, 3}));
}

TEST(RouterPolicyTest, RandomIsUniformAndIgnoresLoad) {
  Table t(With(RoutePolicy::kRandom, 7));
  t.Add(1, {"m"}, 1, 1000);
  t.Add(2, {"m"});
  t.Add(3, {"m"});
  t.Add(4, {"m"});
  auto c = t.Counts("m", 4000);
  ASSERT_EQ(c.size(), 4u);
  for (const auto& [node, n] : c) EXPECT_NEAR(n, 1000, 150) << node;
}

TEST(RouterPolicyTest, P2CTakesTheLessLoadedOfTwo) {
  {
    // Two nodes: both are always the candidates, so the less loaded always wins.
    Table t(With(RoutePolicy::kP2C));
    t.Add(1, {"m"}, 1, 9);
    t.Add(2, {"m"}, 1, 3);
    EXPECT_EQ(t.Counts("m", 50), (std::map<NodeId, int>{{2, 50}}));
  }
  // Ten nodes with loads 0..9: node i wins when drawn with a busier one, probability
  // 2 (9 - i) / 90. The busiest never wins; the idlest about 20% of the time.
  Table t(With(RoutePolicy::kP2C, 3));
  for (NodeId id = 0; id < 10; ++id) t.Add(id + 10, {"m"}, 1, static_cast<int64_t>(id));
  auto c = t.Counts("m", 9000);
  EXPECT_EQ(c.count(19), 0u);
  for (NodeId i = 0; i < 9; ++i)
    EXPECT_NEAR(c[i + 10], 9000.0 * 2 * (9 - i) / 90, 150) << "node " << i + 10;
}

TEST(RouterPolicyTest, AutoSwitchesToP2CAboveTheThreshold) {
  for (int threshold : {4, 8}) {
    RouterPolicyOptions o = Reported();
    o.p2c_threshold = threshold;
    {
      // threshold nodes: a full scan, always the least loaded (node 1).
      Table t(o);
      for (NodeId id = 1; id <= static_cast<NodeId>(threshold); ++id)
        t.Add(id, {"m"}, 1, static_cast<int64_t>(id));
      EXPECT_EQ(t.Counts("m", 200), (std::map<NodeId, int>{{1, 200}})) << threshold;
    }
    {
      // One more: p2c, so others win too, and the busiest never.
      Table t(o);
      for (NodeId id = 1; id <= static_cast<NodeId>(threshold) + 1; ++id)
        t.Add(id, {"m"}, 1, static_cast<int64_t>(id));
      auto c = t.Counts("m", 200);
      EXPECT_GT(c.size(), 2u) << threshold;
      EXPECT_LT(c[1], 200) << threshold;
      EXPECT_EQ(c.count(static_cast<NodeId>(threshold) + 1), 0u) << threshold;
      // Back to a full scan when a node goes down.
      ASSERT_TRUE(t.policy->NodeDown(static_cast<NodeId>(threshold) + 1).ok());
      EXPECT_EQ(t.Counts("m", 50), (std::map<NodeId, int>{{1, 50}})) << threshold;
    }
  }
}

TEST(RouterPolicyTest, AutoCountsOnlyTheNodesServingTheModel) {
  RouterPolicyOptions o = Reported();
  o.p2c_threshold = 3;
  Table t(o);
  t.Add(1, {"m"}, 1, 1);
  t.Add(2, {"m"}, 1, 2);
  t.Add(3, {"m"}, 1, 3);
  for (NodeId id = 4; id <= 10; ++id) t.Add(id, {"other"});
  EXPECT_EQ(t.Counts("m", 50), (std::map<NodeId, int>{{1, 50}}));
}

TEST(RouterPolicyTest, SameSeedSamePlacementsDifferentSeedOthers) {
  for (RoutePolicy p : {RoutePolicy::kP2C, RoutePolicy::kRandom, RoutePolicy::kAuto}) {
    auto run = [p](uint64_t seed) {
      Table t(With(p, seed));
      for (NodeId id = 1; id <= 20; ++id) t.Add(id, {"m"}, 1 + static_cast<int32_t>(id % 3));
      std::vector<NodeId> seq;
      for (RequestId r = 1; r <= 300; ++r) {
        const NodeId n = t.Pick("m");
        seq.push_back(n);
        EXPECT_TRUE(t.policy->OnPlaced(r, "m", static_cast<int64_t>(r % 37), n).ok());
        if (r % 5 == 0) {
          EXPECT_TRUE(t.policy->OnAnswered(r - 3, t.policy->in_flight(r - 3)->node).ok());
        }
        if (r % 17 == 0) {
          EXPECT_TRUE(t.policy->ReportLoad(r % 20 + 1, {static_cast<int64_t>(r), 0}).ok());
        }
      }
      return seq;
    };
    EXPECT_EQ(run(42), run(42)) << RoutePolicyName(p);
    EXPECT_NE(run(42), run(43)) << RoutePolicyName(p);
  }
}

TEST(RouterPolicyTest, RandomFirstDrawsArePinned) {
  // mt19937_64's raw output is standardized, so these are the same on every platform.
  Table t(With(RoutePolicy::kRandom, 1));
  for (NodeId id = 0; id < 10; ++id) t.Add(id, {"m"});
  std::vector<NodeId> seq;
  for (int i = 0; i < 8; ++i) seq.push_back(t.Pick("m"));
  std::mt19937_64 gen(1);
  std::vector<NodeId> expect;
  for (int i = 0; i < 8; ++i) {
    uint64_t r;
    do r = gen(); while (r < (0 - uint64_t{10}) % 10);
    expect.push_back(r % 10);
  }
  EXPECT_EQ(seq, expect);
}

TEST(RouterPolicyTest, NodeDownHandsBackItsRequestsInFlight) {
  Table t(With(RoutePolicy::kRoundRobin));
  t.Add(1, {"a", "b"});
  t.Add(2, {"a"});
  ASSERT_TRUE(t.policy->OnPlaced(30, "a", 5, 1).ok());
  ASSERT_TRUE(t.policy->OnPlaced(10, "b", 7, 1, /*attempt=*/2).ok());
  ASSERT_TRUE(t.policy->OnPlaced(20, "a", 3, 2).ok());
  ASSERT_TRUE(t.policy->OnPlaced(40, "a", 4, 1).ok());
  ASSERT_TRUE(t.policy->OnAnswered(40, 1).ok());
  auto lost = t.policy->NodeDown(1);
  ASSERT_TRUE(lost.ok());
  ASSERT_EQ(lost->size(), 2u);
  EXPECT_EQ((*lost)[0].request, 10u);
  EXPECT_EQ((*lost)[0].model, "b");
  EXPECT_EQ((*lost)[0].cells, 7);
  EXPECT_EQ((*lost)[0].attempt, 2);
  EXPECT_EQ((*lost)[0].node, 1u);
  EXPECT_EQ((*lost)[1].request, 30u);
  EXPECT_EQ((*lost)[1].model, "a");
  EXPECT_EQ((*lost)[1].attempt, 1);
  // Gone from the table and from the requests in flight; node 2's request stays.
  EXPECT_FALSE(t.policy->node(1).has_value());
  EXPECT_EQ(t.policy->nodes(), (std::vector<NodeId>{2}));
  EXPECT_EQ(t.policy->requests_in_flight(), 1);
  EXPECT_FALSE(t.policy->in_flight(30).has_value());
  EXPECT_EQ(t.policy->in_flight(20)->node, 2u);
  EXPECT_EQ(t.Counts("a", 10), (std::map<NodeId, int>{{2, 10}}));
  EXPECT_EQ(t.policy->NodeDown(1).status().code(), StatusCode::kNotFound);
  // A late answer from the node that went down is dropped.
  EXPECT_EQ(t.policy->OnAnswered(30, 1).code(), StatusCode::kNotFound);
}

TEST(RouterPolicyTest, ModelWithNoLiveNodeIsUnavailable) {
  Table t;
  t.Add(1, {"a"});
  t.Add(2, {"b"});
  ASSERT_TRUE(t.policy->NodeDown(1).ok());
  auto r = t.policy->Pick("a");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("'a'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("n2 (b)"), std::string::npos) << r.status().message();
  // A node that comes back (or a new one) takes work again.
  t.Add(3, {"a"});
  EXPECT_EQ(t.Pick("a"), 3u);
}

TEST(RouterPolicyTest, PickExcludingNeverReturnsTheExcludedNode) {
  for (RoutePolicy p : {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded, RoutePolicy::kP2C,
                        RoutePolicy::kRoundRobin, RoutePolicy::kRandom}) {
    Table t(With(p));
    t.Add(1, {"m"});           // the idlest
    t.Add(2, {"m"}, 1, 50);
    t.Add(3, {"m"}, 1, 60);
    std::set<NodeId> seen;
    for (int i = 0; i < 100; ++i) {
      auto r = t.policy->PickExcluding("m", 1);
      ASSERT_TRUE(r.ok()) << RoutePolicyName(p);
      seen.insert(*r);
    }
    EXPECT_EQ(seen.count(1), 0u) << RoutePolicyName(p);
    if (p == RoutePolicy::kLeastLoaded || p == RoutePolicy::kAuto || p == RoutePolicy::kP2C)
      EXPECT_EQ(seen, (std::set<NodeId>{2})) << RoutePolicyName(p);
    else
      EXPECT_EQ(seen, (std::set<NodeId>{2, 3})) << RoutePolicyName(p);
    // Excluding an unknown node excludes nothing.
    auto r = t.policy->PickExcluding("m", 99);
    ASSERT_TRUE(r.ok());
    if (p == RoutePolicy::kLeastLoaded || p == RoutePolicy::kAuto) {
      EXPECT_EQ(*r, 1u);
    }
  }
}

TEST(RouterPolicyTest, PickExcludingTheOnlyNodeIsUnavailable) {
  Table t;
  t.Add(1, {"m"});
  t.Add(2, {"other"});
  auto r = t.policy->PickExcluding("m", 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("n1 (m; excluded)"), std::string::npos) << r.status().message();
}

TEST(RouterPolicyTest, RetryOnceAfterANodeIsLost) {
  // The router's protocol: node down -> each request retried once elsewhere, or UNAVAILABLE.
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"m"});
  t.Add(2, {"m"}, 1, 100);
  t.Add(3, {"m"}, 1, 100);
  ASSERT_TRUE(t.policy->OnPlaced(1, "m", 10, 1).ok());
  ASSERT_TRUE(t.policy->OnPlaced(2, "m", 10, 1).ok());
  auto lost = t.policy->NodeDown(1);
  ASSERT_TRUE(lost.ok());
  ASSERT_EQ(lost->size(), 2u);
  std::vector<NodeId> retried;
  for (const InFlightRequest& r : *lost) {
    ASSERT_EQ(r.attempt, 1);
    auto n = t.policy->PickExcluding(r.model, r.node);
    ASSERT_TRUE(n.ok());
    ASSERT_TRUE(t.policy->OnPlaced(r.request, r.model, r.cells, *n, r.attempt + 1).ok());
    retried.push_back(*n);
  }
  EXPECT_EQ(retried, (std::vector<NodeId>{2, 3}));  // the second sees the first's cells
  EXPECT_EQ(t.policy->in_flight(1)->attempt, 2);
  // Node 2 goes down too: request 1 comes back at attempt 2, so the router answers it UNAVAILABLE
  // instead of retrying again. Request 2 is answered by node 3, once.
  auto again = t.policy->NodeDown(2);
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].attempt, 2);
  EXPECT_TRUE(t.policy->OnAnswered(2, 3).ok());
  EXPECT_EQ(t.policy->OnAnswered(2, 3).code(), StatusCode::kNotFound);  // answered once
  EXPECT_EQ(t.policy->requests_in_flight(), 0);
}

TEST(RouterPolicyTest, AnswerFromAnotherNodeIsDropped) {
  Table t;
  t.Add(1, {"m"});
  t.Add(2, {"m"});
  ASSERT_TRUE(t.policy->OnPlaced(5, "m", 1, 1).ok());
  EXPECT_EQ(t.policy->OnAnswered(5, 2).code(), StatusCode::kNotFound);
  EXPECT_EQ(t.policy->OnAnswered(6, 1).code(), StatusCode::kNotFound);
  EXPECT_TRUE(t.policy->OnAnswered(5, 1).ok());
}

TEST(RouterPolicyTest, DrainingNodeTakesNoNewWorkButFinishes) {
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"m"});
  t.Add(2, {"m"}, 1, 100);
  ASSERT_TRUE(t.policy->OnPlaced(7, "m", 5, 1).ok());
  ASSERT_TRUE(t.policy->Drain(1).ok());
  EXPECT_TRUE(t.policy->node(1)->draining);
  EXPECT_EQ(t.Counts("m", 10), (std::map<NodeId, int>{{2, 10}}));
  EXPECT_TRUE(t.policy->OnAnswered(7, 1).ok());
  // Re-registering does not undo the drain.
  t.Add(1, {"m"});
  EXPECT_EQ(t.Pick("m"), 2u);
  ASSERT_TRUE(t.policy->Drain(2).ok());
  auto r = t.policy->Pick("m");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("draining"), std::string::npos) << r.status().message();
  EXPECT_EQ(t.policy->Drain(9).code(), StatusCode::kNotFound);
  ASSERT_TRUE(t.policy->NodeDown(1).ok());
  EXPECT_EQ(t.policy->node_count(), 1);
}

TEST(RouterPolicyTest, ReRegisteringUpdatesModelsAndKeepsRequests) {
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"a"});
  ASSERT_TRUE(t.policy->OnPlaced(1, "a", 4, 1).ok());
  t.Add(2, {"c"});  // "c" is known before "b"
  t.Add(1, {"c", "b", "c"}, 2);
  EXPECT_EQ(t.policy->node_count(), 2);
  EXPECT_EQ(t.policy->node(1)->models, (std::vector<std::string>{"b", "c"}));  // sorted, once each
  EXPECT_EQ(t.policy->node(1)->devices, 2);
  EXPECT_EQ(t.policy->node(1)->in_flight, 1);
  EXPECT_EQ(t.policy->Pick("a").status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(t.Pick("b"), 1u);
  EXPECT_TRUE(t.policy->OnAnswered(1, 1).ok());
}

TEST(RouterPolicyTest, RegistrationSetsTheEstimate) {
  Table t(With(RoutePolicy::kLeastLoaded));
  t.Add(1, {"m"}, 1, 10);
  t.Add(2, {"m"}, 1, 8);
  EXPECT_EQ(t.Pick("m"), 2u);
  t.Add(1, {"m"}, 4);  // 10 cells over 4 devices now
  EXPECT_EQ(t.Pick("m"), 1u);
  // A node that takes the slot of a busy one that went down starts idle.
  ASSERT_TRUE(t.policy->ReportLoad(1, {1000, 0}).ok());
  ASSERT_TRUE(t.policy->NodeDown(1).ok());
  t.Add(3, {"m"});
  EXPECT_EQ(t.policy->node(3)->estimate, 0);
  EXPECT_EQ(t.Pick("m"), 3u);
}

// Forget drops the names no node serves and no request uses (among those asked), makes room under
// max_models, and leaves every other name, node and request working.
TEST(RouterPolicyTest, ForgetDropsOnlyUnservedUnusedNames) {
  RouterPolicyOptions o;
  o.max_models = 4;
  Table t(o);
  t.Add(1, {"m", "m@1"});
  t.Add(2, {"m", "m@2", "x"});
  ASSERT_TRUE(t.policy->NodeDown(1).ok());  // m@1: served by none, used by none
  auto versions = [](const std::string& name) { return name.find('@') != std::string::npos; };
  EXPECT_EQ(t.policy->Forget(versions), 1);
  EXPECT_EQ(t.policy->Pick("m@1").status().code(), StatusCode::kNotFound) << "forgotten";
  EXPECT_EQ(t.Pick("m@2"), 2u);
  EXPECT_EQ(t.Pick("x"), 2u);
  EXPECT_EQ(t.policy->node(2)->models, (std::vector<std::string>{"m", "m@2", "x"}));
  t.Add(3, {"m", "m@3"});  // the room it made: a fourth name fits again

  // A request in flight keeps its model's name, even when its node no longer lists it.
  ASSERT_TRUE(t.policy->OnPlaced(7, "m@2", 5, 2).ok());
  t.Add(2, {"m", "x"});
  EXPECT_EQ(t.policy->Forget(versions), 0) << "request 7 still uses m@2";
  EXPECT_EQ(t.policy->in_flight(7)->model, "m@2");
  ASSERT_TRUE(t.policy->OnAnswered(7, 2).ok());
  EXPECT_EQ(t.policy->Forget(versions), 1);
  // A draining node's names count as served; what is not forgettable stays.
  ASSERT_TRUE(t.policy->Drain(3).ok());
  ASSERT_TRUE(t.policy->NodeDown(2).ok());
  EXPECT_EQ(t.policy->Forget(versions), 0) << "m@3 is served by the draining node 3";
  EXPECT_EQ(t.policy->Forget([](const std::string&) { return true; }), 1) << "x only";
  EXPECT_EQ(t.policy->Pick("x").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(t.policy->Register(NodeRegistration{4, "n4", {"m", "m@3"}, 1}).ok());
  EXPECT_EQ(t.Pick("m@3"), 4u);
  EXPECT_EQ(t.Pick("m"), 4u);
  EXPECT_EQ(t.policy->node(3)->models, (std::vector<std::string>{"m", "m@3"}));
}

TEST(RouterPolicyTest, BoundsAndBadInput) {
  RouterPolicyOptions o;
  o.max_nodes = 2;
  o.max_models = 3;
  o.max_in_flight = 2;
  Table t(o);
  t.Add(1, {"a", "b"});
  t.Add(2, {"c", "a"});
  NodeRegistration reg;
  reg.id = 3;
  reg.models = {"a"};
  EXPECT_EQ(t.policy->Register(reg).code(), StatusCode::kResourceExhausted);  // max_nodes
  reg.id = 2;
  reg.models = {"d"};
  EXPECT_EQ(t.policy->Register(reg).code(), StatusCode::kResourceExhausted);  // max_models
  reg.models = {"a", ""};
  EXPECT_EQ(t.policy->Register(reg).code(), StatusCode::kInvalidArgument);
  reg.models = {"a"};
  reg.devices = 0;
  EXPECT_EQ(t.policy->Register(reg).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.policy->node(2)->models, (std::vector<std::string>{"a", "c"}));  // unchanged
  // A freed slot is reused: the table never holds more than max_nodes.
  ASSERT_TRUE(t.policy->NodeDown(2).ok());
  reg.id = 3;
  reg.devices = 1;
  EXPECT_TRUE(t.policy->Register(reg).ok());
  EXPECT_EQ(t.policy->node(3)->name, "node-3");
  EXPECT_EQ(t.policy->nodes(), (std::vector<NodeId>{1, 3}));

  EXPECT_EQ(t.policy->ReportLoad(9, {1, 1}).code(), StatusCode::kNotFound);
  EXPECT_EQ(t.policy->ReportLoad(1, {-1, 1}).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(t.policy->ReportLoad(1, {int64_t{1} << 40, 1}).ok());  // 0..2^40 (router_policy.h)
  EXPECT_EQ(t.policy->ReportLoad(1, {(int64_t{1} << 40) + 1, 1}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.policy->ReportLoad(1, {1, -1}).code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(t.policy->OnPlaced(1, "a", 1, 9).code(), StatusCode::kNotFound);    // node
  EXPECT_EQ(t.policy->OnPlaced(1, "c", 1, 1).code(), StatusCode::kNotFound);    // model
  EXPECT_EQ(t.policy->OnPlaced(1, "a", -1, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.policy->OnPlaced(1, "a", 1, 1, 0).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(t.policy->OnPlaced(1, "a", 1, 1).ok());
  EXPECT_EQ(t.policy->OnPlaced(1, "a", 1, 3).code(), StatusCode::kInvalidArgument);  // duplicate
  ASSERT_TRUE(t.policy->OnPlaced(2, "b", 1, 1).ok());
  EXPECT_EQ(t.policy->OnPlaced(3, "a", 1, 3).code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(t.policy->OnAnswered(1, 1).ok());
  EXPECT_TRUE(t.policy->OnPlaced(3, "a", 1, 3).ok());
}

TEST(RouterPolicyTest, ManyPlacementsAndAnswersKeepTheBooksStraight) {
  // Random interleaving against a simple model of what must be in flight where.
  Table t(With(RoutePolicy::kP2C, 5));
  for (NodeId id = 1; id <= 12; ++id) t.Add(id, {"m"});
  std::map<RequestId, NodeId> expect;
  std::mt19937_64 gen(9);
  RequestId next = 1;
  for (int step = 0; step < 5000; ++step) {
    if (expect.empty() || gen() % 3 != 0) {
      const NodeId n = t.Pick("m");
      ASSERT_TRUE(t.policy->OnPlaced(next, "m", 1 + static_cast<int64_t>(gen() % 40), n).ok());
      expect[next++] = n;
    } else {
      auto it = expect.begin();
      std::advance(it, static_cast<long>(gen() % expect.size()));
      ASSERT_TRUE(t.policy->OnAnswered(it->first, it->second).ok());
      expect.erase(it);
    }
  }
  EXPECT_EQ(t.policy->requests_in_flight(), static_cast<int64_t>(expect.size()));
  std::map<NodeId, int64_t> per_node;
  for (const auto& [r, n] : expect) {
    ++per_node[n];
    ASSERT_EQ(t.policy->in_flight(r)->node, n);
  }
  for (NodeId id = 1; id <= 12; ++id) EXPECT_EQ(t.policy->node(id)->in_flight, per_node[id]);
  auto lost = t.policy->NodeDown(4);
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(static_cast<int64_t>(lost->size()), per_node[4]);
  for (const auto& r : *lost) EXPECT_EQ(expect.at(r.request), 4u);
}

TEST(RouterPolicyTest, SilentNodesAfterTheReportTimeout) {
  RouterPolicyOptions o;
  o.report_timeout_us = 1000;
  Table t(o);
  t.Add(1, {"m"});  // registered at 1000
  t.Add(2, {"m"});
  EXPECT_EQ(t.policy->node(1)->last_report_us, 1000);
  t.clock.AdvanceMicros(500);
  ASSERT_TRUE(t.policy->ReportLoad(1, {0, 0}).ok());
  EXPECT_EQ(t.policy->node(1)->last_report_us, 1500);
  t.clock.AdvanceMicros(500);  // 2000: 1000 since node 2 registered, not more
  EXPECT_TRUE(t.policy->SilentNodes().empty());
  t.clock.AdvanceMicros(1);
  EXPECT_EQ(t.policy->SilentNodes(), (std::vector<NodeId>{2}));
  t.clock.AdvanceMicros(1000);
  EXPECT_EQ(t.policy->SilentNodes(), (std::vector<NodeId>{1, 2}));
  // Registering again counts as a report (the node took a slow reply for none and reports nothing
  // until it is registered).
  t.Add(2, {"m"});
  EXPECT_EQ(t.policy->SilentNodes(), (std::vector<NodeId>{1}));
  Table off;  // report_timeout_us 0: never silent
  off.Add(1, {"m"});
  off.clock.AdvanceMicros(int64_t{1} << 40);
  EXPECT_TRUE(off.policy->SilentNodes().empty());
}

}  // namespace
}  // namespace cellserve
