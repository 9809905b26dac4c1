// `cellserve bench`: sweeps offered load for each scheduling policy on a LocalCluster (the whole
// serving stack in one process) with open-loop Poisson arrivals of real sentences, and reports
// throughput and latency (issue 3, DESIGN.md §9).
//
// The method:
//   - Workload: a corpus file, one sentence per line (bench/workload.h).
//   - Latency floor: the median sentence alone on an idle cluster (policy cellular, --devices),
//     the median of --floor-runs runs. The tail floor: the same for the sentence of 99th-percentile
//     length, the least any policy's p99 can be (the summary puts the p99s beside it).
//   - Saturation (--rates auto): per policy, a closed loop keeps 4 x max_batch requests in flight
//     for duration/2 seconds; saturation = requests completed / time, over the loop's last 80%.
//     The sweep then offers 0.1 ... 1.2 x the best saturation among the policies to every policy
//     (plus 0.8 x the best baseline's, the load issue 3 compares p99 at).
//   - Each run: a sender thread issues Infer at the scheduled arrival times (sleep_until); every
//     request is timed from its scheduled arrival to its answer, so sender lag counts as latency.
//     After the duration, answers are awaited up to --drain-s; requests still unanswered then are
//     counted as such and cancelled. Throughput = completed / (first arrival .. last answer).
//   - A policy that could not keep up at a rate (see OpenLoopRun) skips its higher rates, except
//     0.8 x the best baseline's saturation (--keep-going runs them all).
//   - The floor is measured before and after the sweep; the lower median counts (a busy machine
//     only ever makes it slower).
//   - Metrics (--metrics): `on` runs every cluster with Prometheus metrics recorded
//     (monitoring/metrics.h) and a scraper thread serializing them every second, as a pessimistic
//     Prometheus would; `compare` measures only each policy's saturation (closed loop, --duration-s
//     per measurement), --metrics-pairs times with metrics off and on, alternating the order, and
//     reports throughput with / without (the issue asks for under 2% overhead).
// The measurements themselves are tools/bench_load.h; the metrics comparison tools/bench_metrics.h.
// This file: the flags, the sweep and the summary.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/device_factory.h"
#include "actors/local_cluster.h"
#include "bench/report.h"
#include "bench/workload.h"
#include "monitoring/metrics.h"
#include "runtime/model_repository.h"
#include "runtime/model_spec.h"
#include "runtime/scheduler.h"
#include "tools/bench_load.h"
#include "tools/bench_metrics.h"
#include "tools/cli_errors.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/cpu_precision_flag.h"
#include "tools/retired_flags.h"
#include "tools/fold_flag.h"
#include "tools/output_paths.h"
#include "tools/thread_placement.h"

