// ServingMetrics: every Prometheus metric a cellserve process exports, defined in one place on a
// prometheus::Registry (prometheus-cpp 1.0), plus MetricsServer, the pull exposer (/metrics).
//
// The contract (the Grafana dashboard and the alert rules in monitoring/ are written against these
// names; never rename one, only add):
//   cellserve_requests_total{model, code}            counter    every answered request, by status
//                                                               code (OK, INVALID_ARGUMENT, NOT_FOUND,
//                                                               RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
//                                                               CANCELLED, UNAVAILABLE, INTERNAL)
//   cellserve_request_duration_seconds{model}        histogram  arrival at the cluster to answer, all
//                                                               codes; LatencyBuckets()
//   cellserve_queue_wait_seconds{model}              histogram  admission to the request's first cell
//                                                               submitted to a device; QueueWaitBuckets()
//   cellserve_batch_size{device, model, cell_type}   histogram  real rows per submitted round (padding
//                                                               not counted); BatchSizeBuckets(). Models
//                                                               on one device name their types alike
//                                                               (lstm.0, head): `model` tells them apart
//   cellserve_cells_total{device}                    counter    cells (real rows) submitted
//   cellserve_batches_total{device}                  counter    rounds submitted
//   cellserve_padding_rows_total{device}             counter    padding rows submitted (padded policies)
//   cellserve_device_busy_seconds_total{device}      counter    time the device spent running batches
//   cellserve_device_busy_ratio{device}              gauge      busy fraction over a window of at least
//                                                               10 s ending at the scrape (BusyWindow)
//   cellserve_state_slots_in_use{device,model}       gauge      state slots held by the model's requests
//   cellserve_state_slots{device,model}              gauge      state slots they may hold: each model on a
//                                                               device has a pool of its own (capacity)
//   cellserve_requests_in_flight                     gauge      handed to the cluster, not answered yet
//   cellserve_rounds_in_flight{device}               gauge      rounds submitted, not completed
//   cellserve_placements_total{device}               counter    requests the node sent to the device
//   cellserve_node_up{node}                          gauge      1 for this process's node (serve: the host
//                                                               name; node: the name it registers
//                                                               under); a router's: 1 per node, 0 lost
//   cellserve_rpc_errors_total{code}                 counter    error replies of the RPC server, by code
//                                                               (the cluster's errors too). A streamed
//                                                               call the cluster answered OK whose
//                                                               tokens the client's sink did not take
//                                                               (failed, or stalled past the deadline)
//                                                               is OK in requests_total, its error here
//   cellserve_rpc_connections                        gauge      open RPC connections
//   cellserve_rpc_calls_in_flight                    gauge      infer calls being served
//   cellserve_rpc_connections_refused_total          counter    connections closed at once: over
//                                                               --max-connections (no answer is sent,
//                                                               so cellserve_rpc_errors_total misses them)
//   cellserve_rpc_client_cancels_total               counter    infer calls the client dropped (cancelled,
//                                                               timed out on its side, or disconnected)
//                                                               while the server was still on them; the
//                                                               request is cancelled in the cluster. Not
//                                                               all are CANCELLED in requests_total: an
//                                                               answer already on its way counts as sent
//   cellserve_build_info{version}                    gauge      1
//   cellserve_memory_headroom_bytes                  gauge      what the process may still take before an
//                                                               allocation fails or the OOM killer comes
//                                                               (runtime/memory_limit.h: the machine's
//                                                               memory or its cgroup limit, the less, less
//                                                               its anonymous memory; or its address-space
//                                                               limit less what it has mapped). It falls
//                                                               as this process's own memory grows, not
//                                                               other processes' (those are not counted)
//   cellserve_log_lines_dropped_total                counter    log lines lost because standard error was
//                                                               not being read (monitoring/log.h); read
//                                                               at scrape time
//   cellserve_memory_limit_bytes                     gauge      the limit that headroom is measured against
//                                                               (the machine's memory or the cgroup's
//                                                               limit, or the address-space limit)
// and Prometheus's standard process metrics (runtime/process_stats.h), as its client libraries
// export them: process_resident_memory_bytes, process_virtual_memory_bytes (gauges),
// process_cpu_seconds_total (counter), process_open_fds, process_max_fds,
// process_start_time_seconds (gauges). These and the busy ratios are read at scrape time.
// Every answered request is counted once in cellserve_requests_total and observed once in
// cellserve_request_duration_seconds, so sum(cellserve_requests_total) equals
// sum(cellserve_request_duration_seconds_count): answered by the cluster (from its arrival there),
// or refused by the RPC server before it reached the cluster (from its arrival at the server).
// Label values: model = the model's name, or "(unknown)" for requests naming a model the process
// does not serve, or refused by the RPC server before their model was looked up (never the
// client's string: that would let clients create series); device = the
// device's name ("cpu:0"); cell_type = the CellType's name ("lstm.0", "head", ...); code = the
// StatusCode's name. Series of known models and devices exist (at 0) from registration on, and
// every rpc error code from the start, so rate() and absent() work before the first event.
//
// Cost: the hot paths touch pre-resolved handles only (ModelMetrics, DeviceMetrics: an atomic add
// or one histogram observation each, no label lookup, no allocation). A null ServingMetrics
// pointer anywhere (workers, node, cluster, RPC server) means "no metrics" and costs a branch.
//
// Lifetime and threads: a ServingMetrics must outlive everything it was handed to (the cluster,
// its actors, the RPC server) and the MetricsServer exposing it. Every member is thread-safe.
// Registration (Model, Device, BatchSize) takes a mutex; the handles it returns stay valid for the
// life of the ServingMetrics. One process (serve, a node, a router) makes one ServingMetrics and
// passes it down; nothing here is global.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include "runtime/clock.h"
#include "runtime/status.h"

