// router_sim: the router's placement policies compared in a discrete-event simulation of a
// cluster, no processes, no actors (issue 4 groundwork). Deterministic: the same flags give the
// same table on every machine.
//
// The model, and what it leaves out:
// - K nodes, each with D devices (--devices cycles a list over the nodes, so "2,6" mixes sizes).
//   Each device runs cellular batching of one LSTM cell type, as runtime/scheduler.h's cellular
//   policy does for a 1-layer LSTM: up to max_batch requests run, each advancing one cell per
//   step; a request joins at the next step after it arrives and leaves after its last cell; the
//   oldest waiting request takes a freed place. A step of b cells takes a_us * b + c_us (the
//   profile's "lstm" cost, in nanoseconds without rounding to microseconds). Left out: the head
//   cell, lookahead (steps run back to back), state-slot limits, compute variance.
// - A request's cells are the token count of a State of the Union sentence (the bench corpus,
//   hashing tokenizer; a seeded random sentence per arrival), or uniform in 1..55 when the corpus
//   is missing. The router's estimate of a request's cells is exact (the real router guesses
//   seq2seq decoder lengths).
// - Arrivals are open-loop Poisson at a fraction of capacity; capacity = devices * max_batch /
//   (a_us * max_batch + c_us) cells per microsecond over the mean cells per request (every device
//   at full batches). Each arrival goes to one of G routers in turn (--routers); each router has
//   its own RouterPolicy, sees every load report and only its own placements.
// - A node sends each request to its device with the fewest outstanding cells (exact: node-local
//   information is fresh; the real node uses its workers' reports, every 2 ms). Every R ms
//   (--report-ms) each node reports its outstanding cells to every router, phases staggered
//   across nodes; reports, requests and answers travel in zero time, so a report's staleness is
//   the report period alone.
// - --slow-nodes N --slow-factor F: the first N nodes run every step F times slower, and no one
//   tells the routers (a throttled or shared GPU). Capacity counts them at 1/F.
// - Latency: arrival to last cell. Throughput: requests completed in the measured window. The
//   first 10% of the arrival window is warm-up (not measured); after the last arrival the sim
//   runs until every request is done, so slow policies are not flattered by dropped tails. Past
//   a node's capacity the queue grows for the whole run, so those latencies grow with the run.
//
//   build/bench/router_sim [--profile F] [--nodes K] [--devices D[,D...]] [--max-batch B]
//       [--loads 0.5,0.8,0.95] [--report-ms R] [--routers G] [--duration-s S]
//       [--policies auto,least_loaded,p2c,round_robin,random] [--seed N] [--corpus F]
//       [--estimate own|own_plus_reported|report_plus_placed] [--slow-nodes N --slow-factor F]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <queue>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/workload.h"
#include "kernels/sim/sim_profile.h"
#include "runtime/router_policy.h"

