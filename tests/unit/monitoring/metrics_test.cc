// The Prometheus metrics (monitoring/metrics.h), read back the way Prometheus reads them: the text
// exposition of the registry, parsed into series. The contract's names and label values; the
// helpers; the busy window; then a real LocalCluster (CPU devices, temp model repository) and a
// real RpcServer with metrics on: requests of known outcomes, and every counter and histogram
// count checked exactly against what was sent and against the cluster's own report. Every wait is
// bounded.
#include "monitoring/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "actors/local_cluster.h"
#include "../common/temp_model_repo.h"
#include "runtime/model_repository.h"
#include "schema/client.h"
#include "schema/rpc_server.h"

namespace cellserve::monitoring {
namespace {

using Labels = std::map<std::string, std::string>;

// A series' key: name{k1="v1",k2="v2"} with labels sorted by name.
std::string Key(const std::string& name, const Labels& labels = {}) {
  std::string key = name;
  if (labels.empty()) return key;
  key += "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    key += (first ? "" : ",") + k + "=\"" + v + "\"";
    first = false;
  }
  return key + "}";
}

// The text exposition format as series -> value (comments skipped). Fails the test on a line it
// cannot read.
std::map<std::string, double> Parse(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    size_t pos = line.find_first_of("{ ");
    const std::string name = line.substr(0, pos);
    Labels labels;
    if (pos != std::string::npos && line[pos] == '{') {
      ++pos;
      while (line[pos] != '}') {
        const size_t eq = line.find("=\"", pos);
        const size_t close = line.find('"', eq + 2);
        if (eq == std::string::npos || close == std::string::npos) {
          ADD_FAILURE() << "cannot parse: " << line;
          return out;
        }
        labels[line.substr(pos, eq - pos)] = line.substr(eq + 2, close - eq - 2);
        pos = close + 1;
        if (line[pos] == ',') ++pos;
      }
      ++pos;
    }
    const std::string value = line.substr(line.find_first_not_of(' ', pos));
    out[Key(name, labels)] = std::strtod(value.c_str(), nullptr);
  }
  return out;
}

