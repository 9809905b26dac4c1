#include "runtime/router_policy.h"

#include <algorithm>
#include <random>
#include <unordered_map>

namespace cellserve {

namespace {

constexpr int64_t kMaxCells = int64_t{1} << 40;
constexpr int32_t kMaxDevices = 65536;
// Nodes named in an error message at most.
constexpr size_t kNamedInMessage = 16;

// Uniform in [0, bound) without modulo bias; portable (mt19937_64's output is standardized).
uint64_t UniformBelow(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = gen();
    if (r >= threshold) return r % bound;
  }
}

}  // namespace

const char* RoutePolicyName(RoutePolicy policy) {
  switch (policy) {
    case RoutePolicy::kAuto: return "auto";
    case RoutePolicy::kLeastLoaded: return "least_loaded";
    case RoutePolicy::kP2C: return "p2c";
    case RoutePolicy::kRoundRobin: return "round_robin";
    case RoutePolicy::kRandom: return "random";
  }
  return "?";
}

const char* LoadEstimateName(LoadEstimate estimate) {
  switch (estimate) {
    case LoadEstimate::kOwn: return "own";
    case LoadEstimate::kOwnPlusReported: return "own_plus_reported";
    case LoadEstimate::kReportPlusPlaced: return "report_plus_placed";
  }
  return "?";
}

StatusOr<LoadEstimate> ParseLoadEstimate(const std::string& name) {
  for (LoadEstimate e :
       {LoadEstimate::kOwn, LoadEstimate::kOwnPlusReported, LoadEstimate::kReportPlusPlaced})
    if (name == LoadEstimateName(e)) return e;
  return InvalidArgument("unknown load estimate '" + name + "' (own, own_plus_reported, report_plus_placed)");
}

StatusOr<RoutePolicy> ParseRoutePolicy(const std::string& name) {
  for (RoutePolicy p : {RoutePolicy::kAuto, RoutePolicy::kLeastLoaded, RoutePolicy::kP2C,
                        RoutePolicy::kRoundRobin, RoutePolicy::kRandom})
    if (name == RoutePolicyName(p)) return p;
  return InvalidArgument("unknown routing policy '" + name +
                         "' (auto, least_loaded, p2c, round_robin, random)");
}

struct RouterPolicy::Impl {
  struct Node {
    bool used = false;
    NodeId id = 0;
    std::string name;
    std::vector<int32_t> models;  // model indices, ascending
    int32_t devices = 1;
    bool draining = false;
    int64_t reported_cells = 0;
    int64_t placed_since_cells = 0;  // placed in this epoch and not answered
    int64_t in_flight_cells = 0;     // cells of the requests in flight there
    int64_t others_cells = 0;        // at the last report: reported beyond in_flight_cells, >= 0
    int64_t last_report_us = 0;
    int64_t reports = 0;
    uint64_t epoch = 0;                 // reports received; a request placed in an older epoch is in a report
    std::vector<RequestId> requests;    // in flight here; Record::pos is the index
  };
  struct Model {
    std::string name;
    std::vector<int32_t> takers;  // node slots that serve it and are not draining, by registration
    uint64_t turn = 0;            // round_robin's next turn; least_loaded's scan start
  };
  struct Record {
    int32_t slot = 0;
    int32_t model = 0;
    int64_t cells = 0;
    int attempt = 1;
    uint64_t epoch = 0;
    size_t pos = 0;
  };

  RouterPolicyOptions options;
  const Clock* clock = nullptr;
  std::mt19937_64 gen;
  std::vector<Node> nodes;  // slots; unused ones are in free_slots
  std::vector<int32_t> free_slots;
  int node_count = 0;
  std::unordered_map<NodeId, int32_t> slot_of;
  std::vector<Model> models;
  std::unordered_map<std::string, int32_t> model_of;
  std::unordered_map<RequestId, Record> requests;

  // Per slot, (reported + placed since) cells per device, kept apart from the nodes so a
  // least_loaded scan reads 8 bytes per node. A correctly rounded quotient: equal loads compare
  // equal and the order is exact while the cells stay below 2^53.
  std::vector<double> load;

  void Refresh(int32_t slot) {
    const Node& n = nodes[slot];
    int64_t cells = 0;
    switch (options.estimate) {
      case LoadEstimate::kOwn: cells = n.in_flight_cells; break;
      case LoadEstimate::kOwnPlusReported: cells = n.in_flight_cells + n.others_cells; break;
      case LoadEstimate::kReportPlusPlaced: cells = n.reported_cells + n.placed_since_cells; break;
    }
    load[slot] = static_cast<double>(cells) / n.devices;
  }

