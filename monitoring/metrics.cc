#include "monitoring/metrics.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <utility>

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include "monitoring/log.h"
#include "runtime/memory_limit.h"
#include "runtime/process_stats.h"
#include "runtime/zero_floats.h"

#ifndef CELLSERVE_VERSION
#define CELLSERVE_VERSION "unknown"
#endif

namespace cellserve::monitoring {

std::vector<double> LatencyBuckets() {
  return {1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> QueueWaitBuckets() {
  std::vector<double> b = {1e-5, 2.5e-5, 5e-5};
  for (double v : LatencyBuckets()) b.push_back(v);
  return b;
}

std::vector<double> BatchSizeBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}; }

double BusyWindow::Sample(int64_t now_us, double busy_seconds) {
  if (points_.empty()) {
    points_.push_back({now_us, busy_seconds});
    return 0.0;
  }
  // Drop points that are no longer needed as the reference: keep the newest one at least
  // window_us old (and everything newer).
  while (points_.size() >= 2 && now_us - points_[1].t_us >= window_us_) points_.pop_front();
  const Point ref = points_.front();
  if (now_us > points_.back().t_us) points_.push_back({now_us, busy_seconds});
  const int64_t span_us = now_us - ref.t_us;
  if (span_us <= 0) return 0.0;
  const double ratio = (busy_seconds - ref.busy_s) / (span_us * 1e-6);
  return std::clamp(ratio, 0.0, 1.0);
}

namespace {

// Why `listen` (HOST:PORT, [v6]:PORT) cannot be bound, found by binding it ourselves: civetweb
// says only "null context when constructing CivetServer. Possible problem binding to port".
// Empty when the bind works now (or the address does not parse).
std::string WhyCannotBind(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return "";
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), listen.substr(colon + 1).c_str(), &hints, &found) != 0)
    return "";
  std::string why;
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));  // as civetweb binds
    if (bind(fd, found->ai_addr, found->ai_addrlen) != 0)
      why = errno == EADDRINUSE ? "the port is in use by another process (choose another with --metrics-port)"
                                : std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(found);
  return why;
}

class Collector final : public prometheus::Collectable {
 public:
  explicit Collector(ServingMetrics* metrics) : metrics_(metrics) {}
  std::vector<prometheus::MetricFamily> Collect() const override { return metrics_->Collect(); }

 private:
  ServingMetrics* metrics_;
};

}  // namespace

