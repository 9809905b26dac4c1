// `cellserve bench`: sweeps offered load for each scheduling policy on a LocalCluster (the whole
// serving stack in one process) with open-loop Poisson arrivals of real sentences, and reports
// throughput and latency (issue 3, DESIGN.md §9).
//
// The method:
//   - Workload: a corpus file, one sentence per line (bench/workload.h).
//   - Latency floor: the median sentence alone on an idle cluster (policy cellular, one device),
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
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/local_cluster.h"
#include "bench/report.h"
#include "monitoring/metrics.h"
#include "bench/workload.h"
#include "runtime/model_repository.h"
#include "runtime/model_spec.h"
#include "runtime/scheduler.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/fold_flag.h"
#include "tools/thread_placement.h"

namespace cellserve::tools {

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;
using bench::Row;
using bench::Workload;

SteadyTime Now() { return std::chrono::steady_clock::now(); }
double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Ms(std::chrono::steady_clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
std::chrono::steady_clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

int Fail(const Status& s) {
  std::fprintf(stderr, "cellserve bench: %s\n", s.ToString().c_str());
  return 1;
}

// A bad flag value: exit status 2, as for unknown flags.
int BadUsage(const Status& s) {
  std::fprintf(stderr, "cellserve bench: %s (cellserve bench --help lists the flags)\n", s.ToString().c_str());
  return 2;
}

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

struct Config {
  LocalClusterOptions cluster;  // everything but the policy
  std::string model;
  double duration_s = 10.0;
  double drain_s = 30.0;
  uint64_t seed = 1;
  int64_t floor_runs = 20;
  int64_t inflight = 1024;  // closed loop: requests in flight
  bool keep_going = false;
};

// What a Prometheus server scraping every `interval` costs: collect and serialize the metrics on
// a thread of its own.
class Scraper {
 public:
  Scraper(monitoring::ServingMetrics* metrics, std::chrono::milliseconds interval)
      : metrics_(metrics), interval_(interval), thread_([this] { Loop(); }) {}
  ~Scraper() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  int64_t scrapes() const { return scrapes_.load(); }
  size_t last_bytes() const { return bytes_.load(); }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval_, [&] { return stop_; })) {
      lock.unlock();
      bytes_ = metrics_->Serialize().size();
      ++scrapes_;
      lock.lock();
    }
  }
  monitoring::ServingMetrics* metrics_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::atomic<int64_t> scrapes_{0};
  std::atomic<size_t> bytes_{0};
  std::thread thread_;
};

// Device counters of a cluster summed over its devices, and the CPU time of the whole process.
struct Counters {
  int64_t busy_us = 0, rounds = 0, cells = 0, padding_rows = 0;
  double cpu_s = 0;
};

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

Counters Snapshot(const LocalCluster& cluster) {
  Counters c;
  c.cpu_s = ProcessCpuSeconds();
  for (const auto& d : cluster.Report().devices) {
    c.busy_us += d.busy_us;
    c.rounds += d.rounds;
    c.cells += d.cells;
    c.padding_rows += d.padding_rows;
  }
  return c;
}

// Fills busy, mean batch and padding of `row` from counters before and after a window.
void SetDeviceFigures(const Counters& a, const Counters& b, double window_s, int devices, Row* row) {
  const double busy_s = (b.busy_us - a.busy_us) * 1e-6;
  row->device_busy = window_s > 0 ? busy_s / (window_s * std::max(devices, 1)) : 0.0;
  const double rounds = static_cast<double>(b.rounds - a.rounds);
  const double cells = static_cast<double>(b.cells - a.cells);
  const double pad = static_cast<double>(b.padding_rows - a.padding_rows);
  row->mean_batch = rounds > 0 ? cells / rounds : 0.0;
  row->padding = cells + pad > 0 ? pad / (cells + pad) : 0.0;
}

StatusOr<std::unique_ptr<LocalCluster>> StartCluster(const Config& cfg, Policy policy, int devices) {
  LocalClusterOptions options = cfg.cluster;
  options.scheduler.policy = policy;
  options.devices = devices;
  auto cluster = LocalCluster::Start(options);
  if (!cluster.ok()) return cluster.status().WithContext(std::string("starting a ") + PolicyName(policy) + " cluster");
  return cluster;
}