namespace cellserve::bench {
namespace {

uint64_t UniformBelow(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = gen();
    if (r >= threshold) return r % bound;
  }
}
double UniformUnit(std::mt19937_64& gen) { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }

struct Config {
  std::string profile_path = "kernels/sim/profiles/gpu-like.json";
  int nodes = 8;
  std::vector<int> devices = {2};
  int64_t max_batch = 256;
  std::vector<double> loads = {0.5, 0.8, 0.95};
  double report_ms = 10.0;
  int routers = 1;
  int slow_nodes = 0;        // the first this many nodes run every step slow_factor times slower,
  double slow_factor = 1.0;  // unknown to the routers
  double duration_s = 0.0;  // 0: 500,000 arrivals at capacity, at least 30 report periods
  std::vector<RoutePolicy> policies = {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded,
                                       RoutePolicy::kP2C, RoutePolicy::kRoundRobin,
                                       RoutePolicy::kRandom};
  LoadEstimate estimate = LoadEstimate::kOwn;
  uint64_t seed = 1;
  std::string corpus;
};

struct Result {
  int64_t measured = 0;        // requests arriving in the measured window
  double throughput = 0.0;     // completions per second in the measured window
  double p50_ms = 0.0, p99_ms = 0.0, max_ms = 0.0;
  double mean_batch = 0.0;     // cells per step, over all steps
  double sim_seconds = 0.0;    // wall time of the simulation
};

class Sim {
 public:
  Sim(const Config& cfg, const sim::SimCost& cost, const std::vector<int32_t>& lengths,
      double rate_per_s, RoutePolicy policy)
      : cfg_(cfg), cost_(cost), lengths_(lengths), rate_per_s_(rate_per_s) {
    for (int k = 0; k < cfg.nodes; ++k) {
      Node n;
      n.first_device = static_cast<int>(devices_.size());
      n.devices = cfg.devices[static_cast<size_t>(k) % cfg.devices.size()];
      devices_.resize(devices_.size() + static_cast<size_t>(n.devices));
      if (k < cfg.slow_nodes)
        for (int d = 0; d < n.devices; ++d) devices_[static_cast<size_t>(n.first_device + d)].slowdown = cfg.slow_factor;
      nodes_.push_back(n);
    }
    RouterPolicyOptions o;
    o.policy = policy;
    o.estimate = cfg.estimate;
    for (int g = 0; g < cfg.routers; ++g) {
      o.seed = MixSeed(cfg.seed, 100 + static_cast<uint64_t>(g));
      routers_.push_back(RouterPolicy::Create(o, &clock_).value());
      for (int k = 0; k < cfg.nodes; ++k) {
        NodeRegistration reg;
        reg.id = static_cast<NodeId>(k);
        reg.models = {"lstm"};
        reg.devices = nodes_[static_cast<size_t>(k)].devices;
        (void)routers_.back()->Register(reg);
      }
    }
  }

