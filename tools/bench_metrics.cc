// `cellserve bench --metrics compare` (bench_metrics.h).
#include "tools/bench_metrics.h"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "bench/report.h"
#include "runtime/atomic_file.h"
#include "tools/cli_errors.h"

namespace cellserve::tools {

using namespace bench_clock;
using bench::Median;
using bench::Workload;

namespace {

// The metrics' own work, timed in a tight loop on one thread: what the serving path records per
// request (arrival, placement, queue wait, answer, the worker's gauges after its admission) and
// per round (batch size, cells, batches, busy time, the gauges after its completion), and one
// scrape (collect + serialize) of the run's registry (after the measurements; nothing reads its
// counts any more).
struct MetricsCost {
  double request_ns = 0, round_ns = 0, scrape_us = 0;
};

MetricsCost MeasureMetricsCost(monitoring::ServingMetrics& metrics, const std::string& model) {
  constexpr int kN = 200000, kScrapes = 100;
  monitoring::ModelMetrics* mm = metrics.Model(model);
  monitoring::DeviceMetrics* d = metrics.Device("cpu:0");
  monitoring::PoolMetrics* pool = metrics.Pool("cpu:0", model);
  prometheus::Histogram* batch = metrics.BatchSize("cpu:0", model, "lstm.0");
  MetricsCost cost;
  SteadyTime t0 = Now();
  for (int i = 0; i < kN; ++i) {
    metrics.OnArrived();
    d->placements->Increment();
    d->rounds_in_flight->Set(i & 7);
    pool->in_use->Set(i & 1023);
    monitoring::ServingMetrics::OnQueueWait(*mm, 100 + i % 5000);
    metrics.OnAnswered(mm, StatusCode::kOk, 1000 + i % 100000);
  }
  cost.request_ns = Seconds(Now() - t0) * 1e9 / kN;
  t0 = Now();
  for (int i = 0; i < kN; ++i) {
    monitoring::ServingMetrics::OnRound(*d, batch, 1 + i % 256, 0);
    monitoring::ServingMetrics::OnDeviceBusy(*d, 500);
    d->rounds_in_flight->Set(i & 7);
    pool->in_use->Set(i & 1023);
  }
  cost.round_ns = Seconds(Now() - t0) * 1e9 / kN;
  t0 = Now();
  size_t bytes = 0;
  for (int i = 0; i < kScrapes; ++i) bytes += metrics.Serialize().size();
  cost.scrape_us = Seconds(Now() - t0) * 1e6 / kScrapes;
  if (bytes == 0) std::fprintf(stderr, "cellserve bench: empty exposition\n");
  return cost;
}

}  // namespace

Status CompareMetrics(BenchConfig cfg, const Workload& w, const std::vector<std::string>& policies,
                      const std::vector<Policy>& values, monitoring::ServingMetrics* metrics,
                      const MetricsScraper& scraper, int64_t pairs, const std::string& json_path) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  struct Line {
    std::string policy;
    double off = 0, on = 0;          // median saturation, req/s
    double cpu_off = 0, cpu_on = 0;  // median process CPU time per completed request, us
    double rounds_per_request = 0;   // median, metrics on
    std::vector<double> ratios;
  };
  std::vector<Line> lines;
  const size_t total = policies.size() * static_cast<size_t>(pairs) * 2;
  size_t run = 0;
  for (size_t p = 0; p < policies.size(); ++p) {
    std::vector<double> off, on, cpu_off, cpu_on, rounds_on;
    for (int64_t i = 0; i < pairs; ++i) {
      for (int k = 0; k < 2; ++k) {
        const bool with = (k == 0) == (i % 2 == 1);
        cfg.cluster.metrics = with ? metrics : nullptr;
        std::fprintf(stderr, "[%zu/%zu] %s, metrics %s: closed loop, %lld in flight, %.0f s\n", ++run, total,
                     policies[p].c_str(), with ? "on" : "off", static_cast<long long>(cfg.inflight), cfg.duration_s);
        ASSIGN_OR_RETURN(auto cluster, StartBenchCluster(cfg, values[p], cfg.cluster.devices));
        RETURN_IF_ERROR(WarmUp(*cluster, cfg, w));
        auto sat = MeasureSaturation(*cluster, cfg, w, cfg.duration_s);
        cluster->Stop();
        RETURN_IF_ERROR(sat.status());
        std::fprintf(stderr, "    %.1f req/s, %.0f us CPU per request, device busy %.0f%%, mean batch %.1f%s\n",
                     sat->rps, sat->cpu_us_per_request, 100 * sat->figures.device_busy, sat->figures.mean_batch,
                     sat->errors ? (", " + std::to_string(sat->errors) + " errors").c_str() : "");
        (with ? on : off).push_back(sat->rps);
        (with ? cpu_on : cpu_off).push_back(sat->cpu_us_per_request);
        if (with) rounds_on.push_back(sat->rounds_per_request);
      }
    }
    Line line;
    line.policy = policies[p];
    line.off = Median(off);
    line.on = Median(on);
    line.cpu_off = Median(cpu_off);
    line.cpu_on = Median(cpu_on);
    line.rounds_per_request = Median(rounds_on);
    for (size_t i = 0; i < off.size() && i < on.size(); ++i) line.ratios.push_back(off[i] > 0 ? on[i] / off[i] : 0.0);
    out.push_back({{"policy", line.policy},
                   {"model", cfg.model},
                   {"devices", cfg.cluster.devices},
                   {"seconds_per_measurement", cfg.duration_s},
                   {"saturation_rps_metrics_off", off},
                   {"saturation_rps_metrics_on", on},
                   {"median_off_rps", line.off},
                   {"median_on_rps", line.on},
                   {"ratio_on_off", line.off > 0 ? line.on / line.off : 0.0},
                   {"pair_ratios_on_off", line.ratios},
                   {"median_pair_ratio_on_off", Median(line.ratios)},
                   {"cpu_us_per_request_metrics_off", cpu_off},
                   {"cpu_us_per_request_metrics_on", cpu_on},
                   {"median_cpu_us_per_request_off", line.cpu_off},
                   {"median_cpu_us_per_request_on", line.cpu_on}});
    lines.push_back(std::move(line));
  }
  std::printf("\n%s, %d device(s): saturation throughput with and without metrics (%lld pairs, %.0f s each;\n"
              "metrics on = every cell, round and answer recorded, scraped every 1 s; on / off: ratio of the\n"
              "medians; pair med.: median of the per-pair ratios; CPU us: process CPU time per request)\n",
              cfg.model.c_str(), cfg.cluster.devices, static_cast<long long>(pairs), cfg.duration_s);
  std::printf("%-10s %12s %12s %9s %9s %10s %12s %12s   %s\n", "policy", "off (req/s)", "on (req/s)", "on / off",
              "overhead", "pair med.", "CPU us off", "CPU us on", "per-pair on/off");
  for (const Line& l : lines) {
    std::string pair_text;
    for (double r : l.ratios) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.3f", pair_text.empty() ? "" : " ", r);
      pair_text += buf;
    }
    const double ratio = l.off > 0 ? l.on / l.off : 0.0;
    std::printf("%-10s %12.1f %12.1f %9.3f %8.1f%% %10.3f %12.1f %12.1f   %s\n", l.policy.c_str(), l.off, l.on,
                ratio, 100 * (1 - ratio), Median(l.ratios), l.cpu_off, l.cpu_on, pair_text.c_str());
  }
  std::printf("scrapes: %lld, last exposition %zu bytes\n", static_cast<long long>(scraper.scrapes()),
              scraper.last_bytes());
  // The same question from the other side: the metrics' own work against the CPU time a request
  // takes (the throughput ratio above carries the machine's noise; this does not).
  const MetricsCost cost = MeasureMetricsCost(*metrics, cfg.model);
  std::printf("metrics work (tight loop, one thread): %.0f ns per request + %.0f ns per round; %.0f us per scrape\n",
              cost.request_ns, cost.round_ns, cost.scrape_us);
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& l = lines[i];
    const double per_request_us = (cost.request_ns + l.rounds_per_request * cost.round_ns) * 1e-3;
    const double share = l.cpu_off > 0 ? per_request_us / l.cpu_off : 0.0;
    std::printf("%-10s %.2f rounds per request: %.2f us of metrics work per request = %.3f%% of its %.0f us CPU "
                "(metrics off); scrapes: %.4f%% of one core\n",
                l.policy.c_str(), l.rounds_per_request, per_request_us, 100 * share, l.cpu_off,
                100 * cost.scrape_us * 1e-6);
    out[i]["metrics_work_ns_per_request"] = cost.request_ns;
    out[i]["metrics_work_ns_per_round"] = cost.round_ns;
    out[i]["scrape_us"] = cost.scrape_us;
    out[i]["rounds_per_request"] = l.rounds_per_request;
    out[i]["metrics_work_share_of_cpu_per_request"] = share;
  }
  std::fflush(stdout);
  RETURN_IF_ERROR(WriteFileAtomically(json_path, JsonText(out, 2) + "\n"));
  std::fprintf(stderr, "wrote %s\n", json_path.c_str());
  return OkStatus();
}


}  // namespace cellserve::tools
