// The measurements behind `cellserve bench` (tools/cmd_bench.cc), on a LocalCluster in this
// process: the latency floor (one request alone on an idle cluster), saturation (a closed loop)
// and an open-loop Poisson run at a given rate, each with the devices' busy share, mean batch and
// padding over its window. The method is described at the top of cmd_bench.cc.
// Threads: each call runs on the caller's thread (OpenLoopRun adds a sender thread) and waits for
// the requests it issued; what is still unanswered at the end is cancelled and waited for, so the
// cluster is idle again when a call returns. Errors: the cluster's Status, with context.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/local_cluster.h"
#include "bench/report.h"
#include "bench/workload.h"
#include "runtime/scheduler.h"
#include "runtime/status.h"

namespace cellserve::tools {

// Steady-clock helpers the bench files share.
namespace bench_clock {
using SteadyTime = std::chrono::steady_clock::time_point;
inline SteadyTime Now() { return std::chrono::steady_clock::now(); }
inline double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }
inline double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
inline std::chrono::steady_clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}
}  // namespace bench_clock

struct BenchConfig {
  LocalClusterOptions cluster;  // everything but the policy
  std::string model;
  double duration_s = 10.0;
  double drain_s = 30.0;
  uint64_t seed = 1;
  int64_t floor_runs = 20;
  int64_t inflight = 1024;  // closed loop: requests in flight
  bool keep_going = false;
};

// A cluster of `devices` devices with cfg.cluster's options and `policy`.
StatusOr<std::unique_ptr<LocalCluster>> StartBenchCluster(const BenchConfig& cfg, Policy policy, int devices);

// A few requests, so the first measured ones do not pay for cold caches and lazy starts.
Status WarmUp(LocalCluster& cluster, const BenchConfig& cfg, const bench::Workload& w);

// The latency floor: the median sentence alone on an idle cluster, median of cfg.floor_runs.
// Policy cellular, so a lone request's independent cells (Tree-LSTM leaves) still run batched,
// as they would for any policy but sequential; on cfg.cluster's devices, the cluster the sweep
// measures (a lone request runs on one of them while the others idle, as at low load).
// idle_ms > 0: each run starts after that long with nothing to do, as a lone request at low load
// does (threads asleep, caches cold); 0: back to back (the floor the targets use).
// length_percentile: which sentence (50: the median length; 99: the tail floor).
StatusOr<double> MeasureFloor(const BenchConfig& cfg, const bench::Workload& w, int64_t idle_ms = 0,
                              double length_percentile = 50);

struct Saturation {
  double rps = 0.0;
  bench::Row figures;  // device_busy, mean_batch, padding over the measured window
  int64_t errors = 0;
  double cpu_us_per_request = 0.0;  // process CPU time over the window / requests completed in it
  double rounds_per_request = 0.0;  // rounds submitted over the window / requests completed in it
};

// Closed loop: keeps cfg.inflight requests in flight for `seconds`; counts what completes in the
// last 80% of that time (the first 20% fills the pipeline).
StatusOr<Saturation> MeasureSaturation(LocalCluster& cluster, const BenchConfig& cfg, const bench::Workload& w,
                                       double seconds);

// One open-loop run at `rate` for cfg.duration_s; fills the row's counts and latencies.
// *overloaded: the policy could not keep up (requests unanswered or rejected, completions slower
// than 85% of the arrivals, or answers more than max(1 s, duration/2) after the last arrival), so
// higher rates would only pile up a backlog.
bench::Row OpenLoopRun(LocalCluster& cluster, const BenchConfig& cfg, const bench::Workload& w,
                       const std::string& policy, double rate, uint64_t seed, bool* overloaded);

}  // namespace cellserve::tools