  Result Run(double duration_s) {
    const auto wall0 = std::chrono::steady_clock::now();
    end_ns_ = static_cast<int64_t>(duration_s * 1e9);
    warm_ns_ = end_ns_ / 10;
    std::mt19937_64 arrivals(MixSeed(cfg_.seed, 1));
    auto next_arrival = [&](int64_t now) {
      return now + static_cast<int64_t>(-std::log1p(-UniformUnit(arrivals)) / rate_per_s_ * 1e9);
    };
    const int64_t report_ns = static_cast<int64_t>(cfg_.report_ms * 1e6);
    for (int k = 0; k < cfg_.nodes; ++k)
      Push(report_ns * (k + 1) / cfg_.nodes, kReport, k);
    Push(next_arrival(0), kArrival, 0);
    int64_t in_system = 0;
    bool arriving = true;
    while (!events_.empty()) {
      const Event e = events_.top();
      events_.pop();
      now_ = e.t;
      clock_.SetMicros(now_ / 1000);
      switch (e.kind) {
        case kArrival: {
          if (now_ >= end_ns_) {
            arriving = false;
            break;
          }
          Arrive(arrivals);
          ++in_system;
          Push(next_arrival(now_), kArrival, 0);
          break;
        }
        case kStepDone:
          in_system -= StepDone(e.index);
          break;
        case kReport:
          if (!arriving && in_system == 0) break;
          for (auto& r : routers_) (void)r->ReportLoad(static_cast<NodeId>(e.index), {NodeCells(e.index), 0});
          Push(now_ + report_ns, kReport, e.index);
          break;
      }
    }
    Result res;
    std::sort(latencies_ns_.begin(), latencies_ns_.end());
    res.measured = static_cast<int64_t>(latencies_ns_.size());
    auto pct = [&](double q) {
      if (latencies_ns_.empty()) return 0.0;
      size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(latencies_ns_.size())));
      i = std::min(latencies_ns_.size() - 1, i == 0 ? 0 : i - 1);
      return static_cast<double>(latencies_ns_[i]) / 1e6;
    };
    res.p50_ms = pct(0.50);
    res.p99_ms = pct(0.99);
    res.max_ms = latencies_ns_.empty() ? 0.0 : static_cast<double>(latencies_ns_.back()) / 1e6;
    res.throughput = static_cast<double>(completed_in_window_) / ((end_ns_ - warm_ns_) / 1e9);
    res.mean_batch = steps_ ? static_cast<double>(cells_) / static_cast<double>(steps_) : 0.0;
    res.sim_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
    return res;
  }

 private:
  enum Kind { kArrival, kStepDone, kReport };
  struct Event {
    int64_t t;
    uint64_t seq;
    Kind kind;
    int index;
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  struct Request {
    int64_t arrival_ns = 0;
    int32_t cells = 0;
    int32_t router = 0;
    int32_t node = 0;
  };
  struct Device {
    bool busy = false;
    double slowdown = 1.0;
    int64_t batch = 0;        // cells in the step now running
    int64_t steps = 0;        // steps finished
    int64_t outstanding = 0;  // cells not yet computed, running and waiting
    // Running requests by the step count at which they finish.
    std::priority_queue<std::pair<int64_t, uint32_t>, std::vector<std::pair<int64_t, uint32_t>>,
                        std::greater<>>
        running;
    std::deque<uint32_t> waiting;
  };
  struct Node {
    int first_device = 0;
    int devices = 0;
  };

  void Push(int64_t t, Kind kind, int index) { events_.push(Event{t, seq_++, kind, index}); }

  int64_t NodeCells(int k) const {
    const Node& n = nodes_[static_cast<size_t>(k)];
    int64_t sum = 0;
    for (int d = 0; d < n.devices; ++d) sum += devices_[static_cast<size_t>(n.first_device + d)].outstanding;
    return sum;
  }

  void Arrive(std::mt19937_64& gen) {
    Request r;
    r.arrival_ns = now_;
    r.cells = lengths_[UniformBelow(gen, lengths_.size())];
    r.router = static_cast<int32_t>(next_router_++ % routers_.size());
    RouterPolicy& router = *routers_[static_cast<size_t>(r.router)];
    const NodeId node = router.Pick("lstm").value();
    r.node = static_cast<int32_t>(node);
    const uint32_t id = static_cast<uint32_t>(requests_.size());
    (void)router.OnPlaced(id, "lstm", r.cells, node);
    requests_.push_back(r);
    // The node: its device with the fewest outstanding cells.
    const Node& n = nodes_[static_cast<size_t>(node)];
    int best = n.first_device;
    for (int d = n.first_device + 1; d < n.first_device + n.devices; ++d)
      if (devices_[static_cast<size_t>(d)].outstanding < devices_[static_cast<size_t>(best)].outstanding) best = d;
    Device& dev = devices_[static_cast<size_t>(best)];
    dev.outstanding += r.cells;
    dev.waiting.push_back(id);
    if (!dev.busy) StartStep(best);
  }

  void StartStep(int d) {
    Device& dev = devices_[static_cast<size_t>(d)];
    while (static_cast<int64_t>(dev.running.size()) < cfg_.max_batch && !dev.waiting.empty()) {
      const uint32_t id = dev.waiting.front();
      dev.waiting.pop_front();
      dev.running.emplace(dev.steps + requests_[id].cells, id);
    }
    dev.batch = static_cast<int64_t>(dev.running.size());
    dev.busy = dev.batch > 0;
    if (!dev.busy) return;
    const double step_ns =
        (cost_.a_us * static_cast<double>(dev.batch) + cost_.c_us) * 1000.0 * dev.slowdown;
    Push(now_ + std::max<int64_t>(1, std::llround(step_ns)), kStepDone, d);
  }

  // Returns the requests finished.
  int64_t StepDone(int d) {
    Device& dev = devices_[static_cast<size_t>(d)];
    ++dev.steps;
    ++steps_;
    cells_ += dev.batch;
    dev.outstanding -= dev.batch;
    int64_t done = 0;
    while (!dev.running.empty() && dev.running.top().first == dev.steps) {
      const uint32_t id = dev.running.top().second;
      dev.running.pop();
      const Request& r = requests_[id];
      (void)routers_[static_cast<size_t>(r.router)]->OnAnswered(id, static_cast<NodeId>(r.node));
      if (r.arrival_ns >= warm_ns_ && r.arrival_ns < end_ns_) latencies_ns_.push_back(now_ - r.arrival_ns);
      if (now_ >= warm_ns_ && now_ < end_ns_) ++completed_in_window_;
      ++done;
    }
    StartStep(d);
    return done;
  }

  const Config& cfg_;
  sim::SimCost cost_;
  const std::vector<int32_t>& lengths_;
  double rate_per_s_;
  FakeClock clock_;
  std::vector<std::unique_ptr<RouterPolicy>> routers_;
  std::vector<Node> nodes_;
  std::vector<Device> devices_;
  std::vector<Request> requests_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t seq_ = 0;
  uint64_t next_router_ = 0;
  int64_t now_ = 0, end_ns_ = 0, warm_ns_ = 0;
  int64_t steps_ = 0, cells_ = 0, completed_in_window_ = 0;
  std::vector<int64_t> latencies_ns_;
};

