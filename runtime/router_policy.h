// RouterPolicy: the router's table of nodes and its placement decision (issue 4; DESIGN.md §6).
// Pure: no threads, no actors; time only through the injected Clock (registration and report
// times), randomness only from a seeded mt19937_64 (raw output, our own bounded draws), so the
// same sequence of calls gives the same placements on every platform. Not thread-safe: owned by
// one router actor, which turns its messages into these calls.
//
// The table. A node registers with an id (the router's choice, e.g. the actor id), a name for
// messages, the models it has loaded and its device count. It then reports its load: outstanding
// cells summed over its devices (and its device count). A node may drain (no new placements; its
// requests in flight stay) and goes down (removed, its requests in flight handed back).
//
// The load compared (Options::estimate), per device:
//   own                 the cells of the requests this router placed there and has not seen
//                       answered: exact and current at every placement and answer. Reports only
//                       update the device count. A slow node keeps its requests longer, so it
//                       looks busier: the feedback is built in. The default.
//   own_plus_reported   own, plus what the last report showed beyond own at that time (the work
//                       of other routers), which stays as it was until the next report.
//   report_plus_placed  the last report, plus the cells placed since it (taken off again if
//                       answered before the next report); requests placed before a report are
//                       assumed to be in it.
// Measured (bench/router_sim, docs/BENCHMARKS.md): with one router, own and own_plus_reported
// place alike; with several, the stale part makes every router favour the same nodes until the
// next report (a herd), and own does best. report_plus_placed is a little worse even with one
// router when reports are old compared with a request's life.
//
// The decision (Options::policy), among the live, non-draining nodes that serve the model:
//   least_loaded  the least loaded (per device, as estimated above); ties go to the first in a
//                 scan that starts one further along at every decision (so equal nodes take
//                 turns). O(nodes serving the model).
//   p2c           power of two choices: two distinct nodes drawn at random, the less loaded one
//                 (the first drawn on a tie). O(1).
//   auto          least_loaded while at most p2c_threshold nodes serve the model, p2c above. The
//                 default.
//   round_robin   the next in turn (one turn per model). Ignores load.
//   random        uniform. Ignores load.
// Errors: NOT_FOUND when no node in the table has ever served the model; UNAVAILABLE when some
// did but none of them can take it now (down, draining or excluded); the message names the model
// and the live nodes with their models.
//
// Requests. The router reports each placement (OnPlaced) and each answer (OnAnswered). When a node
// goes down, NodeDown hands back the requests in flight there; the router retries each one once
// (inference is idempotent) with PickExcluding and OnPlaced(attempt + 1), or answers UNAVAILABLE.
// Only the answer from the node a request is currently placed on counts: a late answer from a
// node the request was taken away from is NOT_FOUND, so the router can drop it and every request
// is answered exactly once.
// Time: the clock is read at Register and ReportLoad (the last report time) and in SilentNodes;
// Pick never reads it. Memory: at most max_nodes nodes and max_models model names (kept after
// their last node leaves, so a request for them is UNAVAILABLE rather than NOT_FOUND, until the
// router has them forgotten: Forget); O(1) per request in flight.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/clock.h"
#include "runtime/status.h"