ServingMetrics::ServingMetrics(ServingMetricsOptions options, std::shared_ptr<prometheus::Registry> registry)
    : options_(std::move(options)),
      clock_(options_.clock ? options_.clock : &steady_),
      registry_(registry ? std::move(registry) : std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;
  requests_total_ = &BuildCounter()
                         .Name("cellserve_requests_total")
                         .Help("Requests answered, by model and status code")
                         .Register(r);
  request_duration_ = &BuildHistogram()
                           .Name("cellserve_request_duration_seconds")
                           .Help("Time from a request's arrival at the cluster to its answer, all status codes")
                           .Register(r);
  queue_wait_ = &BuildHistogram()
                     .Name("cellserve_queue_wait_seconds")
                     .Help("Time from a request's admission to its first cell being submitted to a device")
                     .Register(r);
  batch_size_ = &BuildHistogram()
                     .Name("cellserve_batch_size")
                     .Help("Real rows (cells, not padding) per round submitted to a device, by cell type")
                     .Register(r);
  cells_total_ = &BuildCounter().Name("cellserve_cells_total").Help("Cells (real rows) submitted to the device").Register(r);
  batches_total_ = &BuildCounter().Name("cellserve_batches_total").Help("Rounds (batches) submitted to the device").Register(r);
  padding_rows_total_ =
      &BuildCounter().Name("cellserve_padding_rows_total").Help("Padding rows submitted to the device").Register(r);
  busy_seconds_total_ = &BuildCounter()
                             .Name("cellserve_device_busy_seconds_total")
                             .Help("Time the device spent running batches; rate() is the busy ratio")
                             .Register(r);
  busy_ratio_ = &BuildGauge()
                     .Name("cellserve_device_busy_ratio")
                     .Help("Fraction of time the device was busy, over at least the last 10 s before the scrape")
                     .Register(r);
  slots_in_use_ =
      &BuildGauge().Name("cellserve_state_slots_in_use").Help("State slots held by the model's requests on the device").Register(r);
  slots_ = &BuildGauge()
                .Name("cellserve_state_slots")
                .Help("State slots the model's requests may hold on the device (its own pool's capacity)")
                .Register(r);
  rounds_in_flight_ =
      &BuildGauge().Name("cellserve_rounds_in_flight").Help("Rounds submitted to the device and not completed").Register(r);
  placements_total_ = &BuildCounter()
                           .Name("cellserve_placements_total")
                           .Help("Requests the node placed on the device (its routing decisions)")
                           .Register(r);
  node_up_ = &BuildGauge().Name("cellserve_node_up").Help("1 if the node is up").Register(r);
  rpc_errors_total_ =
      &BuildCounter().Name("cellserve_rpc_errors_total").Help("Error replies of the RPC server, by status code").Register(r);
  requests_in_flight_ = &BuildGauge()
                             .Name("cellserve_requests_in_flight")
                             .Help("Requests handed to the cluster and not answered yet")
                             .Register(r)
                             .Add({});
  rpc_connections_ =
      &BuildGauge().Name("cellserve_rpc_connections").Help("Open RPC connections").Register(r).Add({});
  rpc_calls_in_flight_ =
      &BuildGauge().Name("cellserve_rpc_calls_in_flight").Help("Infer calls the RPC server is serving").Register(r).Add({});
  rpc_connections_refused_ = &BuildCounter()
                                  .Name("cellserve_rpc_connections_refused_total")
                                  .Help("RPC connections closed at once, over --max-connections")
                                  .Register(r)
                                  .Add({});
  rpc_client_cancels_ = &BuildCounter()
                             .Name("cellserve_rpc_client_cancels_total")
                             .Help("Infer calls the client dropped (cancel, its own timeout, disconnect) before the answer")
                             .Register(r)
                             .Add({});
  BuildGauge()
      .Name("cellserve_build_info")
      .Help("Build information; always 1")
      .Register(r)
      .Add({{"version", options_.version.empty() ? CELLSERVE_VERSION : options_.version}})
      .Set(1);
  log_lines_dropped_ = &BuildCounter()
                            .Name("cellserve_log_lines_dropped_total")
                            .Help("Log lines lost because standard error was not being read")
                            .Register(r)
                            .Add({});
  memory_headroom_ = &BuildGauge()
                          .Name("cellserve_memory_headroom_bytes")
                          .Help("Memory the process may still take before an allocation fails or the OOM killer comes "
                                "(state slots reserved and not written yet count as taken)")
                          .Register(r)
                          .Add({});
  memory_limit_ = &BuildGauge()
                       .Name("cellserve_memory_limit_bytes")
                       .Help("The memory limit cellserve_memory_headroom_bytes is measured against")
                       .Register(r)
                       .Add({});
  resident_bytes_ =
      &BuildGauge().Name("process_resident_memory_bytes").Help("Resident memory size in bytes").Register(r).Add({});
  virtual_bytes_ =
      &BuildGauge().Name("process_virtual_memory_bytes").Help("Virtual memory size in bytes").Register(r).Add({});
  cpu_seconds_ = &BuildCounter()
                      .Name("process_cpu_seconds_total")
                      .Help("Total user and system CPU time spent in seconds")
                      .Register(r)
                      .Add({});
  open_fds_ = &BuildGauge().Name("process_open_fds").Help("Number of open file descriptors").Register(r).Add({});
  max_fds_ = &BuildGauge().Name("process_max_fds").Help("Maximum number of open file descriptors").Register(r).Add({});
  start_time_ = &BuildGauge()
                     .Name("process_start_time_seconds")
                     .Help("Start time of the process since the Unix epoch in seconds")
                     .Register(r)
                     .Add({});
  RefreshProcess();
  node_up_->Add({{"node", options_.node}}).Set(1);
  for (size_t c = 1; c < kStatusCodes; ++c)  // every error code, at 0
    rpc_errors_[c] = &rpc_errors_total_->Add({{"code", StatusCodeName(static_cast<StatusCode>(c))}});
  collectable_ = std::make_shared<Collector>(this);
}

