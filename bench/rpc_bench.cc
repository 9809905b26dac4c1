// bench_rpc: what the Cap'n Proto front door adds to a request (the client-interface issue).
//
// 1. Overhead at low load: the same requests, one at a time, alternately in process
//    (LocalCluster::Infer, answered through a condition variable) and through the RPC server on
//    loopback (rpc::Client::Infer from this thread to an RpcServer in this process, which calls
//    the same LocalCluster). Alternating cancels the machine's drift; p50 and p99 of each, the
//    difference of the medians, and the median of the per-request differences.
// 2. That in each setup of --setups: CPU devices, sim devices (kernels/sim, --sim-profile,
//    default the GPU-like profile: the devices compute nothing, as on a GPU node whose CPU only
//    runs the actors and the front door) and, on a GPU machine, one GPU; each unpinned, with
//    --pin-threads (runtime/cpu_plan.h) and with --pin-threads --idle-poll (actors/idle_poller.h),
//    the three taking turns for --rounds rounds on the same requests, so the machine's drift falls
//    on all alike; then their ratios.
// 3. Most requests per second through one server: a closed loop of --concurrency calls from one
//    client thread (InferAsync) on the sim backend (the devices are nearly free, so the front
//    door, the actors and the scheduler are what is measured), against the same closed loop in
//    process; in each placement (with idle poll: what the spinning threads cost when busy), in
//    every round (its share of the requests, the order of the two alternated), medians reported.
// 4. The machine's floor under all of it: a raw TCP echo on loopback (bench/loopback_rtt.h), back
//    to back and after 6 ms idle, beside the bare RPC round trip; and, per setup, the front
//    door's own path warm and cold (an infer refused at once, alone or right after an
//    in-process request ran).
// Prints a table; --json writes the figures.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "actors/local_cluster.h"
#include "bench/loopback_rtt.h"
#include "bench/report.h"
#include "bench/workload.h"
#include "runtime/clock.h"
#include "runtime/model_repository.h"
#include "runtime/this_thread.h"
#include "schema/client.h"
#include "schema/rpc_server.h"

namespace cs = cellserve;

namespace {

double NowMs() { return cs::SteadyClock().NowMicros() / 1000.0; }

struct Args {
  std::string repo = "build/demo-models";
  std::string model = "sentiment";
  std::string corpus;
  int requests = 1000;
  int throughput_requests = 20000;
  int concurrency = 64;
  int devices = 1;
  int sim_devices = 2;
  std::string sim_profile = "kernels/sim/profiles/gpu-like.json";
  std::vector<std::string> setups = {"cpu", "sim"};
  int rounds = 4;
  std::string json;
};

int Usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: bench_rpc [--model-repo DIR (build/demo-models)] [--model NAME (sentiment)]\n"
               "                 [--corpus FILE (the State of the Union sentences)] [--requests N (1000)]\n"
               "                 [--throughput-requests N (20000)] [--concurrency N (64)] [--devices N (1)]\n"
               "                 [--sim-devices N (2)] [--sim-profile FILE (kernels/sim/profiles/gpu-like.json)]\n"
               "                 [--setups LIST (cpu,sim; also cuda: one GPU)] [--rounds N (4)] [--json FILE]\n"
               "Measures the RPC front door's added latency at low load (same requests, alternately in\n"
               "process and over loopback RPC) on each backend of --setups: not pinned, with --pin-threads,\n"
               "and with --pin-threads --idle-poll (taking turns for --rounds rounds); and the most\n"
               "requests/s through one server against in process (sim backend, when sim is among the\n"
               "setups; each round a share of --throughput-requests both ways, the order alternated).\n");
  return rc;
}

// Each round's closed loops (each way): its share of --throughput-requests, at least a full
// window of --concurrency.
int ThroughputRequestsPerRound(const Args& a) { return std::max(a.throughput_requests / a.rounds, a.concurrency); }