namespace cellserve {

using NodeId = uint64_t;
using RequestId = uint64_t;  // as in runtime/scheduler.h

enum class RoutePolicy { kAuto, kLeastLoaded, kP2C, kRoundRobin, kRandom };
const char* RoutePolicyName(RoutePolicy policy);  // "auto", "least_loaded", "p2c", ...
StatusOr<RoutePolicy> ParseRoutePolicy(const std::string& name);

// What least_loaded and p2c compare (per device), see the header comment.
enum class LoadEstimate { kOwn, kOwnPlusReported, kReportPlusPlaced };
// "own", "own_plus_reported", "report_plus_placed"
const char* LoadEstimateName(LoadEstimate estimate);
StatusOr<LoadEstimate> ParseLoadEstimate(const std::string& name);

struct RouterPolicyOptions {
  RoutePolicy policy = RoutePolicy::kAuto;
  // What least_loaded and p2c compare (see the header comment). Default own.
  LoadEstimate estimate = LoadEstimate::kOwn;
  // auto: least_loaded while at most this many nodes can take the model, p2c above. Must be >= 1.
  // Default 8.
  int p2c_threshold = 8;
  // Seeds the generator of p2c and random. Default 1.
  uint64_t seed = 1;
  // Nodes in the table at most (Register beyond is RESOURCE_EXHAUSTED). Must be >= 1.
  // Default 4096.
  int max_nodes = 4096;
  // Distinct model names at most, ever (Register beyond is RESOURCE_EXHAUSTED). Must be >= 1.
  // Default 1024.
  int max_models = 1024;
  // Requests in flight at most (OnPlaced beyond is RESOURCE_EXHAUSTED). Must be in 1..2^22.
  // Default 1 << 20.
  int64_t max_in_flight = int64_t{1} << 20;
  // SilentNodes lists nodes with no report (or registration) for longer than this many clock
  // micros. 0: never. Must be >= 0. Default 0.
  int64_t report_timeout_us = 0;
};

struct NodeRegistration {
  NodeId id = 0;
  std::string name;                 // for messages and logs; empty: "node-<id>"
  std::vector<std::string> models;  // the models it serves; duplicates are ignored
  int32_t devices = 1;              // 1..65536
};

// A node's load at the time it sent the report.
struct NodeLoad {
  int64_t outstanding_cells = 0;  // summed over its devices; 0..2^40
  int32_t devices = 0;            // 1..65536; 0: unchanged
};

// A request the router placed and has not seen answered.
struct InFlightRequest {
  RequestId request = 0;
  std::string model;
  int64_t cells = 0;  // the router's estimate of its cells, as given to OnPlaced
  int attempt = 1;    // 1 for the first placement, 2 for a retry
  NodeId node = 0;
};

// A node as the router sees it (for tests, logs and health).
struct NodeView {
  NodeId id = 0;
  std::string name;
  std::vector<std::string> models;  // sorted, without duplicates
  int32_t devices = 1;
  bool draining = false;
  int64_t reported_cells = 0;      // at the last report
  int64_t placed_since_cells = 0;  // placed since that report and not answered yet
  int64_t in_flight_cells = 0;     // cells of this router's requests in flight there
  int64_t others_cells = 0;        // the last report beyond in_flight_cells then (>= 0)
  double estimate = 0;             // the load compared (cells, not per device), per Options
  int64_t last_report_us = 0;      // clock micros of the last report (or the registration)
  int64_t in_flight = 0;           // requests placed there and not answered
  int64_t reports = 0;             // load reports received
};

class RouterPolicy {
 public:
  // `clock` must outlive the policy. INVALID_ARGUMENT for bad options.
  static StatusOr<std::unique_ptr<RouterPolicy>> Create(RouterPolicyOptions options,
                                                        const Clock* clock);
  ~RouterPolicy();

  // Adds a node, or updates a registered one (its name, models and devices; a draining node
  // stays draining, its load and requests in flight stay). Its load starts at 0 cells, reported
  // now. INVALID_ARGUMENT for devices out of range or an empty model name; RESOURCE_EXHAUSTED
  // when max_nodes or max_models would be exceeded.
  Status Register(const NodeRegistration& node);

  // A load report. NOT_FOUND for an unknown node (the router should ask it to register again);
  // INVALID_ARGUMENT for values out of range.
  Status ReportLoad(NodeId node, const NodeLoad& load);

  // No new placements on the node; its requests in flight stay. NOT_FOUND for an unknown node.
  Status Drain(NodeId node);

  // Removes the node (it died, was cut off, or finished draining) and returns the requests in
  // flight there, ascending by request id; they are no longer in flight. NOT_FOUND for an unknown
  // node.
  StatusOr<std::vector<InFlightRequest>> NodeDown(NodeId node);

  // Forgets the model names that no node in the table serves (draining ones count) and no request
  // in flight uses, among those `forgettable` says yes to; returns how many. A forgotten name is
  // NOT_FOUND to Pick again, and no longer counts against max_models (a router forgets the
  // versions of a model no node serves any more; it keeps the names). O(models + requests).
  int Forget(const std::function<bool(const std::string& model)>& forgettable);

  // Picks a node for a request of `model` (see the header comment). Advances the generator or
  // the turn, nothing else: call OnPlaced once the request is sent.
  StatusOr<NodeId> Pick(const std::string& model);
  // The same, never choosing `excluded` (for the retry after a failure there). An unknown
  // `excluded` excludes nothing.
  StatusOr<NodeId> PickExcluding(const std::string& model, NodeId excluded);

  // The request was sent to `node`. `cells`: its estimated cells (>= 0). attempt: 1, or 2 for a
  // retry. INVALID_ARGUMENT for a request already in flight or bad values; NOT_FOUND for an
  // unknown node or a model it does not serve; RESOURCE_EXHAUSTED past max_in_flight.
  Status OnPlaced(RequestId request, const std::string& model, int64_t cells, NodeId node,
                  int attempt = 1);

  // The answer from `node` for `request`. NOT_FOUND when the request is not in flight on that
  // node (answered already, or taken away by NodeDown): drop the answer.
  Status OnAnswered(RequestId request, NodeId node);

  // Nodes with no report for longer than report_timeout_us (empty when that is 0), ascending by
  // id. The router decides (usually NodeDown).
  std::vector<NodeId> SilentNodes() const;

  std::optional<NodeView> node(NodeId id) const;
  std::vector<NodeId> nodes() const;  // every node in the table, ascending by id
  std::optional<InFlightRequest> in_flight(RequestId request) const;
  int64_t requests_in_flight() const;
  int node_count() const;
  const RouterPolicyOptions& options() const;

 private:
  struct Impl;
  explicit RouterPolicy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve
