// The measurements of `cellserve bench` (bench_load.h).
#include "tools/bench_load.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace cellserve::tools {

using namespace bench_clock;
using bench::Row;
using bench::Workload;

namespace {

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

}  // namespace

StatusOr<std::unique_ptr<LocalCluster>> StartBenchCluster(const BenchConfig& cfg, Policy policy, int devices) {
  LocalClusterOptions options = cfg.cluster;
  options.scheduler.policy = policy;
  options.devices = devices;
  auto cluster = LocalCluster::Start(options);
  if (!cluster.ok()) return cluster.status().WithContext(std::string("starting a ") + PolicyName(policy) + " cluster");
  return cluster;
}

Status WarmUp(LocalCluster& cluster, const BenchConfig& cfg, const Workload& w) {
  for (size_t i = 0; i < std::min<size_t>(5, w.requests.size()); ++i) {
    auto r = RunOne(cluster, cfg.model, w.requests[i * w.requests.size() / 5].input, 60.0);
    if (!r.ok()) return r.status().WithContext("warm-up request");
  }
  return OkStatus();
}

StatusOr<double> MeasureFloor(const BenchConfig& cfg, const Workload& w, int64_t idle_ms,
                              double length_percentile) {
  ASSIGN_OR_RETURN(auto cluster, StartBenchCluster(cfg, Policy::kCellular, cfg.cluster.devices));
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

StatusOr<Saturation> MeasureSaturation(LocalCluster& cluster, const BenchConfig& cfg, const Workload& w,
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
  if (static_cast<size_t>(issued) >= capacity)
    std::fprintf(stderr,
                 "cellserve bench: the saturation run issued its cap of %zu requests before its %.1f s were up; "
                 "its throughput is a lower bound (a shorter --duration-s measures it in full)\n",
                 capacity, seconds);

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

Row OpenLoopRun(LocalCluster& cluster, const BenchConfig& cfg, const Workload& w, const std::string& policy,
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

}  // namespace cellserve::tools