ServingMetrics::~ServingMetrics() = default;

ModelMetrics* ServingMetrics::Model(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = models_[name];
  if (!slot) {
    auto m = std::make_unique<ModelMetrics>();
    for (size_t c = 0; c < kStatusCodes; ++c)
      m->requests[c] = &requests_total_->Add({{"model", name}, {"code", StatusCodeName(static_cast<StatusCode>(c))}});
    m->duration = &request_duration_->Add({{"model", name}}, LatencyBuckets());
    m->queue_wait = &queue_wait_->Add({{"model", name}}, QueueWaitBuckets());
    slot = std::move(m);
  }
  return slot.get();
}

DeviceMetrics* ServingMetrics::Device(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(name);
  if (it == devices_.end()) {
    auto d = std::make_unique<DeviceMetrics>();
    const prometheus::Labels labels{{"device", name}};
    d->name = name;
    d->cells = &cells_total_->Add(labels);
    d->batches = &batches_total_->Add(labels);
    d->padding_rows = &padding_rows_total_->Add(labels);
    d->busy_seconds = &busy_seconds_total_->Add(labels);
    d->placements = &placements_total_->Add(labels);
    d->busy_ratio = &busy_ratio_->Add(labels);
    d->rounds_in_flight = &rounds_in_flight_->Add(labels);
    DeviceEntry entry{std::move(d), BusyWindow(options_.busy_window_us)};
    entry.window.Sample(clock_->NowMicros(), 0.0);  // the window starts at registration
    it = devices_.emplace(name, std::move(entry)).first;
  }
  return it->second.metrics.get();
}

PoolMetrics* ServingMetrics::Pool(const std::string& device, const std::string& model) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<PoolMetrics>& slot = pools_[{device, model}];
  if (!slot) {
    const prometheus::Labels labels{{"device", device}, {"model", model}};
    slot = std::make_unique<PoolMetrics>();
    slot->in_use = &slots_in_use_->Add(labels);
    slot->capacity = &slots_->Add(labels);
  }
  return slot.get();
}

prometheus::Histogram* ServingMetrics::BatchSize(const std::string& device, const std::string& model,
                                                 const std::string& cell_type) {
  std::lock_guard<std::mutex> lock(mu_);
  return &batch_size_->Add({{"device", device}, {"model", model}, {"cell_type", cell_type}}, BatchSizeBuckets());
}

void ServingMetrics::OnRefused(ModelMetrics* model, StatusCode code, int64_t duration_us) {
  if (!model) model = Model(kUnknownModel);
  const size_t c = static_cast<size_t>(code);
  if (c < kStatusCodes) model->requests[c]->Increment();
  model->duration->Observe(std::max<int64_t>(duration_us, 0) * 1e-6);
}

void ServingMetrics::OnAnswered(ModelMetrics* model, StatusCode code, int64_t duration_us) {
  OnRefused(model, code, duration_us);
  requests_in_flight_->Decrement();
}

void ServingMetrics::OnRound(DeviceMetrics& device, prometheus::Histogram* batch_size, int64_t rows,
                             int64_t padding) {
  device.batches->Increment();
  device.cells->Increment(static_cast<double>(rows));
  if (padding > 0) device.padding_rows->Increment(static_cast<double>(padding));
  if (batch_size) batch_size->Observe(static_cast<double>(rows));
}

