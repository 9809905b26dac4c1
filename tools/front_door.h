// The start-up pieces every serving command shares (serve, node, router): the RPC port's flags
// and options, the Prometheus metrics endpoint, port files. One definition, so the three commands
// take the same flags with the same meaning (deploy/k8s passes them; its test checks them).
// Main-thread helpers; errors are Statuses the command prints.
#pragma once

#include <memory>
#include <string>

#include "monitoring/metrics.h"
#include "runtime/status.h"
#include "schema/rpc_server.h"
#include "tools/flags.h"

namespace cellserve::tools {

// --listen, --port-file, --max-tokens, --max-calls-per-connection, --max-connections,
// --max-message-bytes, --max-queued-answer-mib, --tcp-keepalive-s, --metrics-port, --metrics-host.
void AddFrontDoorFlags(Flags& flags);

// The RPC server's options from those flags. INVALID_ARGUMENT for a value that is not a number.
StatusOr<rpc::RpcServerOptions> RpcServerOptionsFromFlags(const Flags& flags, monitoring::ServingMetrics* metrics);

// Raises this process's soft open-file limit (RLIMIT_NOFILE) to what `max_connections` needs
// (plus 128: model files, the metrics port, the cluster's sockets), up to the hard limit, as
// Go's runtime and many servers do: a shell's soft limit is often 1024, its hard one far higher.
// Where even the hard limit is too low, prints a warning (as "cellserve COMMAND: ...") that says
// what to raise. Returns the soft limit now (-1 if it cannot be read).
int64_t FitOpenFileLimit(int64_t max_connections, const char* command);

// Metrics and their /metrics exposer, both null with --metrics-port 0. Binds --metrics-host, else
// --listen's host. `node` labels this process's cellserve_node_up; empty: no such series (a
// router, whose series are the nodes it sees). Prints the URL as "cellserve COMMAND: ...".
struct MetricsEndpoint {
  std::unique_ptr<monitoring::ServingMetrics> metrics;
  std::unique_ptr<monitoring::MetricsServer> server;
};
StatusOr<MetricsEndpoint> StartMetricsEndpoint(const Flags& flags, const std::string& node, const char* command);

// Writes `port` and a newline to `path` (a temp file, then rename: readers never see half a
// number). An empty path does nothing. WriteFileAtomically's errors if it cannot (NOT_FOUND for a
// missing folder, INVALID_ARGUMENT for a directory, INTERNAL otherwise).
Status WritePortFile(const std::string& path, int port);

// This machine's name ("localhost" if it has none).
std::string HostName();

}  // namespace cellserve::tools
