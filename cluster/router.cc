// Router: the actor (placement, failures, retries) and the thread-safe class around it.
#include "cluster/router.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/caf_config.h"
#include "actors/idle_poller.h"
#include "actors/messages.h"
#include "cluster/peer_guard.h"
#include "cluster/wire.h"
#include "monitoring/log.h"
#include "monitoring/metrics.h"
#include "runtime/clock.h"
#include "runtime/model_versions.h"

namespace cellserve::cluster {

// One request on its way through the router (made by Router::Infer, owned by the actor).
struct RouterCall {
  uint64_t id = 0;
  std::string model;
  std::string bytes;          // EncodeRunRequest: what every attempt sends
  int64_t cells = 0;          // EstimateCells, for the policy
  int64_t deadline_us = 0;    // absolute, the router's clock; 0 = none
  int64_t version = 0;        // the model version asked for; 0 = any
  std::shared_ptr<actors::ReplySlot> reply;
  TokenCallback on_token;
};

}  // namespace cellserve::cluster

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<cellserve::cluster::RouterCall>)

namespace cellserve::cluster {
namespace {

// Local messages (Router -> its actor); never cross the network.
using call_atom = caf::atom_constant<caf::atom("rcall")>;
using cancel_atom = caf::atom_constant<caf::atom("rcancel")>;
using stop_atom = caf::atom_constant<caf::atom("rstop")>;
using fail_all_atom = caf::atom_constant<caf::atom("rfailall")>;
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;

// What the actor publishes for the thread-safe side (health, Models, stats).
// How long past its deadline a request may stay unanswered before the router answers it itself.
constexpr int64_t kOverdueSlackUs = 2'000'000;

// FNV-1a over streamed tokens, for checking that a retry replays the ones already sent.
constexpr uint64_t kTokenHashSeed = 14695981039346656037ull;
uint64_t HashToken(uint64_t h, int32_t token) {
  const uint32_t bits = static_cast<uint32_t>(token);
  for (int shift = 0; shift < 32; shift += 8) {
    h ^= (bits >> shift) & 0xff;
    h *= 1099511628211ull;
  }
  return h;
}

struct Shared {
  std::shared_ptr<actors::ClusterCounters> counters = std::make_shared<actors::ClusterCounters>();
  std::atomic<ClusterState> state{ClusterState::kStarting};
  std::atomic<bool> stopping{false};  // Stop began, or the actor ended: whichever first says what happened
  std::atomic<int64_t> placed{0}, retried{0}, nodes_lost{0}, nodes_joined{0}, late_answers{0}, forged_answers{0};
  std::atomic<int64_t> sweeps{0}, late_sweeps{0};
  // The actor's heartbeat: when it last swept (SteadyClock micros). state() says the router is
  // not serving when it is older than stall_after_ms, and says so once a stall.
  std::atomic<int64_t> last_sweep_us{0};
  std::atomic<bool> said_stalled{false};
  mutable std::mutex mu;
  // Every model a node has registered, by name: the spec of the first live node that serves it
  // (of the last one, once none does), with its metrics handle (null without metrics).
  struct Model {
    ModelSpec spec;
    monitoring::ModelMetrics* metrics = nullptr;
  };
  std::unordered_map<std::string, Model> models;  // GUARDED_BY(mu)
  // What Models() lists: every version of each model the live nodes serve; for a model no live
  // node serves, the one version `models` keeps (its requests are UNAVAILABLE, not NOT_FOUND).
  std::vector<ModelSpec> specs;       // GUARDED_BY(mu); by name, then version
  std::vector<RouterNodeInfo> nodes;  // GUARDED_BY(mu)
};

struct RouterState {
  static inline const char* name = "cellserve.router";

  struct Node {
    caf::actor handle;
    Registration registration;
    int64_t placed = 0;
  };
  struct Pending {
    std::shared_ptr<RouterCall> call;
    int attempt = 0;
    NodeId node = 0;
    int64_t tokens_seen = 0;       // from the current attempt
    int64_t tokens_forwarded = 0;  // to the client, over all attempts
    // A hash of the tokens forwarded, and of the ones the current attempt replayed so far (its
    // first tokens_forwarded are not sent again): a retry must replay exactly what the client saw.
    uint64_t forwarded_hash = kTokenHashSeed;
    uint64_t replayed_hash = kTokenHashSeed;
    // The model version asked for (0 = any), then the one of the node it was first placed on: a
    // retry runs the same version, so that the tokens already sent stay the answer's.
    int64_t version = 0;
  };