// In-process: one request, waited for.
cs::StatusOr<cs::RequestResult> RunLocal(cs::LocalCluster& cluster, const std::string& model,
                                         const cs::RequestInput& input) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<cs::StatusOr<cs::RequestResult>> answer;
  cluster.Infer(model, input, 0, [&](cs::StatusOr<cs::RequestResult> r) {
    std::lock_guard<std::mutex> lock(mu);
    answer = std::move(r);
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return answer.has_value(); });
  return std::move(*answer);
}

// In-process closed loop: `concurrency` outstanding until `total` answered. Returns requests/s.
// Both closed loops return OK answers per second (an error is counted in *errors, not as throughput).
double LocalClosedLoop(cs::LocalCluster& cluster, const std::string& model,
                       const std::vector<cs::bench::BenchRequest>& requests, int total, int concurrency,
                       int* errors) {
  std::mutex mu;
  std::condition_variable cv;
  int sent = 0, answered = 0, failed = 0;
  std::function<void()> send_one;
  send_one = [&] {
    const cs::RequestInput& in = requests[static_cast<size_t>(sent) % requests.size()].input;
    ++sent;
    cluster.Infer(model, in, 0, [&](cs::StatusOr<cs::RequestResult> r) {
      std::lock_guard<std::mutex> lock(mu);
      if (!r.ok()) ++failed;
      ++answered;
      if (sent < total) send_one();
      cv.notify_all();
    });
  };
  const double t0 = NowMs();
  {
    std::lock_guard<std::mutex> lock(mu);
    for (int i = 0; i < concurrency && sent < total; ++i) send_one();
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return answered >= total; });
  *errors += failed;
  return (total - failed) / ((NowMs() - t0) / 1000.0);
}

// RPC closed loop on the client's thread.
double RpcClosedLoop(cs::rpc::Client& client, const std::string& model,
                     const std::vector<cs::bench::BenchRequest>& requests, int total, int concurrency,
                     int* errors) {
  int sent = 0, answered = 0, failed = 0;
  kj::TaskSet* tasks_ptr = nullptr;
  struct Handler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&&) override {}
  } handler;
  kj::TaskSet tasks(handler);
  tasks_ptr = &tasks;
  auto done_paf = kj::newPromiseAndFulfiller<void>();
  std::function<void()> send_one = [&] {
    cs::rpc::InferCall call;
    call.model = model;
    call.input = requests[static_cast<size_t>(sent) % requests.size()].input;
    ++sent;
    tasks_ptr->add(client.InferAsync(call).then([&](cs::StatusOr<cs::rpc::ReplyValue> r) {
      if (!r.ok()) ++failed;
      ++answered;
      if (sent < total) send_one();
      if (answered == total) done_paf.fulfiller->fulfill();
    }));
  };
  const double t0 = NowMs();
  for (int i = 0; i < concurrency && sent < total; ++i) send_one();
  done_paf.promise.wait(client.wait_scope());
  *errors += failed;
  return (total - failed) / ((NowMs() - t0) / 1000.0);
}

// What one setup (a backend, pinned or not) measured, over all its rounds.
struct SetupSamples {
  std::string title;      // "1 CPU device(s), pinned"
  std::string placement;  // "threads where the OS puts them" or the plan
  std::vector<double> refused_warm_us, refused_cold_us;
  std::vector<double> local_ms, rpc_ms, server_ms, paired_ms;
};

