// ServingBackend: what a front door (the RPC server, `serve --stdin`) needs from whatever answers
// requests: the in-process LocalCluster (`cellserve serve`, `cellserve node`) or a Router that
// places them on node processes (`cellserve router`, cluster/router.h). Front doors depend on
// this interface only, so one RPC server serves both.
// Contract for every implementation: thread-safe; Infer answers `done` exactly once (on some
// internal thread; it must not block), after the request's tokens if it streams; Cancel of an
// unknown or finished id does nothing; Report may block briefly (it may ask actors); Models and
// state are cheap.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/cell_graph.h"
#include "runtime/model_spec.h"
#include "runtime/status.h"

namespace cellserve {

struct DeviceReport {
  std::string name;
  int64_t rounds = 0, cells = 0, padding_rows = 0;
  int64_t busy_us = 0;                     // time the device spent running batches
  // Gauges at the time of the report (DESIGN.md §7: in-flight requests, state-slot use): the
  // worker's schedulers' requests_in() and slots_in_use(), summed over its models.
  int64_t requests_in = 0, slots_in_use = 0;
};

struct ClusterReport {
  int64_t accepted = 0, completed = 0, failed = 0, rejected = 0;
  // LocalCluster: one per device. Router: none (see unlisted_devices); accepted counts requests
  // placed (a retry on another node is the same request), so accepted = completed + failed + in
  // flight.
  std::vector<DeviceReport> devices;
  // Devices counted but not listed: a router's, those of its live nodes (a node's registration
  // claims up to 65,536; one entry each made every health call build millions of them for a peer
  // that registered many nodes). Health's device count is devices.size() + unlisted_devices.
  int64_t unlisted_devices = 0;
  // Requests in flight that no device entry counts (a router's: every one it has not answered).
  int64_t requests_held = 0;
};

using InferCallback = std::function<void(StatusOr<RequestResult>)>;
// Streaming: each decoder token (seq2seq), in order, before the InferCallback; on an internal
// thread, must not block.
using TokenCallback = std::function<void(int32_t token)>;

// kServing: taking requests. kDraining: Stop has begun; new requests are answered UNAVAILABLE,
// accepted ones finish. kStopped: nothing runs, or (for a while) nothing moves: a router's actor
// or a node's device or actor is stuck, and says kServing again when it moves (health says
// not_ready meanwhile). kStarting (a router with no node yet): requests are answered UNAVAILABLE
// until a node joins.
enum class ClusterState { kServing, kDraining, kStopped, kStarting };
const char* ClusterStateName(ClusterState state);  // "serving", "draining", "stopped", "starting"

class ServingBackend {
 public:
  virtual ~ServingBackend() = default;

  // Runs one request. `done` gets the result or an error: NOT_FOUND (unknown model),
  // INVALID_ARGUMENT (bad input), RESOURCE_EXHAUSTED (queues or pool full, at once),
  // DEADLINE_EXCEEDED, CANCELLED (Cancel), UNAVAILABLE (stopping, or given up at Stop; a router:
  // no node can take it), INTERNAL. deadline_us: absolute SteadyClock micros, 0 = none. Returns an id for
  // Cancel.
  virtual uint64_t Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                         TokenCallback on_token = nullptr) = 0;
  // Cancels a request; it is answered CANCELLED unless it already finished.
  virtual void Cancel(uint64_t id) = 0;
  virtual ClusterReport Report() const = 0;
  // The specs of the models it serves now (a router's grow as nodes join).
  virtual std::vector<ModelSpec> Models() const = 0;
  virtual ClusterState state() const = 0;
  // Why it is not serving, for an operator (health's `reason`): a stuck part, a failure, no node
  // yet. Empty while serving, or when the state says all there is. Any thread.
  virtual std::string StateReason() const { return {}; }
};

// One process's load, cheap to read (no actor is asked): what a node reports to routers.
struct ClusterLoad {
  int64_t outstanding_cells = 0;  // summed over devices, as of the workers' last load reports
};

// What a node agent (cluster/node_agent.h) serves: the node's LocalCluster, or in tests a
// stand-in that answers when the test says. Load is cheap and thread-safe.
class NodeBackend : public ServingBackend {
 public:
  virtual ClusterLoad Load() const = 0;
  // A part of it is stuck (LocalCluster: --stall-after-ms): its agent then sends no load reports,
  // so that routers drop the node and place its requests elsewhere. Any thread.
  virtual bool Stuck() const { return false; }
};

}  // namespace cellserve