  caf::stateful_actor<RouterState>* self = nullptr;
  std::shared_ptr<Shared> shared;
  RouterOptions options;
  SteadyClock steady;
  const Clock* clock = &steady;  // options.clock, if given
  std::unique_ptr<RouterPolicy> policy;
  std::unordered_map<NodeId, Node> nodes;
  std::map<caf::actor_addr, NodeId> by_addr;
  std::unordered_map<uint64_t, Pending> pending;
  NodeId next_node = 1;
  bool stopping = false;

  // The version of `model` that node `id` serves (0 if none).
  int64_t VersionOn(NodeId id, const std::string& model) const {
    auto it = nodes.find(id);
    return it == nodes.end() ? 0 : VersionServed(it->second.registration.models, model);
  }

  // Tells the other threads what the table holds now: the nodes (with their requests in flight,
  // also refreshed at every sweep) and the models they serve. When the node table changed,
  // versions no node serves any more leave the policy's table (they would fill max_models over
  // many upgrades; not at every sweep: it walks every request in flight).
  void Publish(bool table_changed = true) {
    if (table_changed) policy->Forget(IsVersionKey);
    std::vector<std::vector<ModelSpec>> served;  // by the live nodes, one list each
    std::vector<RouterNodeInfo> infos;
    for (NodeId id : policy->nodes()) {
      auto view = policy->node(id);
      auto it = nodes.find(id);
      if (!view || it == nodes.end()) continue;
      served.push_back(it->second.registration.models);
      RouterNodeInfo info;
      info.id = id;
      info.name = view->name;
      for (const ModelSpec& spec : it->second.registration.models) info.models.push_back(spec.name);  // not the keys
      info.devices = view->devices;
      info.draining = view->draining;
      info.in_flight = view->in_flight;
      info.placed = it->second.placed;
      infos.push_back(std::move(info));
    }
    const LiveVersions live = CollectLiveVersions(served);
    {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->nodes = std::move(infos);
      for (const auto& [name, versions] : live) {
        Shared::Model& model = shared->models[name];
        model.spec = versions.front();
        if (!model.metrics && options.metrics) model.metrics = options.metrics->Model(name);
      }
      std::vector<ModelSpec> remembered;
      for (const auto& [name, model] : shared->models) remembered.push_back(model.spec);
      shared->specs = ListedVersions(live, remembered);
    }
    // Only between starting and serving: Stop owns draining and stopped.
    ClusterState current = shared->state.load();
    if (current == ClusterState::kStarting || current == ClusterState::kServing)
      shared->state.compare_exchange_strong(current, nodes.empty() ? ClusterState::kStarting : ClusterState::kServing);
  }

  void Answer(uint64_t id, StatusOr<RequestResult> result, actors::AnswerKind kind) {
    auto it = pending.find(id);
    if (it == pending.end()) return;
    std::shared_ptr<RouterCall> call = std::move(it->second.call);
    pending.erase(it);
    call->reply->Answer(std::move(result), kind);
  }

  // Places (or re-places) a pending request; answers it if it cannot be placed. A retry excludes
  // node `exclude`, and `why` says what happened to the request there (for the answer, if no
  // other node can take it).
  void Place(uint64_t id, NodeId exclude = 0, const std::string& why = "") {
    Pending& p = pending.at(id);
    const RouterCall& call = *p.call;
    const bool retry = p.attempt > 0;
    const actors::AnswerKind kind = retry ? actors::AnswerKind::kRan : actors::AnswerKind::kRejected;
    int64_t timeout_us = 0;
    if (call.deadline_us > 0) {
      timeout_us = call.deadline_us - clock->NowMicros();
      if (timeout_us <= 0) return Answer(id, DeadlineExceeded("the deadline passed in the router"), kind);
    }
    const int64_t pinned = PinnedVersion(call.version, p.version, p.tokens_forwarded);
    const std::string key = VersionKey(call.model, pinned);
    StatusOr<NodeId> node = retry ? policy->PickExcluding(key, exclude) : policy->Pick(key);
    if (!node.ok()) {
      Status s = InCallersWords(node.status(), call.model, pinned);
      if (retry)
        s = Unavailable(why + ", and no other node can take the request (" + s.message() +
                        "); retry later, or start another node that serves " + DescribeModel(call.model, pinned));
      return Answer(id, s, kind);
    }
    if (Status s = policy->OnPlaced(id, key, call.cells, *node, p.attempt + 1); !s.ok())
      return Answer(id, s, kind);
    ++p.attempt;
    p.node = *node;
    p.version = VersionOn(*node, call.model);
    p.tokens_seen = 0;
    p.replayed_hash = kTokenHashSeed;
    Node& n = nodes.at(*node);
    ++n.placed;
    ++shared->placed;
    if (retry) ++shared->retried;
    if (n.registration.run_streams)  // tokens only if the caller streams them
      self->send(n.handle, run_atom::value, *node, id, call.bytes, timeout_us, call.on_token != nullptr);
    else
      self->send(n.handle, run_atom::value, *node, id, call.bytes, timeout_us);
  }