// The front door's own path, warm and cold: an infer the server refuses at once (unknown model:
// decoded, looked up, answered on the kj thread, nothing reaches the cluster), each after 8 ms
// idle. Warm: only these calls run. Cold: each right after an in-process request has run.
// `calls` of each; the first unexpected answer is an error.
cs::Status CollectRefusedCalls(cs::LocalCluster& cluster, cs::rpc::Client& client, const std::string& model,
                               const std::vector<cs::bench::BenchRequest>& reqs, const std::vector<uint32_t>& order,
                               int calls, SetupSamples* out) {
  for (int i = 0; i < 2 * calls; ++i) {
    const bool cold = i >= calls;
    const cs::RequestInput& in = reqs[order[static_cast<size_t>(i) % order.size()]].input;
    if (cold) (void)RunLocal(cluster, model, in);
    std::this_thread::sleep_for(std::chrono::milliseconds(8));
    cs::rpc::InferCall call;
    call.model = "no-such-model";
    call.input = in;
    const double t0 = NowMs();
    auto refused = client.Infer(call);
    (cold ? out->refused_cold_us : out->refused_warm_us).push_back((NowMs() - t0) * 1000);
    if (refused.ok() || refused.status().code() != cs::StatusCode::kNotFound)
      return cs::Internal("expected NOT_FOUND for an unknown model, got " +
                          (refused.ok() ? std::string("a result") : refused.status().ToString()));
  }
  return cs::OkStatus();
}

// Low load: requests [first, first + count) of `order`, one at a time, each in process and then
// over RPC; results must agree.
cs::Status CollectLowLoad(cs::LocalCluster& cluster, cs::rpc::Client& client, const std::string& name,
                          const std::vector<cs::bench::BenchRequest>& reqs, const std::vector<uint32_t>& order,
                          int first, int count, SetupSamples* out) {
  for (int i = 0; i < 20; ++i) {  // warm up both paths
    (void)RunLocal(cluster, name, reqs[order[static_cast<size_t>(i) % order.size()]].input);
    cs::rpc::InferCall call;
    call.model = name;
    call.input = reqs[order[static_cast<size_t>(i) % order.size()]].input;
    (void)client.Infer(call);
  }
  for (int i = first; i < first + count; ++i) {
    const cs::RequestInput& in = reqs[order[static_cast<size_t>(i) % order.size()]].input;
    double t0 = NowMs();
    auto r1 = RunLocal(cluster, name, in);
    out->local_ms.push_back(NowMs() - t0);
    cs::rpc::InferCall call;
    call.model = name;
    call.input = in;
    t0 = NowMs();
    auto r2 = client.Infer(call);
    out->rpc_ms.push_back(NowMs() - t0);
    if (!r1.ok() || !r2.ok()) return !r1.ok() ? r1.status() : r2.status();
    if (r1->logits != r2->result.logits) return cs::Internal("RPC and in-process results differ");
    out->server_ms.push_back(r2->server_micros / 1000.0);
    out->paired_ms.push_back(out->rpc_ms.back() - out->local_ms.back());
  }
  return cs::OkStatus();
}