namespace prometheus {
class Exposer;
}

namespace cellserve::monitoring {

// Seconds: 100 us .. 10 s (1e-4, 2.5e-4, 5e-4, 1e-3, ..., 2.5, 5, 10).
std::vector<double> LatencyBuckets();
// Seconds: 10 us .. 10 s (1e-5, 2.5e-5, 5e-5, then LatencyBuckets): an idle device's queue wait is
// a few microseconds, which a first bucket of 100 us would read as about 50.
std::vector<double> QueueWaitBuckets();
// Rows: 1, 2, 4, ..., 512.
std::vector<double> BatchSizeBuckets();

// The model label of requests for a model the process does not serve.
inline constexpr const char* kUnknownModel = "(unknown)";
inline constexpr size_t kStatusCodes = 8;  // StatusCode values, kOk .. kInternal

// Busy fraction of a device over a sliding window, from samples of its cumulative busy time taken
// at collection (scrape) time. The ratio at `now` is (busy(now) - busy(ref)) / (now - ref), where
// ref is the newest earlier sample at least `window_us` old, or the oldest sample if none is (the
// first sample is the device's registration). So with scrapes more than `window_us` apart it is
// the fraction since the previous scrape; with faster scrapes, over the last `window_us` (up to
// one scrape interval more). Pure and not thread-safe (ServingMetrics locks around it).
class BusyWindow {
 public:
  explicit BusyWindow(int64_t window_us = 10'000'000) : window_us_(window_us) {}
  // Records the cumulative busy time at `now_us` and returns the ratio, clamped to [0, 1].
  // The first sample returns 0.
  double Sample(int64_t now_us, double busy_seconds);