  // Requests past their deadline by more than kOverdueSlackUs: their node answers DEADLINE_EXCEEDED
  // itself within about a second, so it dropped them (a node of another version that could not
  // read the run, which it ignores: cluster/peer_guard.h). Answered here, and the node told to
  // drop them, or the caller would wait for good: the router keeps no timer per request.
  void ExpireOverdue() {
    const int64_t now = clock->NowMicros();
    std::vector<uint64_t> overdue;
    for (const auto& [id, p] : pending)
      if (p.call->deadline_us > 0 && now > p.call->deadline_us + kOverdueSlackUs) overdue.push_back(id);
    for (uint64_t id : overdue) {
      const NodeId node = pending.at(id).node;
      std::string where = "no node answered";
      if (node) {
        (void)policy->OnAnswered(id, node);
        auto n = nodes.find(node);
        if (n != nodes.end()) {
          self->send(n->second.handle, abort_atom::value, id);
          where = "node " + n->second.registration.name + " did not answer";
        }
      }
      Answer(id, DeadlineExceeded("the deadline passed and " + where + " (the router gave up on it)"),
             actors::AnswerKind::kRan);
    }
  }

  void OnCall(std::shared_ptr<RouterCall> call) {
    const uint64_t id = call->id;
    if (stopping) {
      call->reply->Answer(Unavailable("the router is stopping; no new requests"), actors::AnswerKind::kRejected);
      return;
    }
    if (pending.count(id)) {
      call->reply->Answer(InvalidArgument("request id in flight already"), actors::AnswerKind::kRejected);
      return;
    }
    const int64_t version = call->version;
    pending.emplace(id, Pending{std::move(call)}).first->second.version = version;
    Place(id);
  }

  void OnAnswer(NodeId node, uint64_t id, const std::string& bytes) {
    auto it = pending.find(id);
    if (it == pending.end() || it->second.node != node || !policy->OnAnswered(id, node).ok()) {
      ++shared->late_answers;
      return;
    }
    StatusOr<RequestResult> result = DecodeRunAnswer(bytes);
    if (!result.ok() && result.status().code() == StatusCode::kUnavailable && it->second.attempt == 1) {
      // The node began draining as the request arrived: once more elsewhere.
      auto n = nodes.find(node);
      Place(id, node,
            "node " + (n != nodes.end() ? n->second.registration.name : std::to_string(node)) +
                " could not run the request (" + result.status().message() + ")");
      return;
    }
    if (result.ok()) result->model_version = it->second.version;
    if (result.ok() && it->second.tokens_seen < it->second.tokens_forwarded)  // a retry that ended sooner
      return Diverged(id, node, /*answered=*/true);
    // Refusal codes (admission, validation) count as rejected, not failed. The answer does not
    // say how the node counted it: a request it shed for slots mid-run (RESOURCE_EXHAUSTED) was
    // failed there, one whose deadline had passed on arrival rejected; the router counts the one
    // rejected, the other failed.
    const StatusCode code = result.ok() ? StatusCode::kOk : result.status().code();
    const bool refused = code == StatusCode::kResourceExhausted || code == StatusCode::kInvalidArgument ||
                         code == StatusCode::kNotFound;
    Answer(id, std::move(result), refused ? actors::AnswerKind::kRejected : actors::AnswerKind::kRan);
  }

  void OnToken(NodeId node, uint64_t id, int32_t token) {
    auto it = pending.find(id);
    if (it == pending.end() || it->second.node != node) return;
    Pending& p = it->second;
    // A caller that does not stream has seen no token: nothing to skip on a retry, and nothing
    // that holds the retry to this version (nodes older than `run_streams` send tokens anyway).
    if (!p.call->on_token) return;
    // A retry replays the tokens the client has already seen: not sent again, but checked. The
    // same model on the same backend gives the same tokens; another backend or precision (a CUDA
    // node beside CPU ones, --cpu-precision bf16) may not, and then the streamed tokens and the
    // answer would disagree.
    if (++p.tokens_seen <= p.tokens_forwarded) {
      p.replayed_hash = HashToken(p.replayed_hash, token);
      if (p.tokens_seen == p.tokens_forwarded && p.replayed_hash != p.forwarded_hash) Diverged(id, node, /*answered=*/false);
      return;
    }
    ++p.tokens_forwarded;
    p.forwarded_hash = HashToken(p.forwarded_hash, token);
    p.call->on_token(token);
  }

  // A retry's tokens differ from those already streamed to the caller: the run is dropped (unless
  // its node `answered` already, and let go of it) and the call answered UNAVAILABLE, which the
  // caller may retry as a whole.
  void Diverged(uint64_t id, NodeId node, bool answered) {
    auto n = nodes.find(node);
    const std::string name = n != nodes.end() ? n->second.registration.name : std::to_string(node);
    if (!answered) {
      (void)policy->OnAnswered(id, node);
      if (n != nodes.end()) self->send(n->second.handle, abort_atom::value, id);
    }
    const int64_t sent = pending.at(id).tokens_forwarded;
    Answer(id,
           Unavailable("the request was retried on node " + name + " (its first node was lost or could not run it), and the " +
                       "retry's tokens differ from the " + std::to_string(sent) +
                       " already streamed (nodes with different backends or precisions can decode differently); " +
                       "retry the call"),
           actors::AnswerKind::kRan);
  }

  void OnCancel(uint64_t id) {
    auto it = pending.find(id);
    if (it == pending.end()) return;
    const NodeId node = it->second.node;
    if (node != 0) {
      (void)policy->OnAnswered(id, node);  // NOT_FOUND (answered or moved already): nothing to release
      auto n = nodes.find(node);
      if (n != nodes.end()) self->send(n->second.handle, abort_atom::value, id);
    }
    Answer(id, Cancelled("cancelled by the client"), actors::AnswerKind::kRan);
  }

  std::pair<uint64_t, std::string> OnRegister(const std::string& bytes) {
    auto handle = caf::actor_cast<caf::actor>(self->current_sender());
    if (!handle) return {0, "register: no sender"};
    StatusOr<Registration> reg = DecodeRegistration(bytes);
    if (!reg.ok()) return {0, reg.status().message()};
    const caf::actor_addr addr = handle.address();
    NodeId id;
    auto known = by_addr.find(addr);
    if (known != by_addr.end()) {
      id = known->second;
    } else {
      id = next_node++;
    }
    NodeRegistration nr;
    nr.id = id;
    nr.name = reg->name;
    nr.devices = reg->devices;
    nr.models = PlacementKeys(reg->models);  // placed by name (any version) or name@version
    if (Status s = policy->Register(nr); !s.ok()) return {0, s.message()};
    if (known == by_addr.end()) {
      by_addr.emplace(addr, id);
      self->monitor(handle);
      ++shared->nodes_joined;
      monitoring::LogLine("cellserve router: node %s joined (%d device(s), %zu model(s))\n", reg->name.c_str(),
                          reg->devices, reg->models.size());
    }
    const auto previous = nodes.find(id);
    if (options.metrics && previous != nodes.end() && previous->second.registration.name != reg->name) {
      const std::string& old_name = previous->second.registration.name;  // registered again, renamed
      if (!NameHeldByAnother(old_name, id)) options.metrics->RemoveNode(old_name);
    }
    nodes[id] = Node{handle, std::move(reg).value(), previous != nodes.end() ? previous->second.placed : 0};
    if (options.metrics) options.metrics->SetNodeUp(nodes[id].registration.name, true);
    Publish();
    return {id, ""};
  }

  // Whether a node other than `id` in the table goes by `name`. node_up's series is the name's: a
  // node restarted under the same name (a new id) before its old entry went keeps it up.
  bool NameHeldByAnother(const std::string& name, NodeId id) const {
    return std::any_of(nodes.begin(), nodes.end(),
                       [&](const auto& n) { return n.first != id && n.second.registration.name == name; });
  }

  // The node is gone: its requests in flight go elsewhere once, or are answered UNAVAILABLE.
  void RemoveNode(NodeId id, const std::string& why, bool lost) {
    auto it = nodes.find(id);
    if (it == nodes.end()) return;
    const std::string name = it->second.registration.name;
    self->demonitor(it->second.handle);
    by_addr.erase(it->second.handle.address());
    nodes.erase(it);
    StatusOr<std::vector<InFlightRequest>> orphans = policy->NodeDown(id);
    if (lost) ++shared->nodes_lost;
    if (options.metrics && !NameHeldByAnother(name, id)) {
      if (lost) options.metrics->SetNodeUp(name, false);
      else options.metrics->RemoveNode(name);
    }
    const size_t n = orphans.ok() ? orphans->size() : 0;
    monitoring::LogLine("cellserve router: node %s %s; %zu request(s) in flight there go elsewhere\n", name.c_str(),
                        why.c_str(), n);
    if (orphans.ok()) {
      for (const InFlightRequest& r : *orphans) {
        auto p = pending.find(r.request);
        if (p == pending.end()) continue;
        if (p->second.attempt >= 2) {
          Answer(r.request,
                 Unavailable("node " + name + " " + why + " while running the request, which had been retried once "
                             "already"),
                 actors::AnswerKind::kRan);
        } else {
          Place(r.request, id, "node " + name + " " + why + " while running the request");
        }
      }
    }
    Publish();
  }

