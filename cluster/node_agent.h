// NodeAgent: the cluster half of `cellserve node` (issue 4; DESIGN.md §6). It joins a process's
// LocalCluster to one or more routers (cluster/router.h) over CAF's middleman: connects to every
// address each --join name resolves to (a headless Service gives one per router; names are
// resolved again every 30 s, and until one of their addresses answers), reconnects whenever a
// connection is lost or a router restarted, registers the node's models and devices (a refused or
// unanswered registration is tried again, backing off from reconnect_interval_ms to 5 s), reports its
// load (outstanding cells: every report_interval_ms, and 10 ms after a request arrives or
// finishes; an idle node wakes only for the heartbeat; none while the cluster's state() says
// kStopped, as a stuck LocalCluster does, so that routers drop it), runs what routers place on it
// through LocalCluster::Infer and sends each answer (and each streamed token) back.
// Drain (SIGTERM): tells every router to place nothing more here and waits for their
// acknowledgements; the caller then stops the LocalCluster (in-flight requests finish) and calls
// Leave, which says goodbye after the last answer went out, so no answer is lost on the way.
// Thread-safety: every method may be called from any thread (Leave and the destructor too: Start
// lets go of CAF's thread-local hold on the agent's actor system, actors/caf_config.h). The
// cluster must outlive the agent. It is a NodeBackend (actors/serving_backend.h): the process's
// LocalCluster, or in tests a stand-in that answers when the test says.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/serving_backend.h"
#include "runtime/status.h"

namespace cellserve::cluster {

struct NodeAgentOptions {
  std::vector<std::string> join;        // HOST:PORT of each router; at least one
  std::string name;                     // how routers name this node; default HOSTNAME:PID
  int devices = 1;                      // the cluster's devices (registered with routers); >= 1
  int64_t report_interval_ms = 200;     // heartbeat load reports (routers drop silent nodes)
  int64_t reconnect_interval_ms = 250;  // between connection attempts to a router
  // Bounds each attempt twice: the TCP connect (an address that drops SYNs) and then CAF's
  // handshake (a peer that accepts and never answers, e.g. --join pointed at another service).
  // Leave and a SIGTERM wait at most about this long for an attempt under way.
  int64_t connect_timeout_ms = 2000;
  int64_t max_tokens = 4096;            // per request, as the RPC server's --max-tokens
  int caf_threads = 1;                  // of the agent's own actor system (one actor); 0 = one per usable CPU
  // Called once, on a CAF thread (or Start's), if the agent's actor ends other than by Leave (a
  // bug: it ignores what routers send it, cluster/peer_guard.h): the node is in no router's
  // table any more and would not rejoin; Drain and Leave then wait for nothing. `cellserve node`
  // then stops and exits 1 so that it is restarted.
  std::function<void(const std::string& why)> on_actor_failure;
};

struct NodeAgentStats {
  int64_t routers_registered = 0;  // routers (addresses) registered with now
  int64_t runs = 0;               // requests run for routers
  int64_t aborts = 0;             // of those, cancelled by a router
  int64_t tokens_sent = 0;        // seq2seq tokens sent to routers (only for runs a caller streams)
  int64_t registrations = 0;      // accepted registrations (reconnects and re-registrations count)
  int64_t registration_failures = 0;  // refused or unanswered ones (each is tried again)
};

// INVALID_ARGUMENT, naming --join, unless `join` holds at least one address and each is HOST:PORT
// (Start checks it; a command checks it before loading models).
Status CheckJoinAddresses(const std::vector<std::string>& join);

class NodeAgent {
 public:
  // Starts connecting in the background (a router that is not up yet is retried). INVALID_ARGUMENT
  // for a bad address or options; or a cluster that serves no model.
  static StatusOr<std::unique_ptr<NodeAgent>> Start(NodeBackend* cluster, NodeAgentOptions options);
  ~NodeAgent();  // Leave()

  NodeAgentStats stats() const;
  // True once registered with at least as many routers as --join has entries (tests, logs).
  bool WaitRegistered(int64_t timeout_ms) const;

  // No new placements: tells every connected router and waits (up to timeout_ms) for each to
  // acknowledge. Returns how many did. Routers that connect later are not joined again.
  int Drain(int64_t timeout_ms);
  // Says goodbye to every router (after every answer sent so far) and closes the connections.
  // Idempotent.
  void Leave();

 private:
  struct Impl;
  explicit NodeAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve::cluster