void ServingMetrics::SetNodeUp(const std::string& node, bool up) {
  std::lock_guard<std::mutex> lock(node_up_mu_);
  lost_nodes_.erase(std::remove(lost_nodes_.begin(), lost_nodes_.end(), node), lost_nodes_.end());
  node_up_->Add({{"node", node}}).Set(up ? 1 : 0);
  if (up) return;
  lost_nodes_.push_back(node);
  while (lost_nodes_.size() > kMaxLostNodeSeries) {
    node_up_->Remove(&node_up_->Add({{"node", lost_nodes_.front()}}));
    lost_nodes_.pop_front();
  }
}

void ServingMetrics::RemoveNode(const std::string& node) {
  std::lock_guard<std::mutex> lock(node_up_mu_);
  lost_nodes_.erase(std::remove(lost_nodes_.begin(), lost_nodes_.end(), node), lost_nodes_.end());
  node_up_->Remove(&node_up_->Add({{"node", node}}));
}

size_t ServingMetrics::lost_node_series() const {
  std::lock_guard<std::mutex> lock(node_up_mu_);
  return lost_nodes_.size();
}

void ServingMetrics::OnRpcError(StatusCode code) {
  const size_t c = static_cast<size_t>(code);
  if (c > 0 && c < kStatusCodes) rpc_errors_[c]->Increment();
}

void ServingMetrics::RefreshBusy() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = clock_->NowMicros();
  for (auto& [name, entry] : devices_)
    entry.metrics->busy_ratio->Set(entry.window.Sample(now, entry.metrics->busy_seconds->Value()));
}

void ServingMetrics::RefreshProcess() {
  const ProcessStats p = ReadProcessStats();
  const MemoryReadings memory = ReadMemoryOfThisProcess();
  // Reserved state slots count as taken, written or not (runtime/zero_floats.h).
  const double headroom = ReservableHeadroom(memory, static_cast<double>(ZeroFloats::UntouchedBytes()));
  const double limit = MemoryLimit(memory);
  // What could not be read keeps its last value (a file that cannot be opened is no reading).
  auto set = [](prometheus::Gauge* g, double v) {
    if (v >= 0 && std::isfinite(v)) g->Set(v);
  };
  std::lock_guard<std::mutex> lock(mu_);  // two scrapes at once must not both add the CPU time
  set(memory_headroom_, headroom);
  set(memory_limit_, limit);
  set(resident_bytes_, memory.resident);
  if (memory.address_space > 0) set(virtual_bytes_, memory.address_space);
  if (p.cpu_seconds > cpu_seconds_->Value()) cpu_seconds_->Increment(p.cpu_seconds - cpu_seconds_->Value());
  set(open_fds_, p.open_fds);
  set(max_fds_, p.max_fds);
  set(start_time_, p.start_time_seconds);
  const double dropped = static_cast<double>(LogLinesDropped());
  if (dropped > log_lines_dropped_->Value()) log_lines_dropped_->Increment(dropped - log_lines_dropped_->Value());
}

std::vector<prometheus::MetricFamily> ServingMetrics::Collect() {
  RefreshBusy();
  RefreshProcess();
  return registry_->Collect();
}

std::string ServingMetrics::Serialize() { return prometheus::TextSerializer().Serialize(Collect()); }

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(ServingMetrics* metrics, const std::string& listen,
                                                              int threads) {
  if (!metrics) return InvalidArgument("the metrics server needs metrics");
  if (threads < 1) return InvalidArgument("the metrics server needs at least one thread");
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    // civetweb waits 30 s by default for a request on a connection it accepted, each wait holding
    // one of its threads: two idle connections held both and every scrape waited 30 s (one that
    // reconnected every 30 s kept the port from Prometheus). Each now waits at most 3 s.
    server->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", listen, "num_threads", std::to_string(threads), "request_timeout_ms", "3000"});
  } catch (const std::exception& e) {
    const std::string why = WhyCannotBind(listen);
    return Unavailable("cannot serve metrics on " + listen + ": " + (why.empty() ? e.what() : why));
  }
  server->exposer_->RegisterCollectable(metrics->collectable(), "/metrics");
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? 0 : ports.front();
  return server;
}

MetricsServer::~MetricsServer() = default;

}  // namespace cellserve::monitoring