 private:
  struct Point {
    int64_t t_us;
    double busy_s;
  };
  int64_t window_us_;
  std::deque<Point> points_;
};

// Handles for one model's series.
struct ModelMetrics {
  std::array<prometheus::Counter*, kStatusCodes> requests{};  // by StatusCode
  prometheus::Histogram* duration = nullptr;
  prometheus::Histogram* queue_wait = nullptr;
};

// Handles for one device's series.
struct DeviceMetrics {
  std::string name;
  prometheus::Counter* cells = nullptr;
  prometheus::Counter* batches = nullptr;
  prometheus::Counter* padding_rows = nullptr;
  prometheus::Counter* busy_seconds = nullptr;
  prometheus::Counter* placements = nullptr;
  prometheus::Gauge* busy_ratio = nullptr;
  prometheus::Gauge* rounds_in_flight = nullptr;
};

// Handles for one model's state pool on one device.
struct PoolMetrics {
  prometheus::Gauge* in_use = nullptr;
  prometheus::Gauge* capacity = nullptr;
};

struct ServingMetricsOptions {
  std::string node = "local";         // the node label of cellserve_node_up
  std::string version = "";           // cellserve_build_info's version; "" = this build's
  const Clock* clock = nullptr;       // for the busy window; nullptr = a SteadyClock
  int64_t busy_window_us = 10'000'000;
};

class ServingMetrics {
 public:
  explicit ServingMetrics(ServingMetricsOptions options = {},
                          std::shared_ptr<prometheus::Registry> registry = nullptr);
  ~ServingMetrics();
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  // Registration: the handles of a model's / device's series (created at 0 on first use).
  ModelMetrics* Model(const std::string& name);
  DeviceMetrics* Device(const std::string& name);
  PoolMetrics* Pool(const std::string& device, const std::string& model);
  prometheus::Histogram* BatchSize(const std::string& device, const std::string& model, const std::string& cell_type);

  // ---- event helpers (hot paths) ----
  // A request was handed to the cluster / answered (`model` may be null: counted as unknown).
  void OnArrived() { requests_in_flight_->Increment(); }
  void OnAnswered(ModelMetrics* model, StatusCode code, int64_t duration_us);
  // A front door (the RPC server) answered a request itself, without handing it to the cluster
  // (malformed, over a limit, unknown model): counted like an answer, never in flight.
  void OnRefused(ModelMetrics* model, StatusCode code, int64_t duration_us);
  // A round was submitted: `rows` real rows and `padding` padding rows, of `batch_size`'s type.
  static void OnRound(DeviceMetrics& device, prometheus::Histogram* batch_size, int64_t rows, int64_t padding);
  static void OnQueueWait(ModelMetrics& model, int64_t wait_us) {
    model.queue_wait->Observe(static_cast<double>(std::max<int64_t>(wait_us, 0)) * 1e-6);  // as durations are
  }
  // The device finished a batch that ran `busy_us`.
  static void OnDeviceBusy(DeviceMetrics& device, int64_t busy_us) { device.busy_seconds->Increment(busy_us * 1e-6); }
  // RPC server.
  void OnRpcError(StatusCode code);
  void OnRpcClientCancel() { rpc_client_cancels_->Increment(); }
  void OnRpcConnectionRefused() { rpc_connections_refused_->Increment(); }
  // A router's view of a node: cellserve_node_up{node=name} 1 while it is registered, 0 once lost
  // (CellserveNodeDown fires); a node that left on purpose (drained) has its series removed. The
  // series of lost nodes are kept up to kMaxLostNodeSeries, the oldest removed first: nodes whose
  // names change with every restart (not a StatefulSet's) must not grow the router's series for
  // good. A name that registers again is up and off that list.
  static constexpr size_t kMaxLostNodeSeries = 256;
  void SetNodeUp(const std::string& node, bool up);
  void RemoveNode(const std::string& node);
  size_t lost_node_series() const;
  prometheus::Gauge& rpc_connections() { return *rpc_connections_; }
  prometheus::Gauge& rpc_calls_in_flight() { return *rpc_calls_in_flight_; }
  prometheus::Gauge& requests_in_flight() { return *requests_in_flight_; }

