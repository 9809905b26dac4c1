// `cellserve router`: the front of a cluster (issue 4; DESIGN.md §6). Publishes a router actor on
// --cluster for nodes (`cellserve node --join`) and serves clients on the Cap'n Proto RPC port
// --listen, placing each request on a live node that serves its model (cluster/router.h). It is
// stateless: run several behind one Service; a restarted router gets its nodes back as they
// re-register. Health says not_ready until a node has joined. SIGTERM or SIGINT: new calls are
// answered UNAVAILABLE, requests in flight finish, then it exits 0. If the router's actor ends on
// its own (a bug), it stops the same way and exits 1.
#include <cstdio>
#include <memory>
#include <string>

#include "cluster/router.h"
#include "monitoring/log.h"
#include "runtime/cpu_plan.h"
#include "runtime/router_policy.h"
#include "schema/rpc_server.h"
#include "tools/commands.h"
#include "cluster/wire.h"
#include "tools/cli_errors.h"
#include "tools/flags.h"
#include "tools/front_door.h"
#include "tools/stop_signal.h"
#include "tools/thread_placement.h"

namespace cellserve::tools {
namespace {

int Fail(const Status& s) { return CommandFailed("router", false, s); }

}  // namespace

int RouterCommand(int argc, char** argv) {
  Flags flags("router",
              "Runs a router: nodes (`cellserve node --join HOST:PORT`) join it on --cluster; clients call it on\n"
              "--listen (Cap'n Proto RPC, the same protocol as `cellserve serve`). Each request goes to a live\n"
              "node that serves its model: the least loaded (outstanding cells per device) while at most\n"
              "--p2c-threshold nodes serve it, the better of two random ones above. A node that dies or goes\n"
              "silent is removed and its requests in flight are retried once elsewhere (or answered\n"
              "UNAVAILABLE). Health is not_ready until a node joins. SIGTERM or SIGINT: drains and exits 0\n"
              "(1 if its actor had ended on its own: restart it).");
  flags.ConfigFromEnvironment();
  flags.Add("cluster", "127.0.0.1:7411",
            "HOST:PORT nodes join (port 0: any free port; see --cluster-port-file). Unauthenticated: let only the "
            "nodes reach it (docs/OPERATIONS.md)",
            false, "CELLSERVE_CLUSTER")
      .Add("cluster-port-file", "", "write the cluster port's number to this file once it listens")
      .Add("policy", "auto", "placement: auto (least_loaded up to --p2c-threshold nodes, p2c above), least_loaded, "
           "p2c, round_robin or random")
      .Add("estimate", "own", "load compared: own (this router's requests in flight), own_plus_reported or "
           "report_plus_placed (runtime/router_policy.h)")
      .Add("p2c-threshold", "8", "auto: least_loaded while at most this many nodes serve the model")
      .Add("seed", "1", "seed of p2c and random")
      .Add("report-timeout-ms", "3000", "a node silent for this long is removed (nodes report every 200 ms)")
      .Add("stop-grace-ms", "30000", "SIGTERM: requests in flight may take this long, then are answered UNAVAILABLE");
  AddFrontDoorFlags(flags);
  AddIdlePollFlags(flags, "every core this process may use (its cpuset or taskset)");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  const StatusOr<int64_t> seed = flags.GetInt("seed"), report_timeout_ms = flags.GetIntIn("report-timeout-ms", 100, INT64_MAX),
                          stop_grace_ms = flags.GetIntIn("stop-grace-ms", 0, INT64_MAX);
  for (const StatusOr<int64_t>* v : {&seed, &report_timeout_ms, &stop_grace_ms})
    if (!v->ok()) return FlagValueFailed("router", v->status());
  auto p2c_threshold = flags.GetIntIn("p2c-threshold", 1, 1 << 20);
  if (!p2c_threshold.ok()) return FlagValueFailed("router", p2c_threshold.status());
  cluster::RouterOptions options;
  options.cluster = flags.Get("cluster");
  {
    std::string listen_host, cluster_host;
    uint16_t listen_port = 0, cluster_port = 0;
    auto any = [](const std::string& host) {  // every interface, so also the other address
      return host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]" || host == "*";
    };
    if (cluster::ParseHostPort(flags.Get("listen"), true, listen_host, listen_port).ok() &&
        cluster::ParseHostPort(options.cluster, true, cluster_host, cluster_port).ok() && listen_port != 0 &&
        listen_port == cluster_port && (listen_host == cluster_host || any(listen_host) || any(cluster_host)))
      return FlagValueFailed("router", InvalidArgument("--listen and --cluster are both port " +
                                                       std::to_string(listen_port) +
                                                       ": the router needs two (clients on --listen, nodes on --cluster)"));
  }
  auto policy = ParseRoutePolicy(flags.Get("policy"));
  if (!policy.ok()) return FlagValueFailed("router", policy.status());
  options.policy.policy = *policy;
  auto estimate = ParseLoadEstimate(flags.Get("estimate"));
  if (!estimate.ok()) return FlagValueFailed("router", estimate.status());
  options.policy.estimate = *estimate;
  options.policy.p2c_threshold = static_cast<int>(*p2c_threshold);
  options.policy.seed = static_cast<uint64_t>(*seed);
  options.report_timeout_ms = *report_timeout_ms;
  if (*report_timeout_ms < 1000)
    monitoring::LogLine(
        "cellserve router: warning: --report-timeout-ms %lld: nodes report every 200 ms by default "
        "(--report-interval-ms); a timeout of fewer than about 5 intervals drops nodes that are only slow\n",
        static_cast<long long>(*report_timeout_ms));
  options.stop_grace_ms = *stop_grace_ms;
  auto idle = ReadIdlePollFlags(flags);
  if (!idle.ok()) return FlagValueFailed("router", idle.status());
  options.idle_poll = idle->on;
  options.idle_poll_below = idle->below;