  const Node* Find(NodeId id) const {
    auto it = slot_of.find(id);
    return it == slot_of.end() ? nullptr : &nodes[it->second];
  }

  void AddTaker(int32_t model, int32_t slot) { models[model].takers.push_back(slot); }
  void RemoveTaker(int32_t model, int32_t slot) {
    auto& t = models[model].takers;
    t.erase(std::remove(t.begin(), t.end(), slot), t.end());
  }

  // "node-1 (sentiment, translate), node-2 (sentiment; draining)": the nodes in the table.
  std::string DescribeNodes(int32_t excluded_slot) const {
    std::vector<const Node*> live;
    for (const Node& n : nodes)
      if (n.used) live.push_back(&n);
    if (live.empty()) return "none";
    std::sort(live.begin(), live.end(), [](const Node* a, const Node* b) { return a->id < b->id; });
    std::string out;
    for (size_t i = 0; i < live.size() && i < kNamedInMessage; ++i) {
      const Node& n = *live[i];
      if (i) out += ", ";
      out += n.name + " (";
      for (size_t m = 0; m < n.models.size(); ++m)
        out += (m ? ", " : "") + models[n.models[m]].name;
      if (n.models.empty()) out += "no models";
      if (n.draining) out += "; draining";
      if (&n == (excluded_slot >= 0 ? &nodes[excluded_slot] : nullptr)) out += "; excluded";
      out += ")";
    }
    if (live.size() > kNamedInMessage)
      out += " and " + std::to_string(live.size() - kNamedInMessage) + " more";
    return out;
  }

  StatusOr<NodeId> Pick(const std::string& model_name, int32_t excluded_slot) {
    auto mit = model_of.find(model_name);
    if (mit == model_of.end())
      return NotFound("unknown model '" + model_name + "': no node has registered it; live nodes: " +
                      DescribeNodes(excluded_slot));
    Model& model = models[mit->second];
    const std::vector<int32_t>& takers = model.takers;
    const size_t n = takers.size();
    // Position of the excluded node among the takers, or n.
    size_t ex = n;
    if (excluded_slot >= 0)
      ex = static_cast<size_t>(std::find(takers.begin(), takers.end(), excluded_slot) - takers.begin());
    const size_t eligible = n - (ex < n ? 1 : 0);
    if (eligible == 0)
      return Unavailable("no live node can take model '" + model_name + "' now; live nodes: " +
                         DescribeNodes(excluded_slot));
    // k-th eligible taker's slot.
    auto at = [&](size_t k) { return takers[ex < n && k >= ex ? k + 1 : k]; };

    RoutePolicy policy = options.policy;
    if (policy == RoutePolicy::kAuto)
      policy = eligible <= static_cast<size_t>(options.p2c_threshold) ? RoutePolicy::kLeastLoaded
                                                                     : RoutePolicy::kP2C;
    int32_t chosen = -1;
    switch (policy) {
      case RoutePolicy::kLeastLoaded: {
        // Scan all takers starting one further along each time; strictly less wins.
        const size_t start = static_cast<size_t>(model.turn++ % n);
        double best = 0;
        auto consider = [&](size_t i) {
          if (i == ex) return;
          const int32_t slot = takers[i];
          if (chosen < 0 || load[slot] < best) {
            best = load[slot];
            chosen = slot;
          }
        };
        for (size_t i = start; i < n; ++i) consider(i);
        for (size_t i = 0; i < start; ++i) consider(i);
        break;
      }
      case RoutePolicy::kP2C: {
        if (eligible == 1) {
          chosen = at(0);
          break;
        }
        const size_t i = static_cast<size_t>(UniformBelow(gen, eligible));
        size_t j = static_cast<size_t>(UniformBelow(gen, eligible - 1));
        if (j >= i) ++j;
        const int32_t a = at(i), b = at(j);
        chosen = load[b] < load[a] ? b : a;
        break;
      }
      case RoutePolicy::kRoundRobin: {
        size_t i = static_cast<size_t>(model.turn++ % n);
        if (i == ex) i = static_cast<size_t>(model.turn++ % n);
        chosen = takers[i];
        break;
      }
      case RoutePolicy::kRandom:
        chosen = at(static_cast<size_t>(UniformBelow(gen, eligible)));
        break;
      case RoutePolicy::kAuto:
        break;  // resolved above
    }
    return nodes[chosen].id;
  }