  // ---- collection ----
  // Refreshes what is computed at scrape time (the busy ratios, the process's memory, CPU time and
  // descriptors), then collects the registry.
  std::vector<prometheus::MetricFamily> Collect();
  // The text exposition format (what /metrics serves).
  std::string Serialize();
  // What an Exposer registers (it refreshes, then collects; the Exposer holds a weak_ptr).
  std::shared_ptr<prometheus::Collectable> collectable() { return collectable_; }
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

 private:
  void RefreshBusy();
  void RefreshProcess();

  ServingMetricsOptions options_;
  SteadyClock steady_;
  const Clock* clock_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> collectable_;

  prometheus::Family<prometheus::Counter>* requests_total_;
  prometheus::Family<prometheus::Histogram>* request_duration_;
  prometheus::Family<prometheus::Histogram>* queue_wait_;
  prometheus::Family<prometheus::Histogram>* batch_size_;
  prometheus::Family<prometheus::Counter>* cells_total_;
  prometheus::Family<prometheus::Counter>* batches_total_;
  prometheus::Family<prometheus::Counter>* padding_rows_total_;
  prometheus::Family<prometheus::Counter>* busy_seconds_total_;
  prometheus::Family<prometheus::Gauge>* busy_ratio_;
  prometheus::Family<prometheus::Gauge>* slots_in_use_;
  prometheus::Family<prometheus::Gauge>* slots_;
  prometheus::Family<prometheus::Gauge>* rounds_in_flight_;
  prometheus::Family<prometheus::Counter>* placements_total_;
  prometheus::Family<prometheus::Gauge>* node_up_;
  prometheus::Family<prometheus::Counter>* rpc_errors_total_;
  prometheus::Gauge* requests_in_flight_;
  prometheus::Gauge* rpc_connections_;
  prometheus::Gauge* rpc_calls_in_flight_;
  prometheus::Counter* rpc_client_cancels_;
  prometheus::Counter* rpc_connections_refused_;
  std::array<prometheus::Counter*, kStatusCodes> rpc_errors_{};
  prometheus::Gauge* memory_headroom_;
  prometheus::Gauge* memory_limit_;
  prometheus::Gauge* resident_bytes_;
  prometheus::Gauge* virtual_bytes_;
  prometheus::Counter* cpu_seconds_;
  prometheus::Counter* log_lines_dropped_;
  prometheus::Gauge* open_fds_;
  prometheus::Gauge* max_fds_;
  prometheus::Gauge* start_time_;

  mutable std::mutex node_up_mu_;
  std::deque<std::string> lost_nodes_;  // GUARDED_BY(node_up_mu_): series at 0, oldest first

  std::mutex mu_;  // registration and the busy windows
  std::map<std::string, std::unique_ptr<ModelMetrics>> models_;           // GUARDED_BY(mu_)
  struct DeviceEntry {
    std::unique_ptr<DeviceMetrics> metrics;
    BusyWindow window;
  };
  std::map<std::string, DeviceEntry> devices_;                           // GUARDED_BY(mu_)
  std::map<std::pair<std::string, std::string>, std::unique_ptr<PoolMetrics>> pools_;  // GUARDED_BY(mu_)
};

// The pull exposer: an HTTP server (civetweb, inside prometheus-cpp) serving the metrics' text
// exposition at /metrics. Thread-safe; the ServingMetrics must outlive it.
class MetricsServer {
 public:
  // Listens on HOST:PORT (PORT 0: a free port, see port()) with `threads` HTTP threads, each
  // waiting at most 3 s for a connection's request (idle connections cannot hold the port for
  // long: the port is for Prometheus; keep others off it, e.g. with a NetworkPolicy). UNAVAILABLE
  // if it cannot bind.
  static StatusOr<std::unique_ptr<MetricsServer>> Start(ServingMetrics* metrics, const std::string& listen,
                                                        int threads = 4);
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace cellserve::monitoring
