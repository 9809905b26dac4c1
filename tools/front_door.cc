#include "tools/front_door.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "monitoring/log.h"
#include "runtime/atomic_file.h"

namespace cellserve::tools {

void AddFrontDoorFlags(Flags& flags) {
  flags
      .Add("listen", "127.0.0.1:7410", "HOST:PORT of the client RPC port (port 0: any free port; see --port-file)",
           false, "CELLSERVE_LISTEN")
      .Add("port-file", "", "write the RPC port's number to this file once it listens")
      .Add("max-tokens", "4096", "tokens (or tree leaves) per request at most, on top of each model's own limit")
      .Add("max-calls-per-connection", "1024",
           "infer and health calls served at once per connection (beyond: RESOURCE_EXHAUSTED)")
      .Add("max-connections", "1024", "open RPC connections at most (beyond: closed at once)")
      .Add("max-message-bytes", "16777216",
           "RPC message size at most: a larger incoming one closes the connection; a larger reply fails its call")
      .Add("max-queued-answer-mib", "32",
           "answers waiting in memory for a client that does not read them, per connection (beyond, with none "
           "taken for 2 s: the connection is closed and its calls cancelled)")
      .Add("tcp-keepalive-s", "60",
           "probe an RPC connection idle this long, every 1/6 of it (at least 1 s): a client gone without "
           "closing (its machine, a partition) is dropped after 6 unanswered probes, its calls cancelled (0: off)")
      .Add("metrics-port", "0",
           "serve Prometheus metrics at http://HOST:PORT/metrics (0: off; 9410 is the conventional port)", false,
           "CELLSERVE_METRICS_PORT")
      .Add("metrics-host", "", "address the metrics port binds (default: --listen's host; 0.0.0.0: every interface)");
}

StatusOr<rpc::RpcServerOptions> RpcServerOptionsFromFlags(const Flags& flags, monitoring::ServingMetrics* metrics) {
  rpc::RpcServerOptions o;
  o.listen = flags.Get("listen");
  ASSIGN_OR_RETURN(o.limits.max_tokens, flags.GetIntIn("max-tokens", 1, INT64_MAX));
  ASSIGN_OR_RETURN(o.max_calls_per_connection, flags.GetIntIn("max-calls-per-connection", 1, INT64_MAX));
  ASSIGN_OR_RETURN(o.max_connections, flags.GetIntIn("max-connections", 1, INT64_MAX));
  ASSIGN_OR_RETURN(o.max_message_bytes, flags.GetIntIn("max-message-bytes", 1024, INT64_MAX));
  ASSIGN_OR_RETURN(const int64_t queued_mib, flags.GetIntIn("max-queued-answer-mib", 1, int64_t{1} << 20));
  o.max_queued_answer_bytes = queued_mib << 20;
  // The kernel takes at most 32767 s (TCP_KEEPIDLE).
  ASSIGN_OR_RETURN(const int64_t keepalive_s, flags.GetIntIn("tcp-keepalive-s", 0, 32767));
  o.keepalive = rpc::TcpKeepalive::AfterIdle(static_cast<int>(keepalive_s));
  o.metrics = metrics;
  return o;
}

int64_t FitOpenFileLimit(int64_t max_connections, const char* command) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  const rlim_t want = static_cast<rlim_t>(std::min<int64_t>(max_connections, INT64_MAX - 128) + 128);
  auto below = [&](rlim_t n) { return n != RLIM_INFINITY && n < want; };
  if (below(limit.rlim_cur)) {
    rlimit raised = limit;
    raised.rlim_cur = below(limit.rlim_max) ? limit.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (below(limit.rlim_cur))
    monitoring::LogLine(
        "cellserve %s: the open-file limit is %llu, below the %llu that --max-connections %lld needs; "
        "connections beyond it wait until others close. Raise it (`ulimit -n %llu`, systemd's "
        "LimitNOFILE) or lower --max-connections\n",
        command, static_cast<unsigned long long>(limit.rlim_cur), static_cast<unsigned long long>(want),
        static_cast<long long>(max_connections), static_cast<unsigned long long>(want));
  return limit.rlim_cur == RLIM_INFINITY ? INT64_MAX : static_cast<int64_t>(limit.rlim_cur);
}

StatusOr<MetricsEndpoint> StartMetricsEndpoint(const Flags& flags, const std::string& node, const char* command) {
  ASSIGN_OR_RETURN(const int64_t port, flags.GetIntIn("metrics-port", 0, 65535));
  MetricsEndpoint out;
  if (port == 0) return out;
  monitoring::ServingMetricsOptions options;
  if (!node.empty()) options.node = node;
  out.metrics = std::make_unique<monitoring::ServingMetrics>(options);
  if (node.empty()) out.metrics->RemoveNode(options.node);
  std::string bind = flags.Get("metrics-host");
  if (bind.empty()) {
    const std::string listen = flags.Get("listen");
    bind = listen.substr(0, listen.rfind(':'));
  }
  ASSIGN_OR_RETURN(out.server, monitoring::MetricsServer::Start(out.metrics.get(), bind + ":" + std::to_string(port)));
  monitoring::LogLine("cellserve %s: metrics on http://%s:%d/metrics\n", command, bind.c_str(), out.server->port());
  return out;
}

Status WritePortFile(const std::string& path, int port) {
  if (path.empty()) return OkStatus();
  return WriteFileAtomically(path, std::to_string(port) + "\n").WithContext("the port file");
}

std::string HostName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || !host[0]) return "localhost";
  return host;
}

}  // namespace cellserve::tools