// One request alone: its latency in ms, or its error.
StatusOr<double> RunOne(LocalCluster& cluster, const std::string& model, const RequestInput& input,
                        double timeout_s) {
  struct Answer {
    Status status;
    SteadyTime at;
  };
  auto promise = std::make_shared<std::promise<Answer>>();
  auto future = promise->get_future();
  const SteadyTime start = Now();
  const uint64_t id = cluster.Infer(model, input, 0, [promise](StatusOr<RequestResult> r) {
    promise->set_value(Answer{r.ok() ? OkStatus() : r.status(), Now()});
  });
  if (future.wait_for(FromSeconds(timeout_s)) != std::future_status::ready) {
    cluster.Cancel(id);
    future.wait_for(FromSeconds(timeout_s));
    return DeadlineExceeded("no answer in " + std::to_string(timeout_s) + " s");
  }
  Answer a = future.get();
  if (!a.status.ok()) return a.status;
  return Ms(a.at - start);
}

// A few requests, so the first measured ones do not pay for cold caches and lazy starts.
Status WarmUp(LocalCluster& cluster, const Config& cfg, const Workload& w) {
  for (size_t i = 0; i < std::min<size_t>(5, w.requests.size()); ++i) {
    auto r = RunOne(cluster, cfg.model, w.requests[i * w.requests.size() / 5].input, 60.0);
    if (!r.ok()) return r.status().WithContext("warm-up request");
  }
  return OkStatus();
}