namespace cellserve::tools {

namespace {

using bench::Row;
using bench::Workload;

int Fail(const Status& s) { return CommandFailed("bench", false, s); }

// A bad flag value: exit status 2, as for unknown flags.
int BadUsage(const Status& s) { return CommandMisused("bench", false, s); }

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

StatusOr<std::vector<double>> ParseRates(const std::string& s) {
  std::vector<double> rates;
  for (const auto& item : SplitList(s)) {
    char* end = nullptr;
    const double r = std::strtod(item.c_str(), &end);
    if (*end || !(r > 0.0) || !std::isfinite(r))
      return InvalidArgument("--rates wants 'auto' or positive numbers R1,R2,..., got '" + item + "'");
    rates.push_back(r);
  }
  if (rates.empty()) return InvalidArgument("--rates wants 'auto' or R1,R2,...");
  return rates;
}

bool IsBaseline(const std::string& policy) { return policy == "padded" || policy == "bucketed"; }

const Row* FindRow(const std::vector<Row>& rows, const std::string& policy, double rate) {
  for (const Row& r : rows)
    if (r.policy == policy && std::fabs(r.offered_rps - rate) <= 1e-6 * std::max(1.0, rate)) return &r;
  return nullptr;
}

// The comparisons issue 3 asks for, from what was measured.
void PrintSummary(const std::vector<Row>& rows, const std::vector<std::string>& policies,
                  const std::vector<std::optional<double>>& saturation, const std::vector<Row>& sat_figures,
                  std::optional<double> floor_ms, std::optional<double> tail_floor_ms,
                  std::optional<double> baseline_point) {
  std::printf("\n");
  if (floor_ms) std::printf("latency floor (median sentence alone on an idle cluster): %.2f ms\n", *floor_ms);
  if (tail_floor_ms)
    std::printf("tail floor (the sentence of 99th-percentile length alone on an idle cluster): %.2f ms\n",
                *tail_floor_ms);
  int cell = -1, best_base = -1;
  for (size_t i = 0; i < policies.size(); ++i) {
    if (policies[i] == "cellular") cell = static_cast<int>(i);
    if (IsBaseline(policies[i]) && saturation[i] &&
        (best_base < 0 || *saturation[i] > *saturation[best_base]))
      best_base = static_cast<int>(i);
  }
  for (size_t i = 0; i < policies.size(); ++i) {
    if (!saturation[i]) continue;
    std::printf("saturation %-10s %9.1f req/s  (closed loop: device busy %.0f%%, mean batch %.1f, padding %.0f%%)\n",
                policies[i].c_str(), *saturation[i], 100 * sat_figures[i].device_busy, sat_figures[i].mean_batch,
                100 * sat_figures[i].padding);
  }
  if (cell >= 0 && best_base >= 0 && saturation[cell]) {
    std::printf("cellular saturation / best baseline (%s): %.2fx\n", policies[best_base].c_str(),
                *saturation[cell] / std::max(*saturation[best_base], 1e-9));
  }
  if (cell >= 0 && baseline_point) {
    const Row* c = FindRow(rows, "cellular", *baseline_point);
    for (const auto& p : policies) {
      if (!IsBaseline(p)) continue;
      const Row* b = FindRow(rows, p, *baseline_point);
      if (c && b && c->completed && b->completed) {
        std::printf("at %.1f req/s (0.8 x best baseline saturation): p99 cellular %.2f ms, %s %.2f ms "
                    "(%s / cellular = %.2fx)\n",
                    *baseline_point, c->p99_ms, p.c_str(), b->p99_ms, p.c_str(), b->p99_ms / std::max(c->p99_ms, 1e-9));
        // A p99 is of the OK answers: requests refused, failed or unanswered are not in it.
        for (const Row* row : {c, b})
          if (const int64_t lost = row->rejected + row->failed + row->unanswered; lost > 0)
            std::printf("  note: %s had %lld of %lld requests refused, failed or unanswered there, which its p99 "
                        "leaves out\n",
                        row->policy.c_str(), static_cast<long long>(lost),
                        static_cast<long long>(lost + row->completed));
        // What a 10x ratio would ask of cellular, against the least a p99 can be.
        if (tail_floor_ms) {
          const double within = b->p99_ms / 10 / std::max(*tail_floor_ms, 1e-9);
          std::printf("  against the tail floor (%.2f ms): cellular p99 %.2fx, %s p99 %.2fx; %s / cellular >= 10 "
                      "needs cellular's p99 within %.2fx of the tail floor%s\n",
                      *tail_floor_ms, c->p99_ms / std::max(*tail_floor_ms, 1e-9), p.c_str(),
                      b->p99_ms / std::max(*tail_floor_ms, 1e-9), p.c_str(), within,
                      within < 1.0 ? " (below the floor: out of reach at this load)" : "");
        }
      } else
        std::printf("at %.1f req/s (0.8 x best baseline saturation): no p99 comparison with %s (not measured)\n",
                    *baseline_point, p.c_str());
    }
  }
  if (cell >= 0 && floor_ms) {
    const Row* low = nullptr;
    for (const Row& r : rows)
      if (r.policy == "cellular" && r.completed && (!low || r.offered_rps < low->offered_rps)) low = &r;
    if (low)
      std::printf("lowest load (%.1f req/s): cellular p50 %.2f ms = %.2fx the floor\n", low->offered_rps,
                  low->p50_ms, low->p50_ms / std::max(*floor_ms, 1e-9));
  }
}

}  // namespace

int BenchCommand(int argc, char** argv) {
  Flags flags("bench",
              "Sweeps offered load for each scheduling policy on the whole serving stack in one process:\n"
              "open-loop Poisson arrivals of real sentences, each request timed from its arrival to its\n"
              "answer. Prints a progress line per run (stderr) and a table; writes JSON (a list of rows\n"
              "{policy, model, offered_rps, throughput_rps, completed, rejected, p50_ms, p90_ms, p99_ms,\n"
              "max_ms, ...}), optionally CSV and a latency-vs-throughput PNG (gnuplot).\n"
              "--rates auto measures each policy's saturation (closed loop) and offers 0.1 .. 1.2 x the\n"
              "best one to every policy.");
  flags.Add("model-repo", "", "model repository folder", true, "CELLSERVE_MODEL_REPO")
      .Add("model", "", "model name in the repository", true)
      .Add("policy", "cellular,padded,bucketed,sequential", "policies to compare, comma-separated")
      .Add("corpus", "", "text file, one sentence per line (default: "
                         "${CELLSERVE_CACHE:-~/.cache/cellserve}/sotu_sentences.txt, made by ./cellserve.sh corpus)")
      .Add("rates", "auto", "offered loads in requests/s, R1,R2,..., or auto")
      .Add("duration-s", "10", "seconds of arrivals per run")
      .Add("devices", "2", "devices (one worker each)")
      .Add("backend", "cpu", "cpu (our CPU kernels), cuda (GPUs; builds with nvcc) or sim (kernels/sim: no "
           "compute, --sim-profile's timing; for scale experiments)")
      .Add("gpu-precision", "fp32", "cuda: fp32, or fp16/bf16 weights with fp32 accumulation")
      .Add("sim-profile", "", "sim: cost profile JSON, e.g. kernels/sim/profiles/gpu-like.json")
      .Add("json", "", "where to write the results (JSON list of rows)", true)
      .Add("csv", "", "also write the rows as CSV here")
      .Add("plot", "", "also draw latency against throughput into this PNG (gnuplot; FILE.gp next to it)")
      .Add("lookahead", "5", "rounds submitted and unfinished per device at most")
      .Add("fill-first-rounds", "4",
           "rounds in a row a cell type with a full max batch ready may go before the oldest request's type "
           "(0: oldest first always)")
      .Add("max-type-wait-rounds", "16",
           "scheduling decisions in a row a cell type with ready cells may be passed over before it goes next (a short request's "
           "last cells then never wait out a long request's run; 0: off)")
      .Add("padded-batch", "32", "padded, bucketed: requests per group")
      .Add("padded-wait-ms", "10", "padded, bucketed: longest wait for a full group (ms)")
      .Add("seed", "1", "seed of the arrival schedules and request order")
      .Add("drain-s", "30", "after a run's arrivals, how long to wait for outstanding answers")
      .Add("floor-runs", "20", "runs of the median sentence alone for the latency floor")
      .Add("caf-threads", "0", "CAF scheduler threads (0: one per CPU this process may use)")
      .Add("metrics", "off",
           "Prometheus metrics: off; on (recorded, scraped every 1 s); compare (saturation only, with and "
           "without, --metrics-pairs times each; JSON: the measurements and ratios)")
      .Add("metrics-pairs", "3", "--metrics compare: off/on measurement pairs per policy")
      .AddBool("keep-going", "run every rate even after a policy could not keep up");
  AddFoldFlag(flags);
  AddCpuPrecisionFlag(flags);
  AddRetiredFlags(flags);
  AddThreadPlacementFlags(flags, "the load generator");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  WarnAboutRetiredFlags(flags, "bench");

  BenchConfig cfg;
  cfg.model = flags.Get("model");
  cfg.cluster.model_repo = flags.Get("model-repo");
  cfg.cluster.models = {cfg.model};
  cfg.keep_going = flags.GetBool("keep-going");
  {
    auto duration = flags.GetDouble("duration-s");
    auto drain = flags.GetDouble("drain-s");
    auto devices = flags.GetIntIn("devices", 1, kMaxDevices);
    auto lookahead = flags.GetIntIn("lookahead", 1, kMaxLookahead);
    auto fill_first = flags.GetIntIn("fill-first-rounds", 0, kMaxFillFirstRounds);
    auto type_wait = flags.GetIntIn("max-type-wait-rounds", 0, kMaxFillFirstRounds);
    auto batch = flags.GetInt("padded-batch");
    auto wait_ms = flags.GetDouble("padded-wait-ms");
    auto seed = flags.GetInt("seed");
    auto floor_runs = flags.GetInt("floor-runs");
    auto caf = flags.GetIntIn("caf-threads", 0, kMaxThreads);
    for (const Status* s : {&duration.status(), &drain.status(), &devices.status(), &lookahead.status(),
                            &fill_first.status(), &type_wait.status(), &batch.status(), &wait_ms.status(), &seed.status(), &floor_runs.status(),
                            &caf.status()})
      if (!s->ok()) return BadUsage(*s);
    // The GetIntIn flags above are range-checked already.
    if (!(*duration > 0) || !(*drain >= 0) || *batch < 1 || !(*wait_ms >= 0) || *floor_runs < 1)
      return BadUsage(InvalidArgument("--duration-s, --padded-batch and --floor-runs must be positive; "
                                      "--drain-s and --padded-wait-ms not negative"));
    if (*wait_ms > 3600000)  // the scheduler's bound (an hour)
      return BadUsage(InvalidArgument("--padded-wait-ms must be at most 3600000 (an hour)"));
    cfg.duration_s = *duration;
    cfg.drain_s = *drain;
    cfg.cluster.devices = static_cast<int>(*devices);
    cfg.cluster.scheduler.lookahead = static_cast<int>(*lookahead);
    cfg.cluster.scheduler.fill_first_rounds = static_cast<int>(*fill_first);
    cfg.cluster.scheduler.max_type_wait_rounds = static_cast<int>(*type_wait);
    cfg.cluster.scheduler.padded_batch = *batch;
    cfg.cluster.scheduler.padded_wait_us = static_cast<int64_t>(*wait_ms * 1000.0);
    cfg.seed = static_cast<uint64_t>(*seed);
    cfg.floor_runs = *floor_runs;
    cfg.cluster.caf_threads = static_cast<int>(*caf);
    cfg.cluster.backend = flags.Get("backend");
    cfg.cluster.sim_profile = flags.Get("sim-profile");
    cfg.cluster.gpu_precision = flags.Get("gpu-precision");
    if (Status s = CheckGpuPrecisionApplies(cfg.cluster.backend, cfg.cluster.gpu_precision); !s.ok())
      return BadUsage(s);
    auto fold_max = FoldMaxBytes(flags);
    if (!fold_max.ok()) return BadUsage(fold_max.status());
    cfg.cluster.fold_max_bytes = *fold_max;
    if (Status s = CheckCpuPrecisionApplies(cfg.cluster.backend, false, flags.Get("cpu-precision") == "bf16"); !s.ok())
      return BadUsage(s);  // bench has no --cpu-fallback
    auto bf16 = CpuBf16Compute(flags);
    if (!bf16.ok()) return BadUsage(bf16.status());
    cfg.cluster.cpu_bf16 = *bf16;
  }
  // Before any thread starts: they all inherit the caller's CPUs.
  if (Status placed = ApplyThreadPlacement(flags, cfg.cluster, "bench"); !placed.ok()) return BadUsage(placed);

  std::vector<std::string> policies = SplitList(flags.Get("policy"));
  if (policies.empty()) return BadUsage(InvalidArgument("--policy names no policy"));
  std::vector<Policy> policy_values;
  for (const auto& p : policies) {
    auto v = ParsePolicy(p);
    if (!v.ok()) return BadUsage(v.status());
    policy_values.push_back(*v);
  }
  const std::string metrics_mode = flags.Get("metrics");
  if (metrics_mode != "off" && metrics_mode != "on" && metrics_mode != "compare")
    return BadUsage(InvalidArgument("--metrics wants off, on or compare, got '" + metrics_mode + "'"));
  auto metrics_pairs = flags.GetInt("metrics-pairs");
  if (!metrics_pairs.ok()) return BadUsage(metrics_pairs.status());
  if (*metrics_pairs < 1) return BadUsage(InvalidArgument("--metrics-pairs must be positive"));
  const bool auto_rates = flags.Get("rates") == "auto";
  std::vector<double> rates;
  if (!auto_rates) {
    auto r = ParseRates(flags.Get("rates"));
    if (!r.ok()) return BadUsage(r.status());
    rates = *r;
    for (double rate : rates)
      if (Status s = bench::CheckScheduleSize(rate, cfg.duration_s); !s.ok()) return BadUsage(s);
  }

  auto spec = ReadModelSpec(cfg.cluster.model_repo + "/" + cfg.model + "/spec.json");
  if (!spec.ok()) {
    Status s = spec.status().WithContext("model '" + cfg.model + "'");
    if (auto names = ListModels(cfg.cluster.model_repo); names.ok()) {
      std::string list;
      for (const auto& n : *names) list += (list.empty() ? "" : ", ") + n;
      s = Status(s.code(), s.message() + " (models in " + cfg.cluster.model_repo + ": " +
                               (list.empty() ? "none" : list) + ")");
    }
    return Fail(s);
  }
  cfg.inflight = 4 * spec->max_batch;
  const std::string corpus = flags.Get("corpus").empty() ? bench::DefaultCorpusPath() : flags.Get("corpus");
  // Before minutes of runs, not after them.
  if (Status s = CheckOutputPaths({{"--json", flags.Get("json")},
                                   {"--csv", flags.Get("csv")},
                                   {"--plot", flags.Get("plot")}},
                                  {{"--corpus", corpus}});
      !s.ok())
    return BadUsage(s);
  auto workload = bench::LoadWorkload(corpus, bench::WorkloadOptionsFor(*spec));
  if (!workload.ok()) return Fail(workload.status());
  const Workload& w = *workload;
  std::fprintf(stderr,
               "bench: model %s (%s, hidden %lld, %lld layer(s)), %d device(s); corpus %s: %lld requests "
               "(%s mean %.1f, median %lld, max %lld; skipped %lld empty, %lld over %lld)\n",
               cfg.model.c_str(), ModelKindName(spec->kind), static_cast<long long>(spec->hidden),
               static_cast<long long>(spec->layers), cfg.cluster.devices, corpus.c_str(),
               static_cast<long long>(w.stats.used), spec->kind == ModelKind::kTreeLstm ? "leaves" : "tokens",
               w.stats.mean_length, static_cast<long long>(w.stats.median_length),
               static_cast<long long>(w.stats.max_length), static_cast<long long>(w.stats.empty),
               static_cast<long long>(w.stats.too_long), static_cast<long long>(spec->max_input_tokens));

  // Metrics: one registry for the whole run (clusters come and go; their series add up), scraped
  // every second from the start.
  std::unique_ptr<monitoring::ServingMetrics> metrics;
  std::unique_ptr<MetricsScraper> scraper;
  if (metrics_mode != "off") {
    metrics = std::make_unique<monitoring::ServingMetrics>();
    scraper = std::make_unique<MetricsScraper>(metrics.get(), std::chrono::milliseconds(1000));
    if (metrics_mode == "on") cfg.cluster.metrics = metrics.get();
  }
  if (metrics_mode == "compare") {
    Status compared =
        CompareMetrics(cfg, w, policies, policy_values, metrics.get(), *scraper, *metrics_pairs, flags.Get("json"));
    return compared.ok() ? 0 : Fail(compared);
  }

  // The floor.
  std::optional<double> floor_ms;
  {
    auto f = MeasureFloor(cfg, w);
    if (!f.ok()) return Fail(f.status().WithContext("latency floor"));
    floor_ms = *f;
    std::fprintf(stderr, "bench: latency floor %.2f ms (median sentence, %lld %s, alone on the idle cluster of %d "
                 "device(s))\n",
                 *floor_ms, static_cast<long long>(w.stats.median_length),
                 spec->kind == ModelKind::kTreeLstm ? "leaves" : "tokens", cfg.cluster.devices);
  }
  // The same, each run after 50 ms of idleness: what the machine itself adds at low load.
  std::optional<double> idle_floor_ms;
  if (auto f = MeasureFloor(cfg, w, 50); f.ok()) idle_floor_ms = *f;
  // The tail floor: the sentence of 99th-percentile length alone.
  std::optional<double> tail_floor_ms;
  if (auto f = MeasureFloor(cfg, w, 0, 99); f.ok()) {
    tail_floor_ms = *f;
    std::fprintf(stderr, "bench: tail floor %.2f ms (the p99-length sentence, %lld %s, alone on an idle cluster)\n",
                 *tail_floor_ms, static_cast<long long>(w.stats.p99_length),
                 spec->kind == ModelKind::kTreeLstm ? "leaves" : "tokens");
  }

  // Saturation of each policy, then the shared rates.
  std::vector<std::optional<double>> saturation(policies.size());
  std::vector<Row> sat_figures(policies.size());
  std::optional<double> baseline_point;  // 0.8 x the best baseline's saturation
  double reference = 0.0;                // the best saturation: load = rate / reference
  if (auto_rates) {
    const double seconds = std::max(1.0, cfg.duration_s / 2);
    for (size_t p = 0; p < policies.size(); ++p) {
      std::fprintf(stderr, "[saturation %zu/%zu] %s: closed loop, %lld in flight, %.0f s\n", p + 1,
                   policies.size(), policies[p].c_str(), static_cast<long long>(cfg.inflight), seconds);
      auto cluster = StartBenchCluster(cfg, policy_values[p], cfg.cluster.devices);
      if (!cluster.ok()) return Fail(cluster.status());
      if (Status s = WarmUp(**cluster, cfg, w); !s.ok()) return Fail(s);
      auto sat = MeasureSaturation(**cluster, cfg, w, seconds);
      (*cluster)->Stop();
      if (!sat.ok()) return Fail(sat.status());
      saturation[p] = sat->rps;
      sat_figures[p] = sat->figures;
      std::fprintf(stderr, "    %.1f req/s, device busy %.0f%%, mean batch %.1f, padding %.0f%%%s\n", sat->rps,
                   100 * sat->figures.device_busy, sat->figures.mean_batch, 100 * sat->figures.padding,
                   sat->errors ? (", " + std::to_string(sat->errors) + " errors").c_str() : "");
      reference = std::max(reference, sat->rps);
    }
    if (!(reference > 0)) return Fail(Internal("no policy completed a request in the saturation runs"));
    for (double f : {0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.2}) rates.push_back(f * reference);
    double best_base = 0.0;
    for (size_t p = 0; p < policies.size(); ++p)
      if (IsBaseline(policies[p]) && saturation[p]) best_base = std::max(best_base, *saturation[p]);
    const bool has_cellular = std::find(policies.begin(), policies.end(), "cellular") != policies.end();
    if (has_cellular && best_base > 0) {
      baseline_point = 0.8 * best_base;
      bool near = false;
      for (double r : rates) near = near || std::fabs(r - *baseline_point) <= 0.01 * r;
      if (near) {
        for (double r : rates)
          if (std::fabs(r - *baseline_point) <= 0.01 * r) baseline_point = r;
      } else {
        rates.push_back(*baseline_point);
      }
    }
    std::sort(rates.begin(), rates.end());
    if (Status s = bench::CheckScheduleSize(rates.back(), cfg.duration_s); !s.ok()) return Fail(s);
  }

  // The sweep. Schedules depend on the rate's index only, so every policy sees the same arrivals.
  std::vector<Row> rows;
  const size_t total_runs = policies.size() * rates.size();
  size_t run = 0;
  bool write_failed = false;
  for (size_t p = 0; p < policies.size(); ++p) {
    auto cluster = StartBenchCluster(cfg, policy_values[p], cfg.cluster.devices);
    if (!cluster.ok()) return Fail(cluster.status());
    if (Status s = WarmUp(**cluster, cfg, w); !s.ok()) return Fail(s);
    bool saturated = false;  // could not keep up at a lower rate
    for (size_t r = 0; r < rates.size(); ++r) {
      ++run;
      // Past saturation only the load issue 3 compares p99 at is still run.
      const bool compare_point = baseline_point && rates[r] == *baseline_point &&
                                 (IsBaseline(policies[p]) || policies[p] == "cellular");
      if (saturated && !compare_point) continue;
      const double left_s = (total_runs - run + 1) * (cfg.duration_s + 0.5);
      std::fprintf(stderr, "[%zu/%zu] %-10s %8.1f req/s for %.0f s   (about %.0f s left)\n", run, total_runs,
                   policies[p].c_str(), rates[r], cfg.duration_s, left_s);
      const uint64_t seed = bench::MixSeed(cfg.seed, 100 + r);
      bool overloaded = false;
      Row row = OpenLoopRun(**cluster, cfg, w, policies[p], rates[r], seed, &overloaded);
      if (reference > 0) row.load = rates[r] / reference;
      row.saturation_rps = saturation[p];
      row.floor_ms = floor_ms;
      std::fprintf(stderr, "    -> %.1f req/s done, p50 %.2f ms, p99 %.2f ms, busy %.0f%%%s\n", row.throughput_rps,
                   row.p50_ms, row.p99_ms, 100 * row.device_busy,
                   (row.rejected || row.failed || row.unanswered)
                       ? (", " + std::to_string(row.rejected) + " rejected, " + std::to_string(row.failed) +
                          " failed, " + std::to_string(row.unanswered) + " unanswered")
                             .c_str()
                       : "");
      rows.push_back(row);
      if (Status s = bench::WriteJson(flags.Get("json"), rows); !s.ok()) {  // after every run
        if (!write_failed) std::fprintf(stderr, "cellserve bench: %s\n", s.ToString().c_str());
        write_failed = true;
      }
      if (!cfg.keep_going && !saturated && r + 1 < rates.size() && overloaded) {
        saturated = true;
        size_t skipped = 0;
        for (size_t q = r + 1; q < rates.size(); ++q)
          skipped += !(baseline_point && rates[q] == *baseline_point &&
                       (IsBaseline(policies[p]) || policies[p] == "cellular"));
        if (skipped > 0)
          std::fprintf(stderr, "    %s could not keep up at %.1f req/s: skipping %zu higher rate(s) "
                               "(--keep-going runs them)\n",
                       policies[p].c_str(), rates[r], skipped);
      }
    }
    (*cluster)->Stop();
  }

  // The floor again, now that the sweep is over: the lower of the two medians counts.
  if (auto f = MeasureFloor(cfg, w); f.ok()) {
    std::fprintf(stderr, "bench: latency floor again after the sweep: %.2f ms\n", *f);
    if (*f < *floor_ms) {
      floor_ms = *f;
      for (Row& row : rows) row.floor_ms = floor_ms;
    }
  } else {
    std::fprintf(stderr, "cellserve bench: latency floor after the sweep: %s\n", f.status().ToString().c_str());
  }

  std::printf("\n%s: %s, %d device(s), %.0f s per run, open-loop Poisson arrivals\n", cfg.model.c_str(),
              ModelKindName(spec->kind), cfg.cluster.devices, cfg.duration_s);
  bench::PrintTable(stdout, rows);
  PrintSummary(rows, policies, saturation, sat_figures, floor_ms, tail_floor_ms, baseline_point);
  if (idle_floor_ms) {
    const Row* low = nullptr;
    for (const Row& r : rows)
      if (r.policy == "cellular" && r.completed && (!low || r.offered_rps < low->offered_rps)) low = &r;
    std::printf("latency floor after 50 ms idle (the same request alone, each run after 50 ms with nothing to do): "
                "%.2f ms\n", *idle_floor_ms);
    if (low)
      std::printf("lowest load (%.1f req/s): cellular p50 %.2f ms = %.2fx the floor after idle\n", low->offered_rps,
                  low->p50_ms, low->p50_ms / std::max(*idle_floor_ms, 1e-9));
  }
  std::fflush(stdout);

  int rc = 0;
  if (Status s = bench::WriteJson(flags.Get("json"), rows); !s.ok()) {
    std::fprintf(stderr, "cellserve bench: %s\n", s.ToString().c_str());
    rc = 1;
  } else {
    std::fprintf(stderr, "wrote %s\n", flags.Get("json").c_str());
  }
  if (!flags.Get("csv").empty()) {
    if (Status s = bench::WriteCsv(flags.Get("csv"), rows); !s.ok()) {
      std::fprintf(stderr, "cellserve bench: %s\n", s.ToString().c_str());
      rc = 1;
    } else {
      std::fprintf(stderr, "wrote %s\n", flags.Get("csv").c_str());
    }
  }
  if (!flags.Get("plot").empty()) {
    const std::string title = cfg.model + " (" + ModelKindName(spec->kind) + ", hidden " +
                              std::to_string(spec->hidden) + "), " + std::to_string(cfg.cluster.devices) +
                              " device(s): latency against throughput";
    Status s = bench::WritePlot(rows, flags.Get("plot"), title);
    if (s.code() == StatusCode::kUnavailable) {
      std::fprintf(stderr, "cellserve bench: no plot: %s\n", s.message().c_str());
    } else if (!s.ok()) {
      std::fprintf(stderr, "cellserve bench: plot: %s\n", s.ToString().c_str());
      rc = 1;
    } else {
      std::fprintf(stderr, "wrote %s\n", flags.Get("plot").c_str());
    }
  }
  return rc;
}

}  // namespace cellserve::tools
