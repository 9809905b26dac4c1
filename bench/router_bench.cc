// Router placement decision cost (Google Benchmark): RouterPolicy::Pick for one model served by N
// nodes (2, 16, 128, 1024), each policy, and the router's whole bookkeeping per request (Pick,
// OnPlaced, OnAnswered of the request placed 4N requests earlier, and a load report from one
// node every 8 requests). Nodes have 1 to 8 devices and seeded random reported loads.
// Target (issue 4): under 5 microseconds per decision.
#include <benchmark/benchmark.h>

#include <deque>
#include <random>

#include "runtime/router_policy.h"

namespace cellserve {
namespace {

constexpr RoutePolicy kPolicies[] = {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded,
                                     RoutePolicy::kP2C, RoutePolicy::kRoundRobin,
                                     RoutePolicy::kRandom};

std::unique_ptr<RouterPolicy> MakeTable(RoutePolicy policy, int nodes, const Clock* clock) {
  RouterPolicyOptions o;
  o.policy = policy;
  o.seed = 1;
  auto router = RouterPolicy::Create(o, clock).value();
  std::mt19937_64 gen(7);
  for (int i = 0; i < nodes; ++i) {
    NodeRegistration reg;
    reg.id = static_cast<NodeId>(1000 + i);
    reg.models = {"sentiment", i % 2 ? "translate" : "parse"};
    reg.devices = 1 + static_cast<int32_t>(gen() % 8);
    (void)router->Register(reg);
    (void)router->ReportLoad(reg.id, {static_cast<int64_t>(gen() % 10000), 0});
  }
  return router;
}

void BM_Pick(benchmark::State& state) {
  const RoutePolicy policy = kPolicies[state.range(0)];
  const int nodes = static_cast<int>(state.range(1));
  SteadyClock clock;
  auto router = MakeTable(policy, nodes, &clock);
  const std::string model = "sentiment";
  for (auto _ : state) {
    auto picked = router->Pick(model);
    benchmark::DoNotOptimize(picked);
  }
  state.SetLabel(RoutePolicyName(policy));
}

void BM_PlaceAnswer(benchmark::State& state) {
  const RoutePolicy policy = kPolicies[state.range(0)];
  const int nodes = static_cast<int>(state.range(1));
  SteadyClock clock;
  auto router = MakeTable(policy, nodes, &clock);
  const std::string model = "sentiment";
  std::mt19937_64 gen(11);
  std::deque<std::pair<RequestId, NodeId>> in_flight;
  const size_t population = 4 * static_cast<size_t>(nodes);
  RequestId next = 1;
  for (auto _ : state) {
    const NodeId node = router->Pick(model).value();
    (void)router->OnPlaced(next, model, 29, node);
    in_flight.emplace_back(next++, node);
    if (in_flight.size() > population) {
      (void)router->OnAnswered(in_flight.front().first, in_flight.front().second);
      in_flight.pop_front();
    }
    if (next % 8 == 0)
      (void)router->ReportLoad(static_cast<NodeId>(1000 + gen() % nodes),
                               {static_cast<int64_t>(gen() % 10000), 0});
  }
  state.SetLabel(RoutePolicyName(policy));
}

BENCHMARK(BM_Pick)->ArgsProduct({{0, 1, 2, 3, 4}, {2, 16, 128, 1024}})->ArgNames({"policy", "nodes"});
BENCHMARK(BM_PlaceAnswer)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {2, 16, 128, 1024}})
    ->ArgNames({"policy", "nodes"});

}  // namespace
}  // namespace cellserve

BENCHMARK_MAIN();