// The latency floor: the median sentence alone on an idle cluster, median of cfg.floor_runs.
// Policy cellular, so a lone request's independent cells (Tree-LSTM leaves) still run batched,
// as they would for any policy but sequential; one device. idle_ms > 0: each run starts after
// that long with nothing to do, as a lone request at low load does (threads asleep, caches cold);
// 0: back to back (the floor the targets use). length_percentile: which sentence (50: the median
// length; 99: the tail floor).
StatusOr<double> MeasureFloor(const Config& cfg, const Workload& w, int64_t idle_ms = 0,
                              double length_percentile = 50) {
  ASSIGN_OR_RETURN(auto cluster, StartCluster(cfg, Policy::kCellular, 1));
  const RequestInput& input = w.requests[bench::RequestAtLengthPercentile(w, length_percentile)].input;
  for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(RunOne(*cluster, cfg.model, input, 60.0).status());
  std::vector<double> ms;
  for (int64_t i = 0; i < std::max<int64_t>(cfg.floor_runs, 1); ++i) {
    if (idle_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
    ASSIGN_OR_RETURN(double t, RunOne(*cluster, cfg.model, input, 60.0));
    ms.push_back(t);
  }
  cluster->Stop();
  std::sort(ms.begin(), ms.end());
  return bench::NearestRank(ms, 50);
}

struct Saturation {
  double rps = 0.0;
  Row figures;  // device_busy, mean_batch, padding over the measured window
  int64_t errors = 0;
  double cpu_us_per_request = 0.0;  // process CPU time over the window / requests completed in it
  double rounds_per_request = 0.0;  // rounds submitted over the window / requests completed in it
};

// Closed loop: keeps cfg.inflight requests in flight for `seconds`; counts what completes in the
// last 80% of that time (the first 20% fills the pipeline).
StatusOr<Saturation> MeasureSaturation(LocalCluster& cluster, const Config& cfg, const Workload& w,
                                       double seconds) {
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    int64_t answers = 0, errors = 0, in_window = 0;
    SteadyTime window_start, window_end;
    std::vector<uint64_t> ids;       // by issue index
    std::vector<uint8_t> answered;   // by issue index
  };
  auto st = std::make_shared<State>();
  const auto order = bench::SeededShuffle(w.requests.size(), bench::MixSeed(cfg.seed, 7));
  const SteadyTime start = Now();
  const SteadyTime end = start + FromSeconds(seconds);
  st->window_start = start + FromSeconds(0.2 * seconds);
  st->window_end = end;
  const size_t capacity = 1 << 20;  // far above what any run issues; no reallocation races
  st->ids.reserve(capacity);
  {
    std::lock_guard<std::mutex> lock(st->mu);
    st->answered.assign(capacity, 0);
  }

  int64_t issued = 0;
  auto issue = [&] {
    const size_t k = static_cast<size_t>(issued++);
    const auto& input = w.requests[order[k % order.size()]].input;
    const uint64_t id = cluster.Infer(cfg.model, input, 0, [st, k](StatusOr<RequestResult> r) {
      const SteadyTime t = Now();
      std::lock_guard<std::mutex> lock(st->mu);
      st->answered[k] = 1;
      ++st->answers;
      if (!r.ok()) {
        if (t <= st->window_end) ++st->errors;  // not the cancellations at the end
      } else if (t >= st->window_start && t <= st->window_end) ++st->in_window;
      st->cv.notify_all();
    });
    std::lock_guard<std::mutex> lock(st->mu);
    st->ids.push_back(id);
  };

  std::optional<Counters> before;
  Counters after;
  for (;;) {
    const SteadyTime now = Now();
    if (!before && now >= st->window_start) before = Snapshot(cluster);
    if (now >= end) break;
    int64_t answers;
    {
      std::lock_guard<std::mutex> lock(st->mu);
      answers = st->answers;
    }
    while (issued - answers < cfg.inflight && static_cast<size_t>(issued) < capacity) issue();
    std::unique_lock<std::mutex> lock(st->mu);
    st->cv.wait_until(lock, std::min(end, now + std::chrono::milliseconds(20)),
                      [&] { return issued - st->answers < cfg.inflight; });
  }
  after = Snapshot(cluster);
  if (!before) before = after;

  Saturation sat;
  {
    std::unique_lock<std::mutex> lock(st->mu);
    sat.rps = st->in_window / Seconds(st->window_end - st->window_start);
    sat.errors = st->errors;
    // Cancel what is still in flight, and wait for those answers so the cluster is idle again.
    for (size_t k = 0; k < st->ids.size(); ++k)
      if (!st->answered[k]) {
        const uint64_t id = st->ids[k];
        lock.unlock();
        cluster.Cancel(id);
        lock.lock();
      }
    if (!st->cv.wait_for(lock, FromSeconds(std::max(cfg.drain_s, 5.0)), [&] { return st->answers == issued; }))
      std::fprintf(stderr, "cellserve bench: %lld closed-loop requests still unanswered after cancelling\n",
                   static_cast<long long>(issued - st->answers));
  }
  SetDeviceFigures(*before, after, Seconds(st->window_end - st->window_start), cfg.cluster.devices, &sat.figures);
  {
    std::lock_guard<std::mutex> lock(st->mu);
    if (st->in_window > 0) {
      sat.cpu_us_per_request = (after.cpu_s - before->cpu_s) * 1e6 / st->in_window;
      sat.rounds_per_request = static_cast<double>(after.rounds - before->rounds) / st->in_window;
    }
  }
  return sat;
}