  // Removes the request's record and its share of the node's estimate. `it` must be valid.
  void Forget(std::unordered_map<RequestId, Record>::iterator it) {
    const Record& r = it->second;
    Node& node = nodes[r.slot];
    if (r.epoch == node.epoch) node.placed_since_cells -= r.cells;
    node.in_flight_cells -= r.cells;
    Refresh(r.slot);
    const RequestId last = node.requests.back();
    node.requests[r.pos] = last;
    if (last != it->first) requests[last].pos = r.pos;
    node.requests.pop_back();
    requests.erase(it);
  }

  InFlightRequest View(RequestId id, const Record& r) const {
    InFlightRequest v;
    v.request = id;
    v.model = models[r.model].name;
    v.cells = r.cells;
    v.attempt = r.attempt;
    v.node = nodes[r.slot].id;
    return v;
  }
};

RouterPolicy::RouterPolicy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RouterPolicy::~RouterPolicy() = default;

StatusOr<std::unique_ptr<RouterPolicy>> RouterPolicy::Create(RouterPolicyOptions options,
                                                             const Clock* clock) {
  if (clock == nullptr) return InvalidArgument("router policy: clock is null");
  if (options.p2c_threshold < 1) return InvalidArgument("router policy: p2c_threshold must be >= 1");
  if (options.max_nodes < 1) return InvalidArgument("router policy: max_nodes must be >= 1");
  if (options.max_models < 1) return InvalidArgument("router policy: max_models must be >= 1");
  if (options.max_in_flight < 1 || options.max_in_flight > (int64_t{1} << 22))
    return InvalidArgument("router policy: max_in_flight must be in 1..2^22");
  if (options.report_timeout_us < 0)
    return InvalidArgument("router policy: report_timeout_us must be >= 0");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->clock = clock;
  impl->gen.seed(options.seed);
  return std::unique_ptr<RouterPolicy>(new RouterPolicy(std::move(impl)));
}

Status RouterPolicy::Register(const NodeRegistration& reg) {
  Impl& s = *impl_;
  if (reg.devices < 1 || reg.devices > kMaxDevices)
    return InvalidArgument("node " + std::to_string(reg.id) + ": devices must be in 1.." +
                           std::to_string(kMaxDevices) + ", got " + std::to_string(reg.devices));
  std::vector<std::string> names = reg.models;
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  int new_models = 0;
  for (const std::string& m : names) {
    if (m.empty()) return InvalidArgument("node " + std::to_string(reg.id) + ": empty model name");
    new_models += s.model_of.count(m) ? 0 : 1;
  }
  auto existing = s.slot_of.find(reg.id);
  if (existing == s.slot_of.end() && s.node_count >= s.options.max_nodes)
    return ResourceExhausted("the router's node table is full (" +
                             std::to_string(s.options.max_nodes) + " nodes)");
  if (static_cast<int64_t>(s.models.size()) + new_models > s.options.max_models)
    return ResourceExhausted("the router knows " + std::to_string(s.models.size()) +
                             " models; " + std::to_string(new_models) + " more exceed max_models " +
                             std::to_string(s.options.max_models));
  int32_t slot;
  if (existing != s.slot_of.end()) {
    slot = existing->second;
    Impl::Node& node = s.nodes[slot];
    if (!node.draining)
      for (int32_t m : node.models) s.RemoveTaker(m, slot);
  } else {
    if (!s.free_slots.empty()) {
      slot = s.free_slots.back();
      s.free_slots.pop_back();
    } else {
      slot = static_cast<int32_t>(s.nodes.size());
      s.nodes.emplace_back();
      s.load.push_back(0);
    }
    Impl::Node& node = s.nodes[slot];
    node = Impl::Node();
    node.used = true;
    node.id = reg.id;
    node.last_report_us = s.clock->NowMicros();
    s.slot_of.emplace(reg.id, slot);
    ++s.node_count;
  }
  Impl::Node& node = s.nodes[slot];
  // A registration is a sign of life too: a node whose registration reply was slow takes itself
  // for unregistered and sends no load report until it registers again.
  node.last_report_us = s.clock->NowMicros();
  node.name = reg.name.empty() ? "node-" + std::to_string(reg.id) : reg.name;
  node.devices = reg.devices;
  s.Refresh(slot);
  node.models.clear();
  for (const std::string& m : names) {
    auto it = s.model_of.find(m);
    int32_t index;
    if (it == s.model_of.end()) {
      index = static_cast<int32_t>(s.models.size());
      s.models.push_back(Impl::Model{m, {}, 0});
      s.model_of.emplace(m, index);
    } else {
      index = it->second;
    }
    node.models.push_back(index);
  }
  std::sort(node.models.begin(), node.models.end());
  if (!node.draining)
    for (int32_t m : node.models) s.AddTaker(m, slot);
  return OkStatus();
}