// Prints one setup's tables and returns its JSON.
nlohmann::ordered_json Report(const SetupSamples& m, const std::string& model) {
  auto warm = cs::bench::ComputeLatencyStats(m.refused_warm_us);
  auto cold = cs::bench::ComputeLatencyStats(m.refused_cold_us);
  auto l = cs::bench::ComputeLatencyStats(m.local_ms);
  auto r = cs::bench::ComputeLatencyStats(m.rpc_ms);
  auto s = cs::bench::ComputeLatencyStats(m.server_ms);
  auto paired = cs::bench::ComputeLatencyStats(m.paired_ms);
  std::printf("On %s (%s):\n", m.title.c_str(), m.placement.c_str());
  std::printf("  an infer refused at once (unknown model), after 8 ms idle: warm p50 %.0f us (p99 %.0f); right\n"
              "  after an in-process request ran (caches cold) p50 %.0f us (p99 %.0f).\n",
              warm.p50_ms, warm.p99_ms, cold.p50_ms, cold.p99_ms);
  std::printf("  low load, model %s, %zu requests each path (alternating):\n", model.c_str(), m.local_ms.size());
  std::printf("    %-28s %9s %9s %9s\n", "path", "p50 ms", "p99 ms", "mean ms");
  std::printf("    %-28s %9.3f %9.3f %9.3f\n", "in process (LocalCluster)", l.p50_ms, l.p99_ms, l.mean_ms);
  std::printf("    %-28s %9.3f %9.3f %9.3f\n", "RPC over loopback", r.p50_ms, r.p99_ms, r.mean_ms);
  std::printf("    %-28s %9.3f %9.3f %9.3f\n", "  of which inside the server", s.p50_ms, s.p99_ms, s.mean_ms);
  std::printf("    added by RPC: p50 %+.0f us, p99 %+.0f us, mean %+.0f us; per request (RPC minus the same\n"
              "    request in process just before): median %+.0f us\n\n",
              (r.p50_ms - l.p50_ms) * 1000, (r.p99_ms - l.p99_ms) * 1000, (r.mean_ms - l.mean_ms) * 1000,
              paired.p50_ms * 1000);
  return nlohmann::ordered_json{{"setup", m.title},
                                {"placement", m.placement},
                                {"refused_call_rtt", {{"warm_p50_us", warm.p50_ms},
                                                      {"warm_p99_us", warm.p99_ms},
                                                      {"cold_p50_us", cold.p50_ms},
                                                      {"cold_p99_us", cold.p99_ms}}},
                                {"latency", {{"model", model},
                                             {"requests", m.local_ms.size()},
                                             {"local_p50_ms", l.p50_ms},
                                             {"local_p99_ms", l.p99_ms},
                                             {"rpc_p50_ms", r.p50_ms},
                                             {"rpc_p99_ms", r.p99_ms},
                                             {"server_p50_ms", s.p50_ms},
                                             {"added_p50_us", (r.p50_ms - l.p50_ms) * 1000},
                                             {"added_p99_us", (r.p99_ms - l.p99_ms) * 1000},
                                             {"added_paired_median_us", paired.p50_ms * 1000}}}};
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") return Usage(0);
    if (i + 1 >= argc) return Usage(2);
    std::string v = argv[++i];
    if (k == "--model-repo") a.repo = v;
    else if (k == "--model") a.model = v;
    else if (k == "--corpus") a.corpus = v;
    else if (k == "--requests") a.requests = std::stoi(v);
    else if (k == "--throughput-requests") a.throughput_requests = std::stoi(v);
    else if (k == "--concurrency") a.concurrency = std::stoi(v);
    else if (k == "--devices") a.devices = std::stoi(v);
    else if (k == "--sim-devices") a.sim_devices = std::stoi(v);
    else if (k == "--sim-profile") a.sim_profile = v;
    else if (k == "--json") a.json = v;
    else if (k == "--rounds") a.rounds = std::stoi(v);
    else if (k == "--setups") {
      a.setups.clear();
      for (size_t start = 0; start <= v.size();) {
        const size_t comma = std::min(v.find(',', start), v.size());
        const std::string setup = v.substr(start, comma - start);
        if (setup != "cpu" && setup != "sim" && setup != "cuda") {
          std::fprintf(stderr, "bench_rpc: --setups takes cpu, sim and cuda, got '%s'\n", setup.c_str());
          return 2;
        }
        a.setups.push_back(setup);
        start = comma + 1;
      }
    }
    else return Usage(2);
  }
  if (a.corpus.empty()) a.corpus = cs::bench::DefaultCorpusPath();
  if (a.rounds < 1 || a.requests < a.rounds) {
    std::fprintf(stderr, "bench_rpc: --rounds must be at least 1 and at most --requests\n");
    return 2;
  }
  auto fail = [](const cs::Status& s) {
    std::fprintf(stderr, "bench_rpc: %s\n", s.ToString().c_str());
    return 1;
  };
  if (std::find(a.setups.begin(), a.setups.end(), "sim") != a.setups.end() &&
      !std::filesystem::exists(a.sim_profile)) {
    std::fprintf(stderr, "bench_rpc: no sim profile at '%s' (the default is relative to the repository root: run "
                 "bench_rpc from there, or pass --sim-profile FILE)\n", a.sim_profile.c_str());
    return 2;
  }

  auto model = cs::LoadModel(a.repo, a.model);
  if (!model.ok()) return fail(model.status());
  auto workload = cs::bench::LoadWorkload(a.corpus, cs::bench::WorkloadOptionsFor((*model)->spec()));
  if (!workload.ok()) return fail(workload.status());
  const auto order = cs::bench::SeededShuffle(workload->requests.size(), 1);

  nlohmann::ordered_json out;
  // Each backend of --setups (cpu; sim: devices off the CPU, as on a GPU node; cuda: one GPU) in
  // three placements: the threads where the OS puts them; pinned (runtime/cpu_plan.h: device
  // threads on cores of their own, the front door, actors and this client on the rest); pinned
  // with --idle-poll (actors/idle_poller.h: the rest kept out of the idle loop).
  // They take turns for --rounds rounds, each round measuring its share of the requests, so that
  // the machine's drift falls on all alike (this VM drifts by more than placement changes).
  const std::vector<int> all_cpus = cs::ThisThreadCpus();
  struct Placement {
    const char* title;  // after the setup's name
    const char* key;    // after the backend's name in the JSON
    bool pinned, idle_poll;
  };
  const Placement placements[] = {{"not pinned", "", false, false},
                                  {"pinned", "_pinned", true, false},
                                  {"pinned, idle poll", "_pinned_idle_poll", true, true}};
  constexpr int kPlacements = 3;
  bool first = true;
  for (const std::string& backend : a.setups) {
    const bool is_sim = backend == "sim";
    SetupSamples measured[kPlacements];
    // sim: per placement, each round's closed loops in process and over RPC (req/s).
    std::vector<double> local_rps[kPlacements], rpc_rps[kPlacements];
    int throughput_errors = 0;
    std::string skipped[kPlacements];  // why a placement cannot run here ("" = it runs)
    for (int step = 0; step < kPlacements * a.rounds; ++step) {  // round 0 of each placement, round 1 ...
      const int round = step / kPlacements;
      const int which = step % kPlacements;
      const Placement& place = placements[which];
      const std::string name = a.model;
      cs::LocalClusterOptions options;
      options.model_repo = a.repo;
      options.models = {name};
      options.backend = backend;
      options.devices = is_sim ? a.sim_devices : backend == "cuda" ? 1 : a.devices;
      if (is_sim) options.sim_profile = a.sim_profile;
      options.idle_poll = place.idle_poll;
      const std::string setup = is_sim ? std::to_string(a.sim_devices) + " sim device(s) (devices off the CPU)"
                                : backend == "cuda" ? std::string("1 GPU")
                                                    : std::to_string(a.devices) + " CPU device(s)";
      SetupSamples& m = measured[which];
      m.title = setup + ", " + place.title;
      if (!skipped[which].empty()) continue;
      m.placement = "threads where the OS puts them";
      if (place.pinned) {
        auto plan = cs::LocalCluster::PinCallerApartFromDevices(options);
        if (!plan.ok()) {
          for (int other = 1; other < kPlacements; ++other)  // every pinned placement
            skipped[other] = plan.status().ToString();
          continue;
        }
        options.device_cpus = plan->device_cpus;
        m.placement = cs::DescribeCpuPlan(*plan);
        if (place.idle_poll) m.placement += "; " + cs::DescribeCpus(plan->other_cpus) + " kept out of the idle loop";
      }
      if (place.idle_poll) {
        if (cs::Status quota = cs::LocalCluster::CheckIdlePollQuota(options); !quota.ok()) {
          skipped[which] = quota.ToString();
          if (cs::Status st = cs::PinThisThread(all_cpus); !st.ok()) return fail(st);
          continue;
        }
      }
      auto cluster = cs::LocalCluster::Start(options);
      if (!cluster.ok()) return fail(cluster.status());
      cs::rpc::RpcServerOptions server_options;
      server_options.listen = "127.0.0.1:0";
      auto server = cs::rpc::RpcServer::Start(cluster->get(), server_options);
      if (!server.ok()) return fail(server.status());
      auto client = cs::rpc::Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
      if (!client.ok()) return fail(client.status());
      const auto& reqs = workload->requests;

      if (first) {
        first = false;
        // The bare round trip of a call the server answers on its own thread (models): back to
        // back, and after 6 ms of idleness (what a request at low load sees: both threads asleep).
        std::vector<double> rtt_ms, rtt_idle_ms;
        for (int i = 0; i < 1300; ++i) {
          if (i >= 1000) std::this_thread::sleep_for(std::chrono::milliseconds(6));
          const double t0 = NowMs();
          auto m = (*client)->Models();
          if (!m.ok()) return fail(m.status());
          (i < 1000 ? rtt_ms : rtt_idle_ms).push_back(NowMs() - t0);
        }
        auto rtt = cs::bench::ComputeLatencyStats(rtt_ms);
        auto idle = cs::bench::ComputeLatencyStats(rtt_idle_ms);
        std::printf("Round trip of a call answered at once (models): back to back p50 %.0f us (p99 %.0f); "
                    "after 6 ms idle p50 %.0f us (p99 %.0f)\n\n",
                    rtt.p50_ms * 1000, rtt.p99_ms * 1000, idle.p50_ms * 1000, idle.p99_ms * 1000);
        out["models_rtt"] = {{"p50_us", rtt.p50_ms * 1000},
                             {"p99_us", rtt.p99_ms * 1000},
                             {"after_idle_p50_us", idle.p50_ms * 1000},
                             {"after_idle_p99_us", idle.p99_ms * 1000}};
        // The machine's floor under any RPC: a raw TCP echo on loopback, no Cap'n Proto.
        auto tcp = cs::bench::MeasureLoopbackRtt(1000, 300, 6);
        if (!tcp.ok()) return fail(tcp.status());
        auto tcp_b2b = cs::bench::ComputeLatencyStats(tcp->back_to_back_us);
        auto tcp_idle = cs::bench::ComputeLatencyStats(tcp->after_idle_us);
        std::printf("Raw TCP round trip on loopback (64 bytes to an echo thread, no Cap'n Proto): back to back\n"
                    "p50 %.0f us (p99 %.0f); after 6 ms idle p50 %.0f us (p99 %.0f). Any front door adds at least\n"
                    "this to an in-process call: two socket crossings and two more thread wake-ups.\n\n",
                    tcp_b2b.p50_ms, tcp_b2b.p99_ms, tcp_idle.p50_ms, tcp_idle.p99_ms);
        out["tcp_rtt"] = {{"p50_us", tcp_b2b.p50_ms},
                          {"p99_us", tcp_b2b.p99_ms},
                          {"after_idle_p50_us", tcp_idle.p50_ms},
                          {"after_idle_p99_us", tcp_idle.p99_ms}};
      }
      // Round r measures requests [r * n / rounds, (r + 1) * n / rounds) of the same order in both
      // setups, so both see the same requests.
      const int from = a.requests * round / a.rounds, to = a.requests * (round + 1) / a.rounds;
      if (cs::Status st = CollectRefusedCalls(**cluster, **client, name, reqs, order, 200 / a.rounds, &m); !st.ok())
        return fail(st);
      if (cs::Status st = CollectLowLoad(**cluster, **client, name, reqs, order, from, to - from, &m); !st.ok())
        return fail(st);
      std::fprintf(stderr, "\r%s: round %d/%d %-18s done ", backend.c_str(), round + 1, a.rounds, place.title);
      // Throughput on sim, in each placement: pinned, everything but the device threads shares
      // one core; idle poll, what the spinning threads cost when that core is busy. Every round
      // measures its share of --throughput-requests both ways, in process first in even rounds and
      // RPC first in odd ones, so that drift and order fall on both alike.
      if (is_sim) {
        int warm_up_errors = 0;  // not the measurement's
        (void)RpcClosedLoop(**client, name, reqs, 500, a.concurrency, &warm_up_errors);
        const int n = ThroughputRequestsPerRound(a);
        auto local = [&] {
          local_rps[which].push_back(LocalClosedLoop(**cluster, name, reqs, n, a.concurrency, &throughput_errors));
        };
        auto rpc = [&] {
          rpc_rps[which].push_back(RpcClosedLoop(**client, name, reqs, n, a.concurrency, &throughput_errors));
        };
        if (round % 2 == 0) local(), rpc();
        else rpc(), local();
      }
      client->reset();
      (*server)->Stop();
      (*cluster)->Stop();
      if (place.pinned) {
        if (cs::Status st = cs::PinThisThread(all_cpus); !st.ok()) return fail(st);
      }
    }
    std::fprintf(stderr, "\n");
    if (is_sim) {
      const int per_round = ThroughputRequestsPerRound(a);
      std::printf("Most requests/s, closed loop of %d, model %s on %d sim device(s) (profile %s), %d requests\n"
                  "each way in %d rounds of %d (the order alternated), medians of the rounds:\n",
                  a.concurrency, a.model.c_str(), a.sim_devices, a.sim_profile.c_str(), per_round * a.rounds,
                  a.rounds, per_round);
      for (int which = 0; which < kPlacements; ++which) {
        if (!skipped[which].empty() || local_rps[which].empty()) continue;
        std::vector<double> ratios;
        for (size_t r = 0; r < local_rps[which].size(); ++r) ratios.push_back(rpc_rps[which][r] / local_rps[which][r]);
        const double local = cs::bench::Median(local_rps[which]), rpc = cs::bench::Median(rpc_rps[which]),
                     ratio = cs::bench::Median(ratios);
        std::printf("  %-18s in process: %.0f req/s   RPC (one client connection): %.0f req/s   RPC / in "
                    "process: %.2fx (rounds %.2f-%.2fx)\n",
                    (std::string(placements[which].title) + ":").c_str(), local, rpc, ratio,
                    *std::min_element(ratios.begin(), ratios.end()), *std::max_element(ratios.begin(), ratios.end()));
        out[std::string("throughput") + placements[which].key] = {{"backend", "sim"},
                                                                  {"sim_profile", a.sim_profile},
                                                                  {"sim_devices", a.sim_devices},
                                                                  {"concurrency", a.concurrency},
                                                                  {"requests", per_round * a.rounds},
                                                                  {"rounds", a.rounds},
                                                                  {"local_rps", local},
                                                                  {"rpc_rps", rpc},
                                                                  {"rpc_over_local", ratio},
                                                                  {"local_rps_by_round", local_rps[which]},
                                                                  {"rpc_rps_by_round", rpc_rps[which]}};
      }
      std::printf("  errors: %d\n\n", throughput_errors);
      out["throughput_errors"] = throughput_errors;
    }
    out[backend] = Report(measured[0], a.model);
    for (int which = 1; which < kPlacements; ++which) {
      if (skipped[which].empty())
        out[backend + placements[which].key] = Report(measured[which], a.model);
      else
        std::printf("%s: skipped (%s)\n\n", measured[which].title.c_str(), skipped[which].c_str());
    }
    // Against not pinned, from the p50s Report just computed for each.
    const auto& u = out[backend]["latency"];
    const double l0 = u["local_p50_ms"], r0 = u["rpc_p50_ms"];
    for (int which = 1; which < kPlacements; ++which) {
      if (!skipped[which].empty()) continue;
      const auto& p = out[backend + placements[which].key]["latency"];
      const double l1 = p["local_p50_ms"], r1 = p["rpc_p50_ms"];
      std::printf("%s / not pinned on %s, p50 (rounds alternated): in process %.3f / %.3f ms (%.3fx), RPC %.3f / "
                  "%.3f ms (%.3fx); RPC adds %+.0f us (paired median)\n",
                  placements[which].title, backend.c_str(), l1, l0, l1 / l0, r1, r0, r1 / r0,
                  static_cast<double>(p["added_paired_median_us"]));
      out[backend + placements[which].key + "_over_unpinned"] = {{"local_p50", l1 / l0}, {"rpc_p50", r1 / r0}};
    }
    std::printf("\n");
  }
  if (!a.json.empty()) std::ofstream(a.json) << out.dump(2) << "\n";
  return 0;
}
