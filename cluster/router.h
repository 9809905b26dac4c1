// Router: the front half of `cellserve router` (issue 4; DESIGN.md §6). It publishes a router
// actor on --cluster with CAF's middleman; nodes (`cellserve node --join`, cluster/node_agent.h)
// connect, register their models and devices, report load, and run the requests placed on them.
// It is a ServingBackend, so the RPC server (schema/rpc_server.h) serves clients through it just as
// it serves a LocalCluster. Routers hold no state that a restart loses: nodes re-register.
//
// Placement: runtime/router_policy.h (least outstanding work among the live nodes that serve the
// model, power of two choices above p2c_threshold nodes; round_robin and random for comparison).
// Failures: each node is monitored. A node that dies, closes its connection or is silent for
// longer than report_timeout_ms is removed; its requests in flight are retried once on another
// node (inference is idempotent; a seq2seq stream resumes after the tokens already sent) or
// answered UNAVAILABLE. An UNAVAILABLE answer from a node (it began draining as the request
// arrived) is retried the same way. A draining node gets no new placements.
// Versions: nodes may serve different versions of a model (part way through a rolling upgrade). A
// request for version V (RequestInput::model_version) goes to a node that serves V, one for 0 to
// any node that serves the model; its result says which version ran it (model_version). A retry
// of a request that has streamed tokens runs the same version again. Each version a node brings
// is a policy model name (max_models counts a model and each of its versions served now).
// Thread-safety: every public method may be called from any thread. Infer's callbacks run on the
// router's actor thread and must not block. Stop answers every request (in flight ones finish
// within stop_grace_ms, then are answered UNAVAILABLE) and closes the cluster port.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/serving_backend.h"
#include "runtime/router_policy.h"
#include "runtime/status.h"

namespace cellserve::monitoring {
class ServingMetrics;
}

namespace cellserve::cluster {

struct RouterOptions {
  // HOST:PORT the router actor is published on (nodes --join it). Port 0: any free port (see
  // Router::port). Default 127.0.0.1:7411.
  std::string cluster = "127.0.0.1:7411";
  RouterPolicyOptions policy;
  // A node with no load report for this long is taken as gone (a cut-off that kept its TCP
  // connection open). Nodes report every 200 ms. Default 3000. Must be >= 100.
  int64_t report_timeout_ms = 3000;
  // Stop: how long requests in flight may take before they are answered UNAVAILABLE. Default 30 s.
  int64_t stop_grace_ms = 30000;
  // The actor sweeps its table every report_timeout_ms / 4 (25 ms to 1 s). Not for this long, it
  // is stuck (a blocking call on its thread, CAF's network thread: it places and answers nothing):
  // state() says kStopped, so health says not ready (the readiness probe takes the router out of
  // its Service) and a line says so, until it sweeps again. Default 5000. Must be >= 1.
  int64_t stall_after_ms = 5000;
  // The router's clock (the policy's report ages, the sweep's heartbeat, deadlines given to
  // Infer). Null: SteadyClock. Tests pass one that jumps; borrowed, must outlive the router and
  // be safe to read from any thread.
  const Clock* clock = nullptr;
  // CAF scheduler threads. Default 1: the router is one actor (placement is serial); the
  // middleman's I/O and the RPC port have threads of their own. 0 = one per CPU this process may use.
  int caf_threads = 1;
  // Prometheus metrics: each answer (cellserve_requests_total, duration), placements, node up.
  // Borrowed: must outlive the router. nullptr = none.
  monitoring::ServingMetrics* metrics = nullptr;
  // --idle-poll (actors/idle_poller.h): while the router runs, keep the CPUs of the thread that
  // calls Start out of the idle loop, as a node does; the pollers sleep while idle_poll_below or
  // more requests are unanswered (0: spin always). Start refuses it when the process's CPU quota
  // does not cover those CPUs (runtime/cpu_quota.h).
  bool idle_poll = false;
  int64_t idle_poll_below = 8;
  // Called once, on a CAF thread (or Start's), if the router's actor ends other than by Stop (a
  // bug: the actor ignores what peers send it, cluster/peer_guard.h). From then on state() is
  // kStopped and every request is answered at once; `cellserve router` exits 1 so that it is restarted.
  std::function<void(const std::string& why)> on_actor_failure;
};

struct RouterStats {
  int64_t placed = 0;        // placements, retries included
  int64_t retried = 0;       // requests placed a second time (node lost or draining)
  int64_t nodes_lost = 0;    // nodes removed because they died, were cut off or went silent
  int64_t nodes_joined = 0;  // registrations of nodes new to this router (a rejoin counts again)
  int64_t late_answers = 0;  // answers dropped: the request had moved on (retried or cancelled)
  int64_t forged_answers = 0;  // answers dropped: not from the node they named (or from a node gone)
  int64_t nodes = 0;         // in the table now
  int64_t sweeps = 0;        // of its table (each report_timeout_ms / 4, 25 ms to 1 s)
  int64_t late_sweeps = 0;   // of those, ones that came so late that no node was judged silent
};

// One node as the router sees it (for health, logs and tests).
struct RouterNodeInfo {
  uint64_t id = 0;
  std::string name;
  std::vector<std::string> models;
  int32_t devices = 0;
  bool draining = false;
  // As of the last change to the node table or the last sweep (report_timeout_ms / 4):
  int64_t in_flight = 0;  // this router's requests there
  int64_t placed = 0;     // placed there since it registered
};

class Router final : public ServingBackend {
 public:
  // Starts the actor system and publishes the router. UNAVAILABLE if the port cannot be opened;
  // INVALID_ARGUMENT for bad options.
  static StatusOr<std::unique_ptr<Router>> Start(RouterOptions options);
  ~Router() override;  // Stop()

  int port() const;  // the cluster port

  uint64_t Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                 TokenCallback on_token = nullptr) override;
  void Cancel(uint64_t id) override;
  ClusterReport Report() const override;
  // Every version of each model the live nodes serve, by name then version; a model no live node
  // serves keeps the one version last listed (its requests are UNAVAILABLE until a node returns).
  std::vector<ModelSpec> Models() const override;
  // kStarting while no node is registered; kStopped after Stop or a failure, and while the actor is
  // stuck (stall_after_ms).
  ClusterState state() const override;
  // No node yet, or a stuck actor (for how long).
  std::string StateReason() const override;

  RouterStats stats() const;
  std::vector<RouterNodeInfo> nodes() const;
  // The CPUs kept awake by options.idle_poll; empty without it (and after Stop).
  std::vector<int> idle_poll_cpus() const;

  // See the header comment. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit Router(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve::cluster