Status RouterPolicy::ReportLoad(NodeId id, const NodeLoad& load) {
  Impl& s = *impl_;
  auto it = s.slot_of.find(id);
  if (it == s.slot_of.end()) return NotFound("load report from unknown node " + std::to_string(id));
  if (load.outstanding_cells < 0 || load.outstanding_cells > kMaxCells)
    return InvalidArgument("node " + std::to_string(id) + ": outstanding_cells out of range: " +
                           std::to_string(load.outstanding_cells));
  if (load.devices < 0 || load.devices > kMaxDevices)
    return InvalidArgument("node " + std::to_string(id) + ": devices out of range: " +
                           std::to_string(load.devices));
  Impl::Node& node = s.nodes[it->second];
  node.reported_cells = load.outstanding_cells;
  node.placed_since_cells = 0;
  node.others_cells = std::max<int64_t>(0, load.outstanding_cells - node.in_flight_cells);
  ++node.epoch;
  ++node.reports;
  node.last_report_us = s.clock->NowMicros();
  if (load.devices > 0) node.devices = load.devices;
  s.Refresh(it->second);
  return OkStatus();
}

Status RouterPolicy::Drain(NodeId id) {
  Impl& s = *impl_;
  auto it = s.slot_of.find(id);
  if (it == s.slot_of.end()) return NotFound("drain of unknown node " + std::to_string(id));
  Impl::Node& node = s.nodes[it->second];
  if (node.draining) return OkStatus();
  node.draining = true;
  for (int32_t m : node.models) s.RemoveTaker(m, it->second);
  return OkStatus();
}

StatusOr<std::vector<InFlightRequest>> RouterPolicy::NodeDown(NodeId id) {
  Impl& s = *impl_;
  auto it = s.slot_of.find(id);
  if (it == s.slot_of.end()) return NotFound("unknown node " + std::to_string(id) + " is down");
  const int32_t slot = it->second;
  Impl::Node& node = s.nodes[slot];
  if (!node.draining)
    for (int32_t m : node.models) s.RemoveTaker(m, slot);
  std::vector<InFlightRequest> lost;
  lost.reserve(node.requests.size());
  for (RequestId r : node.requests) {
    auto rit = s.requests.find(r);
    lost.push_back(s.View(r, rit->second));
    s.requests.erase(rit);
  }
  std::sort(lost.begin(), lost.end(),
            [](const InFlightRequest& a, const InFlightRequest& b) { return a.request < b.request; });
  node = Impl::Node();  // releases its memory's contents
  s.free_slots.push_back(slot);
  s.slot_of.erase(it);
  --s.node_count;
  return lost;
}

int RouterPolicy::Forget(const std::function<bool(const std::string& model)>& forgettable) {
  Impl& s = *impl_;
  std::vector<bool> keep(s.models.size(), false);
  for (const Impl::Node& n : s.nodes)
    if (n.used)
      for (int32_t m : n.models) keep[m] = true;
  for (const auto& [id, r] : s.requests) keep[r.model] = true;
  int forgotten = 0;
  for (size_t m = 0; m < s.models.size(); ++m) {
    if (!keep[m] && forgettable(s.models[m].name)) {
      ++forgotten;
    } else {
      keep[m] = true;
    }
  }
  if (forgotten == 0) return 0;
  // Indices stay in order, so each node's list stays ascending.
  std::vector<int32_t> index(s.models.size(), -1);
  std::vector<Impl::Model> kept;
  for (size_t m = 0; m < s.models.size(); ++m) {
    if (!keep[m]) continue;
    index[m] = static_cast<int32_t>(kept.size());
    kept.push_back(std::move(s.models[m]));
  }
  s.models = std::move(kept);
  s.model_of.clear();
  for (size_t m = 0; m < s.models.size(); ++m) s.model_of[s.models[m].name] = static_cast<int32_t>(m);
  for (Impl::Node& n : s.nodes)
    for (int32_t& m : n.models) m = index[m];
  for (auto& [id, r] : s.requests) r.model = index[r.model];
  return forgotten;
}