template <typename T, typename F>
std::vector<T> SplitList(const std::string& s, F parse) {
  std::vector<T> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(parse(item));
  return out;
}

int Usage(const char* why) {
  std::fprintf(stderr,
               "router_sim: %s\nusage: router_sim [--profile F] [--nodes K] [--devices D[,D...]] "
               "[--max-batch B] [--loads L,...] [--report-ms R] [--routers G] [--duration-s S] "
               "[--policies P,...] [--seed N] [--corpus F] [--estimate E] [--slow-nodes N] "
               "[--slow-factor F]\n",
               why);
  return 2;
}

int Main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    const size_t eq = flag.find('=');
    if (eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    } else if (flag == "--help" || flag == "-h") {
      Usage("help");
      return 0;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return Usage(("missing value for " + flag).c_str());
    }
    try {
      if (flag == "--profile") cfg.profile_path = value;
      else if (flag == "--nodes") cfg.nodes = std::stoi(value);
      else if (flag == "--devices") cfg.devices = SplitList<int>(value, [](const std::string& s) { return std::stoi(s); });
      else if (flag == "--max-batch") cfg.max_batch = std::stoll(value);
      else if (flag == "--loads") cfg.loads = SplitList<double>(value, [](const std::string& s) { return std::stod(s); });
      else if (flag == "--report-ms") cfg.report_ms = std::stod(value);
      else if (flag == "--routers") cfg.routers = std::stoi(value);
      else if (flag == "--duration-s") cfg.duration_s = std::stod(value);
      else if (flag == "--seed") cfg.seed = std::stoull(value);
      else if (flag == "--slow-nodes") cfg.slow_nodes = std::stoi(value);
      else if (flag == "--slow-factor") cfg.slow_factor = std::stod(value);
      else if (flag == "--corpus") cfg.corpus = value;
      else if (flag == "--estimate") {
        auto e = ParseLoadEstimate(value);
        if (!e.ok()) return Usage(e.status().message().c_str());
        cfg.estimate = *e;
      }
      else if (flag == "--policies") {
        cfg.policies.clear();
        for (const std::string& name : SplitList<std::string>(value, [](const std::string& s) { return s; })) {
          auto p = ParseRoutePolicy(name);
          if (!p.ok()) return Usage(p.status().message().c_str());
          cfg.policies.push_back(*p);
        }
      } else {
        return Usage(("unknown flag " + flag).c_str());
      }
    } catch (const std::exception&) {
      return Usage(("bad value for " + flag + ": " + value).c_str());
    }
  }
  if (cfg.nodes < 1 || cfg.devices.empty() || cfg.max_batch < 1 || cfg.routers < 1 ||
      cfg.report_ms <= 0 || cfg.loads.empty() || cfg.policies.empty() || cfg.duration_s < 0 ||
      cfg.slow_nodes < 0 || !(cfg.slow_factor >= 1.0))
    return Usage("bad configuration");
  for (int d : cfg.devices)
    if (d < 1) return Usage("devices must be >= 1");

  auto profile = sim::SimProfile::Load(cfg.profile_path);
  if (!profile.ok()) return Usage(profile.status().ToString().c_str());
  auto it = profile->costs.find("lstm");
  const sim::SimCost cost = it != profile->costs.end() ? it->second : profile->fallback;

  std::vector<int32_t> lengths;
  std::string length_source;
  WorkloadOptions wo;
  wo.kind = ModelKind::kLstm;
  auto workload = LoadWorkload(cfg.corpus.empty() ? DefaultCorpusPath() : cfg.corpus, wo);
  if (workload.ok()) {
    for (const auto& r : workload->requests) lengths.push_back(static_cast<int32_t>(r.length));
    char buf[160];
    std::snprintf(buf, sizeof buf, "corpus: %zu sentences, mean %.1f cells, median %lld, max %lld",
                  lengths.size(), workload->stats.mean_length,
                  static_cast<long long>(workload->stats.median_length),
                  static_cast<long long>(workload->stats.max_length));
    length_source = buf;
  } else {
    for (int32_t n = 1; n <= 55; ++n) lengths.push_back(n);
    length_source = "no corpus (" + workload.status().message() + "): uniform 1..55 cells";
  }
  double mean_cells = 0;
  for (int32_t n : lengths) mean_cells += n;
  mean_cells /= static_cast<double>(lengths.size());

  int64_t total_devices = 0;
  double device_speed = 0;  // devices, the slow ones counted at 1 / slow_factor
  for (int k = 0; k < cfg.nodes; ++k) {
    const int d = cfg.devices[static_cast<size_t>(k) % cfg.devices.size()];
    total_devices += d;
    device_speed += k < cfg.slow_nodes ? d / cfg.slow_factor : d;
  }
  const double full_step_us = cost.a_us * static_cast<double>(cfg.max_batch) + cost.c_us;
  const double capacity_per_s =
      device_speed * static_cast<double>(cfg.max_batch) / full_step_us * 1e6 / mean_cells;
  // Default duration: 500,000 arrivals at full capacity, and at least 30 report periods.
  double duration_s = cfg.duration_s;
  if (duration_s == 0) duration_s = std::max(500000 / capacity_per_s, 30 * cfg.report_ms / 1e3);

  std::string devices_list;
  for (int d : cfg.devices) devices_list += (devices_list.empty() ? "" : ",") + std::to_string(d);
  std::printf("profile %s: lstm step = %.3f us * batch + %.3f us\n", profile->name.c_str(), cost.a_us, cost.c_us);
  std::printf("%d nodes x devices {%s} = %lld devices, max batch %lld, %d router(s), load reports every %.3g ms, estimate %s\n",
              cfg.nodes, devices_list.c_str(), static_cast<long long>(total_devices),
              static_cast<long long>(cfg.max_batch), cfg.routers, cfg.report_ms, LoadEstimateName(cfg.estimate));
  if (cfg.slow_nodes > 0)
    std::printf("the first %d node(s) run %.3gx slower (the routers are not told)\n", cfg.slow_nodes,
                cfg.slow_factor);
  std::printf("%s\n", length_source.c_str());
  std::printf("capacity %.0f req/s (every device at full batches); arrivals for %.3g s, first 10%% warm-up; seed %llu\n\n",
              capacity_per_s, duration_s, static_cast<unsigned long long>(cfg.seed));
  std::printf("| load | policy | offered req/s | throughput req/s | p50 ms | p99 ms | max ms | mean batch |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (double load : cfg.loads) {
    for (RoutePolicy policy : cfg.policies) {
      Sim sim(cfg, cost, lengths, load * capacity_per_s, policy);
      const Result r = sim.Run(duration_s);
      std::printf("| %.0f%% | %s | %.0f | %.0f | %.3g | %.3g | %.3g | %.1f |\n", load * 100,
                  RoutePolicyName(policy), load * capacity_per_s, r.throughput, r.p50_ms, r.p99_ms,
                  r.max_ms, r.mean_batch);
      std::fflush(stdout);
      std::fprintf(stderr, "  (%s at %.0f%%: %lld requests measured, %.1f s to simulate)\n",
                   RoutePolicyName(policy), load * 100, static_cast<long long>(r.measured), r.sim_seconds);
    }
  }
  return 0;
}

}  // namespace
}  // namespace cellserve::bench

int main(int argc, char** argv) { return cellserve::bench::Main(argc, argv); }