class Series {
 public:
  explicit Series(ServingMetrics& metrics) : all_(Parse(metrics.Serialize())) {}
  bool Has(const std::string& name, const Labels& labels = {}) const { return all_.count(Key(name, labels)) > 0; }
  double operator()(const std::string& name, const Labels& labels = {}) const {
    auto it = all_.find(Key(name, labels));
    if (it == all_.end()) {
      ADD_FAILURE() << "no series " << Key(name, labels);
      return -1;
    }
    return it->second;
  }
  // Sum over every series of `name` whose labels include `match`.
  double Sum(const std::string& name, const Labels& match = {}) const {
    double sum = 0;
    for (const auto& [key, value] : all_) {
      if (key != name && key.rfind(name + "{", 0) != 0) continue;
      bool ok = true;
      for (const auto& [k, v] : match) ok = ok && key.find(k + "=\"" + v + "\"") != std::string::npos;
      if (ok) sum += value;
    }
    return sum;
  }
  // Distinct values of label `label` among series of `name`.
  std::vector<std::string> Values(const std::string& name, const std::string& label) const {
    std::vector<std::string> out;
    for (const auto& [key, value] : all_) {
      if (key.rfind(name + "{", 0) != 0) continue;
      const size_t at = key.find(label + "=\"");
      if (at == std::string::npos) continue;
      const size_t b = at + label.size() + 2;
      const std::string v = key.substr(b, key.find('"', b) - b);
      if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    return out;
  }

 private:
  std::map<std::string, double> all_;
};

const char* const kCodes[] = {"OK",        "INVALID_ARGUMENT", "NOT_FOUND",   "RESOURCE_EXHAUSTED",
                              "DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE", "INTERNAL"};

TEST(BusyWindow, RatioOverAtLeastTheWindowEndingNow) {
  BusyWindow w(10'000'000);
  EXPECT_EQ(w.Sample(0, 0.0), 0.0);  // the start
  EXPECT_DOUBLE_EQ(w.Sample(1'000'000, 0.5), 0.5);    // since the start: 0.5 s of 1 s
  EXPECT_DOUBLE_EQ(w.Sample(5'000'000, 1.0), 0.2);    // since the start: 1 s of 5 s
  // The newest sample at least 10 s old is t = 1 s: (3 - 0.5) / 11.
  EXPECT_DOUBLE_EQ(w.Sample(12'000'000, 3.0), 2.5 / 11);
  // Idle since t = 12 s; reference t = 12 s (the newest >= 10 s old): 0.
  EXPECT_DOUBLE_EQ(w.Sample(30'000'000, 3.0), 0.0);
  // Busy the whole 20 s since t = 30 s (slow scrapes: since the previous one).
  EXPECT_DOUBLE_EQ(w.Sample(50'000'000, 23.0), 1.0);
  // Clamped: a batch counted when it ends may cover time before the window.
  EXPECT_DOUBLE_EQ(w.Sample(51'000'000, 30.0), 1.0);
  EXPECT_EQ(w.Sample(51'000'000, 30.0), w.Sample(51'000'000, 30.0));  // same instant: same answer
}

TEST(ServingMetrics, EverySeriesOfTheContractExistsAtZero) {
  ServingMetricsOptions o;
  o.node = "node-a";
  o.version = "9.9.9";
  ServingMetrics m(o);
  m.Model("lstm");
  m.Device("cpu:0");
  m.Pool("cpu:0", "lstm");
  m.BatchSize("cpu:0", "m", "head");
  Series s(m);
  for (const char* code : kCodes) EXPECT_EQ(s("cellserve_requests_total", {{"model", "lstm"}, {"code", code}}), 0);
  for (const char* code : kCodes) {
    if (std::string(code) == "OK") {
      EXPECT_FALSE(s.Has("cellserve_rpc_errors_total", {{"code", code}}));
    } else {
      EXPECT_EQ(s("cellserve_rpc_errors_total", {{"code", code}}), 0);
    }
  }
  EXPECT_EQ(s("cellserve_rpc_client_cancels_total"), 0);
  EXPECT_EQ(s("cellserve_rpc_connections_refused_total"), 0);
  for (const char* h : {"cellserve_request_duration_seconds", "cellserve_queue_wait_seconds"}) {
    EXPECT_EQ(s(std::string(h) + "_count", {{"model", "lstm"}}), 0);
    EXPECT_EQ(s(std::string(h) + "_bucket", {{"model", "lstm"}, {"le", "0.0001"}}), 0);
    EXPECT_EQ(s(std::string(h) + "_bucket", {{"model", "lstm"}, {"le", "10"}}), 0);
    EXPECT_EQ(s(std::string(h) + "_bucket", {{"model", "lstm"}, {"le", "+Inf"}}), 0);
  }
  EXPECT_EQ(s.Values("cellserve_request_duration_seconds_bucket", "le").size(), LatencyBuckets().size() + 1);
  EXPECT_EQ(s.Values("cellserve_queue_wait_seconds_bucket", "le").size(), QueueWaitBuckets().size() + 1);
  EXPECT_EQ(s("cellserve_queue_wait_seconds_bucket", {{"model", "lstm"}, {"le", "1e-05"}}), 0);
  EXPECT_EQ(s("cellserve_batch_size_bucket", {{"device", "cpu:0"}, {"model", "m"}, {"cell_type", "head"}, {"le", "512"}}), 0);
  EXPECT_EQ(s.Values("cellserve_batch_size_bucket", "le").size(), BatchSizeBuckets().size() + 1);
  for (const char* name : {"cellserve_cells_total", "cellserve_batches_total", "cellserve_padding_rows_total",
                           "cellserve_device_busy_seconds_total", "cellserve_device_busy_ratio",
                           "cellserve_rounds_in_flight", "cellserve_placements_total"})
    EXPECT_EQ(s(name, {{"device", "cpu:0"}}), 0) << name;
  for (const char* name : {"cellserve_state_slots_in_use", "cellserve_state_slots"})
    EXPECT_EQ(s(name, {{"device", "cpu:0"}, {"model", "lstm"}}), 0) << name;
  for (const char* name : {"cellserve_requests_in_flight", "cellserve_rpc_connections", "cellserve_rpc_calls_in_flight"})
    EXPECT_EQ(s(name), 0) << name;
  EXPECT_EQ(s("cellserve_node_up", {{"node", "node-a"}}), 1);
  EXPECT_EQ(s("cellserve_build_info", {{"version", "9.9.9"}}), 1);
  // Read at scrape time from this process (runtime/process_stats.h, memory_limit.h).
  for (const char* name : {"cellserve_memory_headroom_bytes", "cellserve_memory_limit_bytes", "process_resident_memory_bytes",
                           "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                           "process_start_time_seconds"})
    EXPECT_GT(s(name), 0) << name;
  EXPECT_GE(s("process_virtual_memory_bytes"), s("process_resident_memory_bytes"));
  EXPECT_LT(s("cellserve_memory_headroom_bytes"), s("cellserve_memory_limit_bytes"));
  EXPECT_TRUE(s.Has("process_cpu_seconds_total"));
  EXPECT_EQ(s("cellserve_log_lines_dropped_total"), 0) << "this process's log dropped nothing";
  // Registration is idempotent: the same handles.
  EXPECT_EQ(m.Model("lstm"), m.Model("lstm"));
  EXPECT_EQ(m.Device("cpu:0"), m.Device("cpu:0"));
  EXPECT_EQ(m.BatchSize("cpu:0", "m", "head"), m.BatchSize("cpu:0", "m", "head"));
}

TEST(ServingMetrics, HelpersCountWhatTheContractSays) {
  FakeClock clock(0);
  ServingMetricsOptions o;
  o.clock = &clock;
  ServingMetrics m(o);
  ModelMetrics* model = m.Model("lstm");
  DeviceMetrics* dev = m.Device("cpu:0");
  prometheus::Histogram* head = m.BatchSize("cpu:0", "m", "head");

  m.OnArrived();
  m.OnArrived();
  m.OnAnswered(model, StatusCode::kOk, 1500);  // 1.5 ms
  m.OnRefused(nullptr, StatusCode::kNotFound, 10);
  ServingMetrics::OnRound(*dev, head, 5, 3);
  ServingMetrics::OnRound(*dev, head, 1, 0);
  ServingMetrics::OnQueueWait(*model, 300);
  ServingMetrics::OnDeviceBusy(*dev, 2'000'000);
  m.OnRpcError(StatusCode::kOk);  // not an error: ignored
  m.OnRpcError(StatusCode::kResourceExhausted);
  clock.AdvanceMicros(4'000'000);

  Series s(m);
  EXPECT_EQ(s("cellserve_requests_in_flight"), 1);
  EXPECT_EQ(s("cellserve_requests_total", {{"model", "lstm"}, {"code", "OK"}}), 1);
  EXPECT_EQ(s("cellserve_requests_total", {{"model", kUnknownModel}, {"code", "NOT_FOUND"}}), 1);
  EXPECT_EQ(s("cellserve_request_duration_seconds_count", {{"model", "lstm"}}), 1);
  EXPECT_DOUBLE_EQ(s("cellserve_request_duration_seconds_sum", {{"model", "lstm"}}), 0.0015);
  EXPECT_EQ(s("cellserve_request_duration_seconds_bucket", {{"model", "lstm"}, {"le", "0.001"}}), 0);
  EXPECT_EQ(s("cellserve_request_duration_seconds_bucket", {{"model", "lstm"}, {"le", "0.0025"}}), 1);
  EXPECT_EQ(s("cellserve_request_duration_seconds_count", {{"model", kUnknownModel}}), 1);
  EXPECT_EQ(s("cellserve_queue_wait_seconds_bucket", {{"model", "lstm"}, {"le", "0.00025"}}), 0);
  EXPECT_EQ(s("cellserve_queue_wait_seconds_bucket", {{"model", "lstm"}, {"le", "0.0005"}}), 1);
  EXPECT_EQ(s("cellserve_cells_total", {{"device", "cpu:0"}}), 6);
  EXPECT_EQ(s("cellserve_batches_total", {{"device", "cpu:0"}}), 2);
  EXPECT_EQ(s("cellserve_padding_rows_total", {{"device", "cpu:0"}}), 3);
  EXPECT_EQ(s("cellserve_batch_size_count", {{"device", "cpu:0"}, {"model", "m"}, {"cell_type", "head"}}), 2);
  EXPECT_EQ(s("cellserve_batch_size_sum", {{"device", "cpu:0"}, {"model", "m"}, {"cell_type", "head"}}), 6);
  EXPECT_EQ(s("cellserve_batch_size_bucket", {{"device", "cpu:0"}, {"model", "m"}, {"cell_type", "head"}, {"le", "4"}}), 1);
  EXPECT_EQ(s("cellserve_batch_size_bucket", {{"device", "cpu:0"}, {"model", "m"}, {"cell_type", "head"}, {"le", "8"}}), 2);
  EXPECT_EQ(s("cellserve_device_busy_seconds_total", {{"device", "cpu:0"}}), 2);
  EXPECT_DOUBLE_EQ(s("cellserve_device_busy_ratio", {{"device", "cpu:0"}}), 0.5);  // 2 s of 4 s
  EXPECT_EQ(s("cellserve_rpc_errors_total", {{"code", "RESOURCE_EXHAUSTED"}}), 1);
  EXPECT_EQ(s.Sum("cellserve_rpc_errors_total"), 1);
}

// A router keeps cellserve_node_up 0 for each lost node (CellserveNodeDown), but not for good:
// nodes named anew at each restart would grow its series without end. The oldest lost ones go
// past kMaxLostNodeSeries; a node that registers again is up and no longer counted as lost; one
// that left on purpose has no series.
TEST(ServingMetrics, LostNodeSeriesAreCappedOldestFirst) {
  ServingMetricsOptions o;
  o.node = "router";
  ServingMetrics m(o);
  const size_t cap = ServingMetrics::kMaxLostNodeSeries;
  const size_t extra = 10;
  for (size_t i = 0; i < cap + extra; ++i) {
    const std::string name = "n" + std::to_string(i);
    m.SetNodeUp(name, true);
    m.SetNodeUp(name, false);
  }
  m.SetNodeUp("back", false);
  m.SetNodeUp("back", true);  // lost, then registered again: up, not lost
  m.SetNodeUp("left", true);
  m.RemoveNode("left");
  // "back" pushed n10 out while it was lost, and left the list when it came back.
  EXPECT_EQ(m.lost_node_series(), cap - 1);
  Series s(m);
  for (size_t i = 0; i <= extra; ++i)  // the oldest extra + 1 are gone
    EXPECT_FALSE(s.Has("cellserve_node_up", {{"node", "n" + std::to_string(i)}})) << i;
  EXPECT_EQ(s("cellserve_node_up", {{"node", "n" + std::to_string(extra + 1)}}), 0);
  EXPECT_EQ(s("cellserve_node_up", {{"node", "n" + std::to_string(cap + extra - 1)}}), 0);
  EXPECT_EQ(s("cellserve_node_up", {{"node", "back"}}), 1);
  EXPECT_FALSE(s.Has("cellserve_node_up", {{"node", "left"}}));
  EXPECT_EQ(s.Values("cellserve_node_up", "node").size(), cap + 1);  // cap - 1 lost, "back", "router"
}

TEST(ServingMetrics, ProcessMetricsFollowTheProcessAtEachScrape) {
  ServingMetrics m;
  const double resident = Series(m)("process_resident_memory_bytes");
  const double cpu = Series(m)("process_cpu_seconds_total");
  // 64 MiB written, and CPU time spent writing it several times over.
  std::vector<char> block(size_t{64} << 20);
  volatile int sink = 0;  // each pass read back, so none can be left out
  for (int pass = 0; pass < 20; ++pass) {
    std::fill(block.begin(), block.end(), static_cast<char>(pass + 1));
    sink = sink + block[static_cast<size_t>(pass) * 4096];
  }
  const Series after(m);
  EXPECT_GE(after("process_resident_memory_bytes") - resident, 32.0 * (1 << 20)) << "half at least: counted lazily";
  EXPECT_GT(after("process_cpu_seconds_total"), cpu);
  EXPECT_EQ(block[block.size() - 1], 20);
}

// GET http://127.0.0.1:PORT/metrics (python's urllib: no HTTP client library in the tree). The
// body, or nullopt when the GET failed or took over `timeout_s`.
std::optional<std::string> Scrape(int port, int timeout_s) {
  const std::string cmd = "python3 -c \"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                          "'http://127.0.0.1:" + std::to_string(port) + "/metrics', timeout=" +
                          std::to_string(timeout_s) + ").read().decode())\"";
  std::FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string body;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) body.append(buf, n);
  if (pclose(p) != 0) return std::nullopt;
  return body;
}

TEST(MetricsServer, ServesTheExpositionOverHttp) {
  ServingMetrics m;
  m.Model("lstm")->requests[0]->Increment(3);
  auto server = MetricsServer::Start(&m, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  ASSERT_GT((*server)->port(), 0);
  const std::optional<std::string> scraped = Scrape((*server)->port(), 10);
  ASSERT_TRUE(scraped.has_value());
  const std::string& body = *scraped;
  EXPECT_NE(body.find("cellserve_requests_total{code=\"OK\",model=\"lstm\"} 3"), std::string::npos) << body;
  // A second server on the same port cannot bind.
  auto again = MetricsServer::Start(&m, "127.0.0.1:" + std::to_string((*server)->port()));
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(again.status().message().find("the port is in use by another process (choose another with --metrics-port)"),
            std::string::npos)
      << again.status().message();
}

// Connections that send nothing (a port scanner, a client that hung) hold the exposer's threads
// only briefly: with civetweb's defaults two of them made every scrape wait 30 s.
TEST(MetricsServer, IdleConnectionsDoNotHoldTheScrapeUp) {
  ServingMetrics m;
  auto server = MetricsServer::Start(&m, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  std::vector<int> idle;
  for (int i = 0; i < 6; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>((*server)->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    idle.push_back(fd);
  }
  const auto start = std::chrono::steady_clock::now();
  const std::optional<std::string> scraped = Scrape((*server)->port(), 60);
  ASSERT_TRUE(scraped.has_value()) << "no scrape within 60 s";
  const std::string& body = *scraped;
  const double took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(body.find("cellserve_"), std::string::npos) << body.substr(0, 500);
  EXPECT_LT(took_s, 15.0) << "6 idle connections held the scrape up";
  for (int fd : idle) close(fd);
}

// A temp repository with one small lstm (2 layers, so 2n + 1 cells for n tokens).
// A repository with one small lstm.
class Repo : public testutil::TempModelRepo {
 public:
  Repo() : TempModelRepo("cellserve_monitoring_test") {
    ModelSpec spec;
    spec.name = "lstm";
    spec.kind = ModelKind::kLstm;
    spec.vocab_size = 500;
    spec.embed_dim = 24;
    spec.hidden = 32;
    spec.layers = 2;
    spec.classes = 3;
    spec.max_input_tokens = 64;
    spec.max_batch = 8;
    Write(spec, 11);
  }
};

RequestInput Tokens(int n, int32_t first = 4) {
  RequestInput in;
  for (int i = 0; i < n; ++i) in.tokens.push_back(first + (i * 37) % 400);
  return in;
}

// Counts answers by code; waits (bounded) for a total.
class Answers {
 public:
  InferCallback Callback() {
    return [this](StatusOr<RequestResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      ++by_code_[r.ok() ? "OK" : StatusCodeName(r.status().code())];
      ++total_;
      cv_.notify_all();
    };
  }
  bool Wait(int n, std::chrono::milliseconds at_most = std::chrono::seconds(120)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, at_most, [&] { return total_ >= n; });
  }
  int Count(const std::string& code) {
    std::lock_guard<std::mutex> lock(mu_);
    return by_code_[code];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, int> by_code_;
  int total_ = 0;
};

TEST(MonitoringCluster, CountsEveryAnswerAndEveryRoundExactly) {
  Repo repo;
  ServingMetrics metrics;
  LocalClusterOptions options;
  options.model_repo = repo.dir();
  options.devices = 2;
  options.scheduler.state_slots = 4096;
  options.metrics = &metrics;
  auto started = LocalCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<LocalCluster> cluster = std::move(started).value();

  constexpr int kOk = 60, kInvalid = 7, kNotFound = 5;
  Answers answers;
  int64_t cells = 0;
  for (int i = 0; i < kOk; ++i) {
    const int n = 1 + i % 40;
    cells += 2 * n + 1;
    cluster->Infer("lstm", Tokens(n, 4 + i), 0, answers.Callback());
  }
  for (int i = 0; i < kInvalid; ++i) {
    RequestInput bad = Tokens(3);
    if (i % 2) bad.tokens[1] = 500;  // outside the vocabulary
    else bad.tokens.clear();         // empty
    cluster->Infer("lstm", bad, 0, answers.Callback());
  }
  for (int i = 0; i < kNotFound; ++i) cluster->Infer("no-such-model", Tokens(3), 0, answers.Callback());
  ASSERT_TRUE(answers.Wait(kOk + kInvalid + kNotFound));
  ASSERT_EQ(answers.Count("OK"), kOk);
  ASSERT_EQ(answers.Count("INVALID_ARGUMENT"), kInvalid);
  ASSERT_EQ(answers.Count("NOT_FOUND"), kNotFound);
  cluster->Stop();  // the workers' last gauge updates are in once their actors are gone
  const ClusterReport report = cluster->Report();

  Series s(metrics);
  // Requests: every answer once, by model and code; the duration histogram counts them all.
  for (const char* code : kCodes) {
    const double want = std::string(code) == "OK" ? kOk : std::string(code) == "INVALID_ARGUMENT" ? kInvalid : 0;
    EXPECT_EQ(s("cellserve_requests_total", {{"model", "lstm"}, {"code", code}}), want) << code;
  }
  EXPECT_EQ(s("cellserve_requests_total", {{"model", kUnknownModel}, {"code", "NOT_FOUND"}}), kNotFound);
  EXPECT_EQ(s.Sum("cellserve_requests_total"), kOk + kInvalid + kNotFound);
  EXPECT_EQ(s("cellserve_request_duration_seconds_count", {{"model", "lstm"}}), kOk + kInvalid);
  EXPECT_EQ(s("cellserve_request_duration_seconds_bucket", {{"model", "lstm"}, {"le", "+Inf"}}), kOk + kInvalid);
  EXPECT_EQ(s("cellserve_request_duration_seconds_count", {{"model", kUnknownModel}}), kNotFound);
  EXPECT_GT(s("cellserve_request_duration_seconds_sum", {{"model", "lstm"}}), 0);
  // Queue wait: once per request that ran (the invalid ones never reached a scheduler).
  EXPECT_EQ(s("cellserve_queue_wait_seconds_count", {{"model", "lstm"}}), kOk);
  EXPECT_EQ(s.Sum("cellserve_queue_wait_seconds_count"), kOk);
  EXPECT_EQ(s("cellserve_requests_in_flight"), 0);
  // Placements: every request for a served model, valid or not (the node places, the request
  // actor validates).
  EXPECT_EQ(s.Sum("cellserve_placements_total"), kOk + kInvalid);

  // Devices: the same figures as the cluster's own report, and the cells the requests need.
  ASSERT_EQ(report.devices.size(), 2u);
  int64_t rounds = 0;
  for (const DeviceReport& d : report.devices) {
    const Labels dev = {{"device", d.name}};
    EXPECT_EQ(s("cellserve_cells_total", dev), d.cells) << d.name;
    EXPECT_EQ(s("cellserve_batches_total", dev), d.rounds) << d.name;
    EXPECT_EQ(s("cellserve_padding_rows_total", dev), 0) << d.name;
    EXPECT_NEAR(s("cellserve_device_busy_seconds_total", dev), d.busy_us * 1e-6, 1e-9) << d.name;
    EXPECT_EQ(s.Sum("cellserve_batch_size_count", dev), d.rounds) << d.name;
    EXPECT_EQ(s.Sum("cellserve_batch_size_sum", dev), d.cells) << d.name;
    const Labels pool = {{"device", d.name}, {"model", "lstm"}};
    EXPECT_EQ(s("cellserve_state_slots", pool), 4096) << d.name;
    EXPECT_EQ(s("cellserve_state_slots_in_use", pool), 0) << d.name;
    EXPECT_EQ(s("cellserve_rounds_in_flight", dev), 0) << d.name;
    const double ratio = s("cellserve_device_busy_ratio", dev);
    EXPECT_GE(ratio, 0);
    EXPECT_LE(ratio, 1);
    rounds += d.rounds;
  }
  EXPECT_EQ(s.Sum("cellserve_cells_total"), cells);
  EXPECT_EQ(s.Sum("cellserve_batches_total"), rounds);
  std::vector<std::string> types = s.Values("cellserve_batch_size_count", "cell_type");
  std::sort(types.begin(), types.end());
  EXPECT_EQ(types, (std::vector<std::string>{"head", "lstm.0", "lstm.1"}));
  // Every OK request's head ran once: kOk head rows.
  EXPECT_EQ(s.Sum("cellserve_batch_size_sum", {{"cell_type", "head"}}), kOk);
  EXPECT_EQ(s.Sum("cellserve_node_up"), 1);
}

// Two models on one device: each has a state pool of its own, and its gauges say how full that
// pool is (a sum over the device's models showed a full pool as half full).
TEST(MonitoringCluster, EachModelsStatePoolHasItsOwnGauges) {
  Repo repo;
  ModelSpec other;
  other.name = "other";
  other.kind = ModelKind::kLstm;
  other.vocab_size = 500;
  other.embed_dim = 24;
  other.hidden = 32;
  other.layers = 1;
  other.classes = 2;
  other.max_input_tokens = 64;
  repo.Write(other, 12);
  ServingMetrics metrics;
  LocalClusterOptions options;
  options.model_repo = repo.dir();
  options.devices = 1;
  options.scheduler.state_slots = 16;
  options.metrics = &metrics;
  auto started = LocalCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<LocalCluster> cluster = std::move(started).value();
  const std::string device = cluster->Report().devices.at(0).name;
  {
    Series s(metrics);
    EXPECT_EQ(s("cellserve_state_slots", {{"device", device}, {"model", "lstm"}}), 16);
    EXPECT_EQ(s("cellserve_state_slots", {{"device", device}, {"model", "other"}}), 16);
  }
  // Load on lstm only: its pool's gauge moves, other's stays at 0.
  Answers answers;
  constexpr int kN = 40;
  for (int i = 0; i < kN; ++i) cluster->Infer("lstm", Tokens(60, 4 + i), 0, answers.Callback());
  double seen = 0, other_seen = 0;
  for (int i = 0; i < 2000 && !answers.Wait(kN, std::chrono::milliseconds(1)); ++i) {
    Series s(metrics);
    seen = std::max(seen, s("cellserve_state_slots_in_use", {{"device", device}, {"model", "lstm"}}));
    other_seen = std::max(other_seen, s("cellserve_state_slots_in_use", {{"device", device}, {"model", "other"}}));
  }
  ASSERT_TRUE(answers.Wait(kN));
  EXPECT_GT(seen, 0) << "lstm's pool never showed a slot in use";
  EXPECT_LE(seen, 16);
  EXPECT_EQ(other_seen, 0);
  cluster->Stop();
  Series s(metrics);
  EXPECT_EQ(s("cellserve_state_slots_in_use", {{"device", device}, {"model", "lstm"}}), 0);
  // The batch sizes too: both models have an lstm.0, and only lstm's ran (it was merged before).
  EXPECT_EQ(s("cellserve_batch_size_sum", {{"device", device}, {"model", "lstm"}, {"cell_type", "head"}}),
            s("cellserve_requests_total", {{"model", "lstm"}, {"code", "OK"}}));  // one head each (the rest shed)
  EXPECT_EQ(s("cellserve_batch_size_count", {{"device", device}, {"model", "other"}, {"cell_type", "lstm.0"}}), 0);
  EXPECT_GT(s("cellserve_batch_size_count", {{"device", device}, {"model", "lstm"}, {"cell_type", "lstm.0"}}), 0);
}

TEST(MonitoringRpc, CountsRefusalsErrorsAndConnections) {
  Repo repo;
  ServingMetrics metrics;
  LocalClusterOptions options;
  options.model_repo = repo.dir();
  options.metrics = &metrics;
  auto cluster = LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  rpc::RpcServerOptions ro;
  ro.listen = "127.0.0.1:0";
  ro.limits.max_tokens = 16;
  ro.metrics = &metrics;
  auto server = rpc::RpcServer::Start(cluster->get(), ro);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  {
    auto client = rpc::Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    rpc::InferCall call;
    call.model = "lstm";
    call.input = Tokens(5);
    ASSERT_TRUE((*client)->Infer(call).ok());                      // OK, through the cluster
    call.input = Tokens(20);                                       // over --max-tokens: refused by the server
    EXPECT_EQ((*client)->Infer(call).status().code(), StatusCode::kInvalidArgument);
    call.input = Tokens(5);
    call.input.tokens[0] = 9999;                                   // outside the vocabulary: the cluster says so
    EXPECT_EQ((*client)->Infer(call).status().code(), StatusCode::kInvalidArgument);
    call.model = "nope";                                           // unknown: refused by the server
    EXPECT_EQ((*client)->Infer(call).status().code(), StatusCode::kNotFound);

    Series s(metrics);
    EXPECT_EQ(s("cellserve_requests_total", {{"model", "lstm"}, {"code", "OK"}}), 1);
    EXPECT_EQ(s("cellserve_requests_total", {{"model", "lstm"}, {"code", "INVALID_ARGUMENT"}}), 1);
    EXPECT_EQ(s("cellserve_requests_total", {{"model", kUnknownModel}, {"code", "INVALID_ARGUMENT"}}), 1);
    EXPECT_EQ(s("cellserve_requests_total", {{"model", kUnknownModel}, {"code", "NOT_FOUND"}}), 1);
    EXPECT_EQ(s.Sum("cellserve_requests_total"), 4);
    EXPECT_EQ(s.Sum("cellserve_request_duration_seconds_count"), 4);
    EXPECT_EQ(s("cellserve_rpc_errors_total", {{"code", "INVALID_ARGUMENT"}}), 2);
    EXPECT_EQ(s("cellserve_rpc_errors_total", {{"code", "NOT_FOUND"}}), 1);
    EXPECT_EQ(s.Sum("cellserve_rpc_errors_total"), 3);
    EXPECT_EQ(s("cellserve_rpc_connections"), 1);
    EXPECT_EQ(s("cellserve_rpc_calls_in_flight"), 0);
  }
  // The client is gone: the server sees the connection close (bounded wait).
  double connections = -1;
  for (int i = 0; i < 500 && connections != 0; ++i) {
    connections = Series(metrics)("cellserve_rpc_connections");
    if (connections != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(connections, 0);
  (*server)->Stop();
  (*cluster)->Stop();
}

}  // namespace
}  // namespace cellserve::monitoring