  std::optional<NodeId> SenderNode(NodeId claimed) {
    auto it = by_addr.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
    if (it == by_addr.end() || it->second != claimed) return std::nullopt;
    return it->second;
  }
};

caf::behavior RouterActor(caf::stateful_actor<RouterState>* self, std::shared_ptr<Shared> shared,
                          RouterOptions options, RouterPolicy* policy_raw) {
  RouterState& s = self->state;
  s.self = self;
  s.shared = std::move(shared);
  s.options = std::move(options);
  if (s.options.clock) s.clock = s.options.clock;
  s.policy.reset(policy_raw);
  GuardFromPeers(self, "router");
  self->set_down_handler([self](caf::down_msg& msg) {
    auto it = self->state.by_addr.find(msg.source);
    if (it == self->state.by_addr.end()) return;
    self->state.RemoveNode(it->second, "was lost (" + caf::to_string(msg.reason) + ")", true);
  });
  // At least every second: the sweep also answers requests their nodes left past the deadline,
  // and it is the actor's heartbeat.
  const auto sweep_every = std::chrono::milliseconds(std::clamp<int64_t>(s.options.report_timeout_ms / 4, 25, 1000));
  s.shared->last_sweep_us = s.clock->NowMicros();
  self->delayed_send(self, sweep_every, sweep_atom::value, kLocalOnly);
  return {
      [self](call_atom, std::shared_ptr<RouterCall>& call) { self->state.OnCall(std::move(call)); },
      [self](cancel_atom, uint64_t id, LocalOnly) { self->state.OnCancel(id); },
      // Answers and tokens count only from the node they claim to come from (another peer on the
      // cluster port could otherwise answer requests placed elsewhere).
      [self](answer_atom, uint64_t node, uint64_t id, const std::string& bytes) {
        RouterState& st = self->state;
        if (st.SenderNode(node)) st.OnAnswer(node, id, bytes);
        else ++st.shared->forged_answers;
      },
      [self](token_atom, uint64_t node, uint64_t id, int32_t token) {
        if (self->state.SenderNode(node)) self->state.OnToken(node, id, token);
      },
      [self](register_atom, const std::string& bytes) {
        auto [id, error] = self->state.OnRegister(bytes);
        return caf::make_message(registered_atom::value, id, error);
      },
      [self](node_load_atom, uint64_t node, int64_t cells, int32_t devices) {
        RouterState& st = self->state;
        if (!st.SenderNode(node) || !st.policy->ReportLoad(node, NodeLoad{std::max<int64_t>(cells, 0), devices}).ok()) {
          // A node this router does not know (it restarted, or removed the node as silent).
          if (auto who = caf::actor_cast<caf::actor>(self->current_sender())) self->send(who, reregister_atom::value);
        }
      },
      [self](drain_atom, uint64_t node) {
        RouterState& st = self->state;
        if (st.SenderNode(node) && st.policy->Drain(node).ok()) {
          monitoring::LogLine("cellserve router: node %s is draining\n", st.nodes.at(node).registration.name.c_str());
          st.Publish();
        }
        return drain_atom::value;
      },
      [self](bye_atom, uint64_t node) {
        RouterState& st = self->state;
        if (st.SenderNode(node)) st.RemoveNode(node, "left", false);
        return bye_atom::value;
      },
      [self, sweep_every](sweep_atom, LocalOnly) {
        RouterState& st = self->state;
        const int64_t now = st.clock->NowMicros();
        const int64_t since_last_us = now - st.shared->last_sweep_us.exchange(now);
        if (st.shared->said_stalled.exchange(false))
          monitoring::LogLine("cellserve router: its actor runs again; health says serving\n");
        // A sweep this late means this actor did not run for a while (stuck, or starved of CPU):
        // the nodes' load reports of that time may wait in its mailbox behind this sweep, so no
        // node is judged silent now; the next sweep, after they are read, judges.
        const int64_t late_us = since_last_us - std::chrono::duration_cast<std::chrono::microseconds>(sweep_every).count();
        if (late_us <= st.options.report_timeout_ms * 1000 / 2) {
          for (NodeId id : st.policy->SilentNodes())
            st.RemoveNode(id, "went silent (no load report for " + std::to_string(st.options.report_timeout_ms) + " ms)",
                          true);
        } else {
          ++st.shared->late_sweeps;
        }
        ++st.shared->sweeps;
        st.ExpireOverdue();
        st.Publish(/*table_changed=*/false);  // the requests in flight on each node, for nodes()
        self->delayed_send(self, sweep_every, sweep_atom::value, kLocalOnly);
      },
      [self](stop_atom, LocalOnly) { self->state.stopping = true; },
      [self](local_quit_atom, LocalOnly) { self->quit(caf::exit_reason::user_shutdown); },
      [self](fail_all_atom, LocalOnly) {
        RouterState& st = self->state;
        std::vector<uint64_t> ids;
        for (const auto& [id, p] : st.pending) ids.push_back(id);
        for (uint64_t id : ids) {
          NodeId node = st.pending.at(id).node;
          if (node) {
            (void)st.policy->OnAnswered(id, node);  // NOT_FOUND: nothing to release
            auto n = st.nodes.find(node);
            if (n != st.nodes.end()) self->send(n->second.handle, abort_atom::value, id);
          }
          st.Answer(id, Unavailable("the router stopped before the request finished"), actors::AnswerKind::kRan);
        }
      },
  };
}

}  // namespace

struct Router::Impl {
  RouterOptions options;
  SteadyClock steady;
  const Clock* clock = &steady;  // options.clock, if given
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  caf::actor actor;
  int port = 0;
  std::atomic<uint64_t> next_id{1};
  std::shared_mutex life_mu;
  bool running = false;  // GUARDED_BY(life_mu)
  std::mutex stop_mu;
  bool stopped = false;  // GUARDED_BY(stop_mu)
  std::unique_ptr<IdlePoller> idle_poller;  // options.idle_poll; reset by Stop