// One open-loop run at `rate` for cfg.duration_s; fills the row's counts and latencies.
// *overloaded: the policy could not keep up (requests unanswered or rejected, completions slower
// than 85% of the arrivals, or answers more than max(1 s, duration/2) after the last arrival), so
// higher rates would only pile up a backlog.
Row OpenLoopRun(LocalCluster& cluster, const Config& cfg, const Workload& w, const std::string& policy,
                double rate, uint64_t seed, bool* overloaded) {
  *overloaded = false;
  Row row;
  row.policy = policy;
  row.model = cfg.model;
  row.offered_rps = rate;
  const auto schedule = bench::PoissonSchedule(rate, cfg.duration_s, w.requests.size(), seed);
  const size_t n = schedule.size();
  row.sent = static_cast<int64_t>(n);
  if (n == 0) return row;

  struct State {
    std::mutex mu;
    std::condition_variable cv;
    size_t answers = 0;
    std::vector<uint8_t> answered;
    std::vector<StatusCode> code;
    std::vector<SteadyTime> at;
  };
  auto st = std::make_shared<State>();
  st->answered.assign(n, 0);
  st->code.assign(n, StatusCode::kOk);
  st->at.assign(n, SteadyTime{});
  std::vector<uint64_t> ids(n, 0);

  const Counters before = Snapshot(cluster);
  const SteadyTime start = Now() + std::chrono::milliseconds(20);
  std::thread sender([&] {
    for (size_t i = 0; i < n; ++i) {
      std::this_thread::sleep_until(start + std::chrono::microseconds(schedule[i].at_us));
      ids[i] = cluster.Infer(cfg.model, w.requests[schedule[i].request].input, 0,
                             [st, i, n](StatusOr<RequestResult> r) {
                               const SteadyTime t = Now();
                               std::lock_guard<std::mutex> lock(st->mu);
                               if (st->answered[i]) return;  // never twice, but be safe
                               st->answered[i] = 1;
                               st->code[i] = r.ok() ? StatusCode::kOk : r.status().code();
                               st->at[i] = t;
                               if (++st->answers == n) st->cv.notify_all();
                             });
    }
  });
  sender.join();  // ends at the last arrival (< duration)

  std::vector<uint8_t> answered;
  std::vector<StatusCode> code;
  std::vector<SteadyTime> at;
  {
    std::unique_lock<std::mutex> lock(st->mu);
    const SteadyTime deadline = start + FromSeconds(cfg.duration_s + cfg.drain_s);
    st->cv.wait_until(lock, deadline, [&] { return st->answers == n; });
    answered = st->answered;
    code = st->code;
    at = st->at;
  }
  const Counters after = Snapshot(cluster);

  // Requests unanswered by now are reported as such, then cancelled; wait for those answers so
  // the next run starts on an idle cluster.
  for (size_t i = 0; i < n; ++i) {
    if (answered[i]) continue;
    ++row.unanswered;
    cluster.Cancel(ids[i]);
  }
  if (row.unanswered > 0) {
    std::unique_lock<std::mutex> lock(st->mu);
    if (!st->cv.wait_for(lock, std::chrono::seconds(30), [&] { return st->answers == n; }))
      std::fprintf(stderr, "cellserve bench: %zu requests unanswered even after cancelling\n", n - st->answers);
  }

  const SteadyTime first_arrival = start + std::chrono::microseconds(schedule.front().at_us);
  SteadyTime last_answer = first_arrival, last_any = first_arrival;
  std::vector<double> latencies;
  latencies.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!answered[i]) continue;
    last_any = std::max(last_any, at[i]);
    if (code[i] == StatusCode::kOk) {
      ++row.completed;
      last_answer = std::max(last_answer, at[i]);
      latencies.push_back(Ms(at[i] - (start + std::chrono::microseconds(schedule[i].at_us))));
    } else if (code[i] == StatusCode::kResourceExhausted) {
      ++row.rejected;
    } else {
      ++row.failed;
    }
  }
  row.SetLatency(bench::ComputeLatencyStats(std::move(latencies)));
  row.duration_s = Seconds(last_answer - first_arrival);
  row.throughput_rps = row.duration_s > 0 ? row.completed / row.duration_s : 0.0;
  const SteadyTime window_end = row.unanswered ? start + FromSeconds(cfg.duration_s + cfg.drain_s) : last_any;
  SetDeviceFigures(before, after, Seconds(window_end - start), cfg.cluster.devices, &row);

  const double arrival_span_s = (schedule.back().at_us - schedule.front().at_us) * 1e-6;
  const double arrival_rps = arrival_span_s > 0 ? (n - 1) / arrival_span_s : 0.0;
  *overloaded = row.unanswered > 0 || row.rejected > 0 ||
                (n >= 20 && row.throughput_rps < 0.85 * arrival_rps) ||
                row.duration_s > arrival_span_s + std::max(1.0, 0.5 * cfg.duration_s);
  return row;
}

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

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

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
  prometheus::Histogram* batch = metrics.BatchSize("cpu:0", "lstm.0");
  MetricsCost cost;
  SteadyTime t0 = Now();
  for (int i = 0; i < kN; ++i) {
    metrics.OnArrived();
    d->placements->Increment();
    d->rounds_in_flight->Set(i & 7);
    d->slots_in_use->Set(i & 1023);
    monitoring::ServingMetrics::OnQueueWait(*mm, 100 + i % 5000);
    metrics.OnAnswered(mm, StatusCode::kOk, 1000 + i % 100000);
  }
  cost.request_ns = Seconds(Now() - t0) * 1e9 / kN;
  t0 = Now();
  for (int i = 0; i < kN; ++i) {
    monitoring::ServingMetrics::OnRound(*d, batch, 1 + i % 256, 0);
    monitoring::ServingMetrics::OnDeviceBusy(*d, 500);
    d->rounds_in_flight->Set(i & 7);
    d->slots_in_use->Set(i & 1023);
  }
  cost.round_ns = Seconds(Now() - t0) * 1e9 / kN;
  t0 = Now();
  size_t bytes = 0;
  for (int i = 0; i < kScrapes; ++i) bytes += metrics.Serialize().size();
  cost.scrape_us = Seconds(Now() - t0) * 1e6 / kScrapes;
  if (bytes == 0) std::fprintf(stderr, "cellserve bench: empty exposition\n");
  return cost;
}