  StopSignals signals;
  if (Status s = signals.Install(); !s.ok()) return Fail(s);
  auto metrics = StartMetricsEndpoint(flags, /*node=*/"", "router");  // the nodes it sees, not itself
  if (!metrics.ok()) return FlagValueFailed("router", metrics.status());  // a bad port: 2; in use: 1
  options.metrics = metrics->metrics.get();

  // A router whose actor ended places nothing more: stop as at SIGTERM, then exit 1 so that the
  // process is restarted (its health said not_ready meanwhile).
  options.on_actor_failure = [&signals](const std::string&) { signals.Fail(); };
  auto router = cluster::Router::Start(options);
  if (!router.ok()) return Fail(router.status());
  if (options.idle_poll)
    monitoring::LogLine("cellserve router: --idle-poll: %s kept out of the idle loop (threads cs-idle-poll:N)\n",
                        DescribeCpus((*router)->idle_poll_cpus()).c_str());
  auto rpc_options = RpcServerOptionsFromFlags(flags, options.metrics);
  if (!rpc_options.ok()) return FlagValueFailed("router", rpc_options.status());
  FitOpenFileLimit(rpc_options->max_connections, "router");
  auto server = rpc::RpcServer::Start(router->get(), *rpc_options);
  if (!server.ok()) return Fail(server.status());
  monitoring::LogLine(
      "cellserve router: nodes join on port %d; clients call port %d (policy %s, estimate %s); "
      "SIGTERM drains and exits\n",
      (*router)->port(), (*server)->port(), RoutePolicyName(options.policy.policy),
      LoadEstimateName(options.policy.estimate));
  if (Status s = WritePortFile(flags.Get("cluster-port-file"), (*router)->port()); !s.ok()) return Fail(s);
  if (Status s = WritePortFile(flags.Get("port-file"), (*server)->port()); !s.ok()) return Fail(s);

  if (Status s = signals.Wait(); !s.ok()) return Fail(s);
  if (!signals.failed()) monitoring::LogLine("cellserve router: signal: draining requests in flight\n");
  (*router)->Stop();  // new calls UNAVAILABLE; those in flight finish
  (*server)->Stop();
  const cluster::RouterStats st = (*router)->stats();
  const ClusterReport report = (*router)->Report();
  monitoring::LogLine(
      "cellserve router: %lld placement(s) (%lld retried), %lld completed, %lld failed, %lld rejected; "
      "%lld node join(s), %lld node(s) lost\n",
      static_cast<long long>(st.placed), static_cast<long long>(st.retried),
      static_cast<long long>(report.completed), static_cast<long long>(report.failed),
      static_cast<long long>(report.rejected), static_cast<long long>(st.nodes_joined),
      static_cast<long long>(st.nodes_lost));
  server->reset();
  router->reset();
  if (signals.failed()) {
    monitoring::LogLine("cellserve router: exiting 1: its actor had ended (above); restart it\n");
    return 1;
  }
  return 0;
}

}  // namespace cellserve::tools