  // How long the actor has not swept, when that is past stall_after_ms (it is stuck); else 0.
  int64_t StalledForUs() const {
    const int64_t since_us = clock->NowMicros() - shared->last_sweep_us.load();
    return since_us > options.stall_after_ms * 1000 ? since_us : 0;
  }
};

Router::Router(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Router::~Router() { Stop(); }

StatusOr<std::unique_ptr<Router>> Router::Start(RouterOptions options) {
  if (options.report_timeout_ms < 100) return InvalidArgument("report_timeout_ms must be >= 100");
  if (options.stall_after_ms < 1) return InvalidArgument("stall_after_ms must be >= 1");
  if (options.stop_grace_ms < 0) return InvalidArgument("stop_grace_ms must be >= 0");
  if (options.idle_poll_below < 0) return InvalidArgument("idle_poll_below must be >= 0");
  std::string host;
  uint16_t port = 0;
  RETURN_IF_ERROR(ParseHostPort(options.cluster, /*allow_zero=*/true, host, port));
  auto impl = std::make_unique<Impl>();
  if (options.clock) impl->clock = options.clock;
  options.policy.report_timeout_us = options.report_timeout_ms * 1000;
  ASSIGN_OR_RETURN(std::unique_ptr<RouterPolicy> policy, RouterPolicy::Create(options.policy, impl->clock));
  impl->options = options;
  impl->config.load<caf::io::middleman>();
  actors::ConfigureActorSystem(impl->config, options.caf_threads);
  impl->system = std::make_unique<caf::actor_system>(impl->config);
  // The policy's clock is the Impl's; the actor owns the policy from here.
  impl->actor = impl->system->spawn(RouterActor, impl->shared, options, policy.release());
  // An end that Stop did not ask for: nothing would place requests any more while health said
  // "serving". Say so, and let the owner restart the process.
  impl->actor->attach_functor([shared = impl->shared, on_failure = options.on_actor_failure](const caf::error& reason) {
    if (shared->stopping.exchange(true)) return;  // Stop's own exit
    shared->state = ClusterState::kStopped;
    const std::string why = "the router's actor ended (" + caf::to_string(reason) + ")";
    monitoring::LogLine("cellserve router: %s: it places no requests any more\n", why.c_str());
    if (on_failure) on_failure(why);
  });
  const char* in = host == "*" ? nullptr : host.c_str();
  auto published = impl->system->middleman().publish(impl->actor, port, in, /*reuse_addr=*/true);
  if (!published) {
    impl->shared->stopping = true;  // an end we ask for, not a failure
    caf::anon_send(impl->actor, local_quit_atom::value, kLocalOnly);
    return Unavailable("cannot open the cluster port " + options.cluster + ": " +
                       impl->system->render(published.error()));
  }
  impl->port = *published;
  impl->running = true;
  actors::ReleaseThisThreadsCafLogger();  // the router may be stopped from another thread
  auto router = std::unique_ptr<Router>(new Router(std::move(impl)));
  if (options.idle_poll) {  // as LocalCluster does: the caller's cores, held while busy
    ASSIGN_OR_RETURN(router->impl_->idle_poller,
                     StartServingIdlePoller(router->impl_->shared->counters, options.idle_poll_below, 0));
  }
  return router;
}

int Router::port() const { return impl_->port; }

uint64_t Router::Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                       TokenCallback on_token) {
  Impl& s = *impl_;
  auto call = std::make_shared<RouterCall>();
  call->id = s.next_id.fetch_add(1);
  call->model = model;
  actors::AnswerMetrics metrics;
  if (s.options.metrics) {
    metrics.metrics = s.options.metrics;
    metrics.clock = s.clock;
    metrics.arrival_us = s.clock->NowMicros();
  }
  {
    std::lock_guard<std::mutex> lock(s.shared->mu);
    auto it = s.shared->models.find(model);
    if (it != s.shared->models.end()) {  // unknown: the placement answers NOT_FOUND
      const ModelSpec* spec = &it->second.spec;
      for (const ModelSpec& version : s.shared->specs)  // the version asked for, if listed
        if (input.model_version != 0 && version.name == model && version.version == input.model_version)
          spec = &version;
      call->cells = EstimateCells(*spec, input);
      metrics.model = it->second.metrics;
    }
  }
  call->reply = std::make_shared<actors::ReplySlot>(call->id, std::move(done), s.shared->counters, metrics);
  call->version = input.model_version;
  call->bytes = EncodeRunRequest(model, input);
  call->deadline_us = deadline_us;
  call->on_token = std::move(on_token);
  const uint64_t id = call->id;
  {
    std::shared_lock<std::shared_mutex> lock(s.life_mu);
    if (s.running && s.shared->state != ClusterState::kStopped) {  // stopped: the actor failed
      caf::anon_send(s.actor, call_atom::value, std::move(call));
      return id;
    }
  }
  call->reply->Answer(Unavailable("the router is stopped"), actors::AnswerKind::kRejected);
  return id;
}

void Router::Cancel(uint64_t id) {
  std::shared_lock<std::shared_mutex> lock(impl_->life_mu);
  if (impl_->running) caf::anon_send(impl_->actor, cancel_atom::value, id, kLocalOnly);
}

ClusterReport Router::Report() const {
  const Shared& sh = *impl_->shared;
  ClusterReport r;
  {
    std::lock_guard<std::mutex> lock(sh.mu);
    for (const RouterNodeInfo& n : sh.nodes) r.unlisted_devices += n.devices;
  }
  r.requests_held = sh.counters->Unanswered();
  r.accepted = sh.placed.load() - sh.retried.load();  // a retried request is one request, placed twice
  r.completed = sh.counters->completed.load();
  r.failed = sh.counters->failed.load();
  r.rejected = sh.counters->rejected.load();
  return r;
}

std::vector<ModelSpec> Router::Models() const {
  std::lock_guard<std::mutex> lock(impl_->shared->mu);
  return impl_->shared->specs;
}

ClusterState Router::state() const {
  Shared& shared = *impl_->shared;
  const ClusterState state = shared.state.load();
  if (state != ClusterState::kServing) return state;
  const int64_t since_us = impl_->StalledForUs();
  if (since_us == 0) return state;
  if (!shared.said_stalled.exchange(true))
    monitoring::LogLine("cellserve router: its actor has not swept for %lld ms: it is stuck (it places and answers "
                        "nothing); health says not ready until it runs again\n",
                        static_cast<long long>(since_us / 1000));
  return ClusterState::kStopped;
}

std::string Router::StateReason() const {
  const Shared& shared = *impl_->shared;
  switch (shared.state.load()) {
    case ClusterState::kStarting: return "no node has joined yet";
    case ClusterState::kDraining:
    case ClusterState::kStopped: return {};  // stopping, or its actor ended (said in the log)
    case ClusterState::kServing: break;
  }
  const int64_t since_us = impl_->StalledForUs();
  if (since_us == 0) return {};
  return "its actor has not swept for " + std::to_string(since_us / 1000) + " ms: it is stuck";
}

RouterStats Router::stats() const {
  const Shared& sh = *impl_->shared;
  RouterStats st;
  st.placed = sh.placed.load();
  st.retried = sh.retried.load();
  st.nodes_lost = sh.nodes_lost.load();
  st.nodes_joined = sh.nodes_joined.load();
  st.late_answers = sh.late_answers.load();
  st.forged_answers = sh.forged_answers.load();
  st.sweeps = sh.sweeps.load();
  st.late_sweeps = sh.late_sweeps.load();
  std::lock_guard<std::mutex> lock(sh.mu);
  st.nodes = static_cast<int64_t>(sh.nodes.size());
  return st;
}

std::vector<int> Router::idle_poll_cpus() const {
  std::lock_guard<std::mutex> lock(impl_->stop_mu);
  return impl_->idle_poller ? impl_->idle_poller->cpus() : std::vector<int>{};
}

std::vector<RouterNodeInfo> Router::nodes() const {
  std::lock_guard<std::mutex> lock(impl_->shared->mu);
  return impl_->shared->nodes;
}

void Router::Stop() {
  if (!impl_) return;
  Impl& s = *impl_;
  std::lock_guard<std::mutex> stop_lock(s.stop_mu);
  if (s.stopped) return;
  s.stopped = true;
  s.idle_poller.reset();  // first, so that no early return below leaves it spinning
  if (s.shared->stopping.exchange(true)) return;  // the actor had failed: state says stopped
  s.shared->state = ClusterState::kDraining;
  {
    std::shared_lock<std::shared_mutex> lock(s.life_mu);
    if (!s.running) return;
    caf::anon_send(s.actor, stop_atom::value, kLocalOnly);
  }
  if (!s.shared->counters->WaitAllAnswered(std::chrono::milliseconds(s.options.stop_grace_ms))) {
    caf::anon_send(s.actor, fail_all_atom::value, kLocalOnly);
    s.shared->counters->WaitAllAnswered(std::chrono::seconds(10));
  }
  {
    std::unique_lock<std::shared_mutex> lock(s.life_mu);
    s.running = false;
  }
  s.shared->state = ClusterState::kStopped;
  s.system->middleman().unpublish(s.actor, static_cast<uint16_t>(s.port));
  caf::anon_send(s.actor, local_quit_atom::value, kLocalOnly);
  s.actor = nullptr;
  s.system.reset();  // waits for the actors and closes the connections
}

}  // namespace cellserve::cluster