// --metrics compare: each policy's saturation (closed loop, cfg.duration_s per measurement),
// `pairs` times without and with metrics, alternating which goes first (off/on, on/off, ...) so a
// drift of the machine's speed hits both alike. Reports the ratio of the medians.
int CompareMetrics(Config cfg, const Workload& w, const std::vector<std::string>& policies,
                   const std::vector<Policy>& values, monitoring::ServingMetrics* metrics, const Scraper& scraper,
                   int64_t pairs, const std::string& json_path) {
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
        auto cluster = StartCluster(cfg, values[p], cfg.cluster.devices);
        if (!cluster.ok()) return Fail(cluster.status());
        if (Status s = WarmUp(**cluster, cfg, w); !s.ok()) return Fail(s);
        auto sat = MeasureSaturation(**cluster, cfg, w, cfg.duration_s);
        (*cluster)->Stop();
        if (!sat.ok()) return Fail(sat.status());
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
  std::FILE* f = std::fopen(json_path.c_str(), "w");
  const std::string text = out.dump(2) + "\n";
  if (!f || std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fclose(f) != 0)
    return Fail(Internal("cannot write " + json_path));
  std::fprintf(stderr, "wrote %s\n", json_path.c_str());
  return 0;
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
      .Add("padded-batch", "32", "padded, bucketed: requests per group")
      .Add("padded-wait-ms", "10", "padded, bucketed: longest wait for a full group (ms)")
      .Add("seed", "1", "seed of the arrival schedules and request order")
      .Add("drain-s", "30", "after a run's arrivals, how long to wait for outstanding answers")
      .Add("floor-runs", "20", "runs of the median sentence alone for the latency floor")
      .Add("blas-threads", "1", "OpenBLAS threads (process-wide)")
      .Add("caf-threads", "0", "CAF scheduler threads (0: one per CPU this process may use)")
      .Add("metrics", "off",
           "Prometheus metrics: off; on (recorded, scraped every 1 s); compare (saturation only, with and "
           "without, --metrics-pairs times each; JSON: the measurements and ratios)")
      .Add("metrics-pairs", "3", "--metrics compare: off/on measurement pairs per policy")
      .AddBool("keep-going", "run every rate even after a policy could not keep up");
  AddFoldFlag(flags);
  AddThreadPlacementFlags(flags, "the load generator");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;

  Config cfg;
  cfg.model = flags.Get("model");
  cfg.cluster.model_repo = flags.Get("model-repo");
  cfg.cluster.models = {cfg.model};
  cfg.keep_going = flags.GetBool("keep-going");
  {
    auto duration = flags.GetDouble("duration-s");
    auto drain = flags.GetDouble("drain-s");
    auto devices = flags.GetInt("devices");
    auto lookahead = flags.GetInt("lookahead");
    auto fill_first = flags.GetInt("fill-first-rounds");
    auto batch = flags.GetInt("padded-batch");
    auto wait_ms = flags.GetDouble("padded-wait-ms");
    auto seed = flags.GetInt("seed");
    auto floor_runs = flags.GetInt("floor-runs");
    auto blas = flags.GetInt("blas-threads");
    auto caf = flags.GetInt("caf-threads");
    for (const Status* s : {&duration.status(), &drain.status(), &devices.status(), &lookahead.status(),
                            &fill_first.status(), &batch.status(), &wait_ms.status(), &seed.status(), &floor_runs.status(),
                            &blas.status(), &caf.status()})
      if (!s->ok()) return BadUsage(*s);
    if (!(*duration > 0) || !(*drain >= 0) || *devices < 1 || *lookahead < 1 || *batch < 1 || !(*wait_ms >= 0) ||
        *floor_runs < 1 || *blas < 1 || *caf < 0 || *fill_first < 0)
      return BadUsage(InvalidArgument("--duration-s, --devices, --lookahead, --padded-batch, --floor-runs and "
                                  "--blas-threads must be positive; --drain-s, --padded-wait-ms, "
                                  "--fill-first-rounds and --caf-threads not negative"));
    cfg.duration_s = *duration;
    cfg.drain_s = *drain;
    cfg.cluster.devices = static_cast<int>(*devices);
    cfg.cluster.scheduler.lookahead = static_cast<int>(*lookahead);
    cfg.cluster.scheduler.fill_first_rounds = static_cast<int>(*fill_first);
    cfg.cluster.scheduler.padded_batch = *batch;
    cfg.cluster.scheduler.padded_wait_us = static_cast<int64_t>(*wait_ms * 1000.0);
    cfg.seed = static_cast<uint64_t>(*seed);
    cfg.floor_runs = *floor_runs;
    cfg.cluster.blas_threads = static_cast<int>(*blas);
    cfg.cluster.caf_threads = static_cast<int>(*caf);
    cfg.cluster.backend = flags.Get("backend");
    cfg.cluster.sim_profile = flags.Get("sim-profile");
    cfg.cluster.gpu_precision = flags.Get("gpu-precision");
    auto fold_max = FoldMaxBytes(flags);
    if (!fold_max.ok()) return BadUsage(fold_max.status());
    cfg.cluster.fold_max_bytes = *fold_max;
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
  std::unique_ptr<Scraper> scraper;
  if (metrics_mode != "off") {
    metrics = std::make_unique<monitoring::ServingMetrics>();
    scraper = std::make_unique<Scraper>(metrics.get(), std::chrono::milliseconds(1000));
    if (metrics_mode == "on") cfg.cluster.metrics = metrics.get();
  }
  if (metrics_mode == "compare")
    return CompareMetrics(cfg, w, policies, policy_values, metrics.get(), *scraper, *metrics_pairs, flags.Get("json"));

  // The floor.
  std::optional<double> floor_ms;
  {
    auto f = MeasureFloor(cfg, w);
    if (!f.ok()) return Fail(f.status().WithContext("latency floor"));
    floor_ms = *f;
    std::fprintf(stderr, "bench: latency floor %.2f ms (median sentence, %lld %s, alone on an idle cluster)\n",
                 *floor_ms, static_cast<long long>(w.stats.median_length),
                 spec->kind == ModelKind::kTreeLstm ? "leaves" : "tokens");
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
      auto cluster = StartCluster(cfg, policy_values[p], cfg.cluster.devices);
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
  }

  // The sweep. Schedules depend on the rate's index only, so every policy sees the same arrivals.
  std::vector<Row> rows;
  const size_t total_runs = policies.size() * rates.size();
  size_t run = 0;
  bool write_failed = false;
  for (size_t p = 0; p < policies.size(); ++p) {
    auto cluster = StartCluster(cfg, policy_values[p], cfg.cluster.devices);
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
      if (r.policy == "cellular" && (!low || r.offered_rps < low->offered_rps)) low = &r;
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