StatusOr<NodeId> RouterPolicy::Pick(const std::string& model) { return impl_->Pick(model, -1); }

StatusOr<NodeId> RouterPolicy::PickExcluding(const std::string& model, NodeId excluded) {
  auto it = impl_->slot_of.find(excluded);
  return impl_->Pick(model, it == impl_->slot_of.end() ? -1 : it->second);
}

Status RouterPolicy::OnPlaced(RequestId request, const std::string& model, int64_t cells,
                              NodeId node_id, int attempt) {
  Impl& s = *impl_;
  if (cells < 0 || cells > kMaxCells)
    return InvalidArgument("request " + std::to_string(request) + ": cells out of range: " +
                           std::to_string(cells));
  if (attempt < 1) return InvalidArgument("request " + std::to_string(request) + ": attempt < 1");
  if (s.requests.count(request))
    return InvalidArgument("request " + std::to_string(request) + " is already in flight");
  auto nit = s.slot_of.find(node_id);
  if (nit == s.slot_of.end())
    return NotFound("request " + std::to_string(request) + " placed on unknown node " +
                    std::to_string(node_id));
  auto mit = s.model_of.find(model);
  Impl::Node& node = s.nodes[nit->second];
  if (mit == s.model_of.end() ||
      !std::binary_search(node.models.begin(), node.models.end(), mit->second))
    return NotFound("node " + node.name + " does not serve model '" + model + "'");
  if (static_cast<int64_t>(s.requests.size()) >= s.options.max_in_flight)
    return ResourceExhausted("the router has " + std::to_string(s.requests.size()) +
                             " requests in flight (max_in_flight)");
  Impl::Record r;
  r.slot = nit->second;
  r.model = mit->second;
  r.cells = cells;
  r.attempt = attempt;
  r.epoch = node.epoch;
  r.pos = node.requests.size();
  node.requests.push_back(request);
  node.placed_since_cells += cells;
  node.in_flight_cells += cells;
  s.Refresh(nit->second);
  s.requests.emplace(request, r);
  return OkStatus();
}

Status RouterPolicy::OnAnswered(RequestId request, NodeId node) {
  Impl& s = *impl_;
  auto it = s.requests.find(request);
  if (it == s.requests.end() || s.nodes[it->second.slot].id != node)
    return NotFound("request " + std::to_string(request) + " is not in flight on node " +
                    std::to_string(node));
  s.Forget(it);
  return OkStatus();
}

std::vector<NodeId> RouterPolicy::SilentNodes() const {
  const Impl& s = *impl_;
  std::vector<NodeId> out;
  if (s.options.report_timeout_us == 0) return out;
  const int64_t now = s.clock->NowMicros();
  for (const Impl::Node& n : s.nodes)
    if (n.used && now - n.last_report_us > s.options.report_timeout_us) out.push_back(n.id);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<NodeView> RouterPolicy::node(NodeId id) const {
  const Impl::Node* n = impl_->Find(id);
  if (!n) return std::nullopt;
  NodeView v;
  v.id = n->id;
  v.name = n->name;
  for (int32_t m : n->models) v.models.push_back(impl_->models[m].name);
  std::sort(v.models.begin(), v.models.end());
  v.devices = n->devices;
  v.draining = n->draining;
  v.reported_cells = n->reported_cells;
  v.placed_since_cells = n->placed_since_cells;
  v.in_flight_cells = n->in_flight_cells;
  v.others_cells = n->others_cells;
  v.estimate = impl_->load[impl_->slot_of.at(id)] * n->devices;
  v.last_report_us = n->last_report_us;
  v.in_flight = static_cast<int64_t>(n->requests.size());
  v.reports = n->reports;
  return v;
}

std::vector<NodeId> RouterPolicy::nodes() const {
  std::vector<NodeId> out;
  for (const Impl::Node& n : impl_->nodes)
    if (n.used) out.push_back(n.id);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<InFlightRequest> RouterPolicy::in_flight(RequestId request) const {
  auto it = impl_->requests.find(request);
  if (it == impl_->requests.end()) return std::nullopt;
  return impl_->View(it->first, it->second);
}

int64_t RouterPolicy::requests_in_flight() const {
  return static_cast<int64_t>(impl_->requests.size());
}
int RouterPolicy::node_count() const { return impl_->node_count; }
const RouterPolicyOptions& RouterPolicy::options() const { return impl_->options; }

}  // namespace cellserve
