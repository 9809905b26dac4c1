// `cellserve bench --metrics`: what recording Prometheus metrics costs the serving path.
// MetricsScraper serializes the registry every interval on a thread of its own, as a pessimistic
// Prometheus would; CompareMetrics measures each policy's saturation with metrics off and on in
// alternated pairs, prints the table and writes JSON, and adds the metrics' own work timed in a
// tight loop (the ratio without the machine's noise).
// Threads: the scraper's thread lives as long as the object; CompareMetrics runs on the caller's.
// Errors: a cluster that does not start or a JSON file that cannot be written, as Status.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/workload.h"
#include "monitoring/metrics.h"
#include "runtime/scheduler.h"
#include "runtime/status.h"
#include "tools/bench_load.h"

namespace cellserve::tools {

// What a Prometheus server scraping every `interval` costs: collect and serialize the metrics on
// a thread of its own.
class MetricsScraper {
 public:
  MetricsScraper(monitoring::ServingMetrics* metrics, std::chrono::milliseconds interval)
      : metrics_(metrics), interval_(interval), thread_([this] { Loop(); }) {}
  ~MetricsScraper() {
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

// --metrics compare: each policy's saturation (closed loop, cfg.duration_s per measurement),
// `pairs` times without and with metrics, alternating which goes first (off/on, on/off, ...) so a
// drift of the machine's speed hits both alike. Prints the ratio of the medians; JSON to json_path.
Status CompareMetrics(BenchConfig cfg, const bench::Workload& w, const std::vector<std::string>& policies,
                      const std::vector<Policy>& values, monitoring::ServingMetrics* metrics,
                      const MetricsScraper& scraper, int64_t pairs, const std::string& json_path);

}  // namespace cellserve::tools
