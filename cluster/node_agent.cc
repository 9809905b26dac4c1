// NodeAgent: the agent actor (registration, runs, load reports) and its connector thread.
#include "cluster/node_agent.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/caf_config.h"
#include "cluster/join_slots.h"
#include "cluster/peer_guard.h"
#include "cluster/tcp_probe.h"
#include "cluster/wire.h"
#include "monitoring/log.h"
#include "runtime/clock.h"
#include "runtime/this_thread.h"

namespace cellserve::cluster {

// Counts acknowledgements for Drain and Leave (the caller waits on it; the actor counts).
struct AckWaiter {
  std::mutex mu;
  std::condition_variable cv;
  int expected = -1;  // set by the actor: how many routers it asked
  int acked = 0, failed = 0;

  void Expect(int n) {
    std::lock_guard<std::mutex> lock(mu);
    expected = n;
    cv.notify_all();
  }
  void Count(bool ok) {
    std::lock_guard<std::mutex> lock(mu);
    (ok ? acked : failed)++;
    cv.notify_all();
  }
  int Wait(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, timeout, [&] { return expected >= 0 && acked + failed >= expected; });
    return acked;
  }
};

}  // namespace cellserve::cluster

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<cellserve::cluster::AckWaiter>)

namespace cellserve::cluster {
namespace {

// Local messages (never cross the network).
using connected_atom = caf::atom_constant<caf::atom("connected")>;
using done_atom = caf::atom_constant<caf::atom("rundone")>;
using run_token_atom = caf::atom_constant<caf::atom("runtoken")>;
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using soon_atom = caf::atom_constant<caf::atom("soon")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using retry_register_atom = caf::atom_constant<caf::atom("reregtry")>;

constexpr auto kAckTimeout = std::chrono::seconds(5);
// A refused or unanswered registration is tried again after reconnect_interval_ms, doubling up to
// this: a router whose node table was full, or that was too busy to answer, gets the node once it
// can take it, while a node a router will never take logs a line every few seconds, not a flood.
constexpr int64_t kMaxRegisterRetryMs = 5000;
// A port that accepts connections but gives no CAF handshake (another service, a hung process) is
// tried again only this often: CAF keeps each unanswered handshake's waiter for as long as that
// connection lives, so every attempt would add one.
constexpr auto kSilentPortRetry = std::chrono::seconds(30);

// CAF's remote_actor with a bound on the handshake: the same request to the middleman actor that
// remote_actor makes, waited for at most timeout_ms (remote_actor waits for good on a peer that
// accepts the connection and never answers).
caf::expected<caf::actor> RemoteActorWithin(caf::actor_system& system, const std::string& host, uint16_t port,
                                            int64_t timeout_ms) {
  caf::expected<caf::actor> result = caf::sec::request_timeout;
  caf::scoped_actor self{system};
  self->request(system.middleman().actor_handle(), std::chrono::milliseconds(timeout_ms),
                caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& remote, const std::set<std::string>& interfaces) {
            if (!remote)
              result = caf::make_error(caf::sec::no_actor_published_at_port, port);
            else if (!system.assignable<caf::actor>(interfaces))
              result = caf::make_error(caf::sec::unexpected_actor_messaging_interface);
            else
              result = caf::actor_cast<caf::actor>(std::move(remote));
          },
          [&](caf::error& error) { result = std::move(error); });
  return result;
}

// What the connector thread and the actor share: which links (router slots, cluster/join_slots.h)
// are connected: true from a successful connect until its down message.
struct Links {
  bool IsConnected(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    return i < connected.size() && connected[i];
  }
  void Set(size_t i, bool value) {
    std::lock_guard<std::mutex> lock(mu);
    if (i >= connected.size()) connected.resize(i + 1, false);
    connected[i] = value;
  }
  std::mutex mu;
  std::vector<bool> connected;  // GUARDED_BY(mu)
  std::atomic<bool> stop{false};
  std::atomic<bool> leaving{false};  // Leave began: the agent's actor ending is expected
  std::atomic<bool> failed{false};   // the agent's actor ended on its own: Drain and Leave wait for nothing
  std::condition_variable stop_cv;  // with mu: wakes the connector's sleep at Stop
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    stop_cv.notify_all();
  }
  // Sleeps up to `ms` or until Stop.
  void SleepUnlessStopped(int64_t ms) {
    std::unique_lock<std::mutex> lock(mu);
    stop_cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return stop.load(); });
  }
  std::atomic<int64_t> routers_registered{0}, runs{0}, aborts{0}, tokens_sent{0}, registrations{0},
      registration_failures{0};
};

struct AgentState {
  static inline const char* name = "cellserve.node_agent";

  struct RouterSlot {
    std::string address;
    caf::actor handle;
    uint64_t node_id = 0;         // 0 = not registered
    int register_failures = 0;    // in a row, on this connection: the retry backs off
    uint64_t link = 0;            // this connection's number (0 = none); a reconnect gets a new one
    int registering = 0;          // registration requests in flight on this slot
    int leave_pending = 0;        // of those, the ones Leave's waiter counts (see leave_atom)
    bool said_lost_early = false; // logged a connection lost before registering (once, until one registers)
  };

  caf::event_based_actor* self = nullptr;
  NodeBackend* cluster = nullptr;
  NodeAgentOptions options;
  std::shared_ptr<Links> links;
  std::string registration;
  std::unordered_map<std::string, ModelSpec> specs;
  std::vector<RouterSlot> routers;
  // A request this node runs for a router: the cluster's id for it, and the node id the router
  // placed it under (what the answer and tokens carry back).
  struct Running {
    uint64_t cluster_id = 0;
    uint64_t node_id = 0;
  };
  // (link, the router's request id) -> the run. Keyed by the connection, not the slot: a router
  // restarted at the same address numbers its requests from 1 again, and a late answer for the
  // old router's request must not take the new one's entry.
  std::map<std::pair<uint64_t, uint64_t>, Running> runs;
  uint64_t next_link = 1;
  SteadyClock clock;
  int64_t last_cells = -1, last_report_us = 0;
  bool report_soon = false;  // a soon_atom is on its way
  bool draining = false, leaving = false;

  int IndexOf(const caf::actor_addr& addr) const {
    for (size_t i = 0; i < routers.size(); ++i)
      if (routers[i].handle && routers[i].handle.address() == addr) return static_cast<int>(i);
    return -1;
  }

  void CountRegistered() {
    int64_t n = 0;
    for (const RouterSlot& r : routers) n += r.node_id != 0;
    links->routers_registered = n;
  }

  void Register(int i) {
    caf::actor router = routers[i].handle;
    ++routers[i].registering;
    self->request(router, kAckTimeout, register_atom::value, registration)
        .then(
            [this, i, router](registered_atom, uint64_t id, const std::string& error) {
              --routers[i].registering;
              if (LeaveCounts(i)) {  // accepted while saying goodbye: take it back, or the router counts a loss
                if (id == 0) return leave_waiter->Count(false);
                std::shared_ptr<AckWaiter> waiter = leave_waiter;
                self->request(router, kAckTimeout, bye_atom::value, id)
                    .then([waiter](bye_atom) { waiter->Count(true); }, [waiter](caf::error&) { waiter->Count(false); });
                return;
              }
              if (routers[i].handle != router || leaving) return;  // reconnected meanwhile, or leaving
              if (id == 0) {
                // A refused re-registration (the router had dropped this node): not registered
                // there any more, so no load reports go out and the retry below is not skipped.
                routers[i].node_id = 0;
                CountRegistered();
                RegisterLater(i, "refused the registration: " + error);
                return;
              }
              const bool first = routers[i].node_id == 0;
              routers[i].node_id = id;
              routers[i].said_lost_early = false;
              routers[i].register_failures = 0;
              ++links->registrations;
              CountRegistered();
              if (first)
                monitoring::LogLine("cellserve node: registered with router %s\n", routers[i].address.c_str());
              // A request, as the router answers it (a one-way send got an answer it did not
              // expect; see cluster/peer_guard.h). Nothing waits for it: a lost router is retried.
              if (draining)
                self->request(router, kAckTimeout, drain_atom::value, id).then([](drain_atom) {}, [](caf::error&) {});
              last_cells = -1;
              ReportSoon();
            },
            [this, i, router](caf::error& e) {
              --routers[i].registering;
              if (LeaveCounts(i)) return leave_waiter->Count(false);
              // A timeout (the router was too busy) or a lost link (the down message follows).
              if (routers[i].handle != router || leaving) return;
              RegisterLater(i, "did not answer the registration: " + self->system().render(e));
            });
  }

  // A registration reply on slot `i` that Leave's waiter counts (it was in flight when Leave began,
  // for a router this node was not registered with); takes it off the slot's count.
  bool LeaveCounts(int i) {
    if (!leaving || routers[i].leave_pending == 0 || !leave_waiter) return false;
    --routers[i].leave_pending;
    return true;
  }

  // Registration with router `i` failed (`why`): try again later on the same connection, unless it
  // is lost (a reconnect registers afresh), registered meanwhile, or the node is leaving.
  void RegisterLater(int i, const std::string& why) {
    ++links->registration_failures;
    RouterSlot& r = routers[i];
    const int64_t delay_ms = std::min<int64_t>(
        std::max<int64_t>(options.reconnect_interval_ms, 1) << std::min(r.register_failures, 16), kMaxRegisterRetryMs);
    ++r.register_failures;
    monitoring::LogLine("cellserve node: router %s %s; trying again in %lld ms\n", r.address.c_str(), why.c_str(),
                        static_cast<long long>(delay_ms));
    self->delayed_send(self, std::chrono::milliseconds(delay_ms), retry_register_atom::value, i, r.handle, kLocalOnly);
  }

  // Runs a request router `i` placed on this node as `node_id`. The id comes with the request, not
  // from the slot: a router may place requests before its registration reply arrives (or after
  // that reply timed out here and before the retry), and each must still be answered.
  // `streams`: whether the caller streams the tokens (a router that predates the flag: true).
  void Run(int i, uint64_t node_id, uint64_t request, const std::string& bytes, int64_t timeout_us, bool streams) {
    const caf::actor router = routers[i].handle;
    StatusOr<RunRequest> run = DecodeRunRequest(bytes, options.max_tokens);
    if (!run.ok()) {
      self->send(router, answer_atom::value, node_id, request, EncodeRunAnswer(run.status(), ModelSpec{}));
      return;
    }
    ModelSpec spec;
    if (auto it = specs.find(run->model); it != specs.end()) spec = it->second;
    const int64_t deadline_us = timeout_us > 0 ? clock.NowMicros() + timeout_us : 0;
    caf::actor me = caf::actor_cast<caf::actor>(self);
    const uint64_t link = routers[i].link;
    ++links->runs;
    // The callbacks run on the cluster's threads: they only post to this actor, which forwards in
    // order (tokens before the answer) to the router the request came from. Tokens nobody streams
    // are not sent (a message each, for the router to drop).
    TokenCallback on_token;
    if (streams)
      on_token = [me, i, link, request](int32_t token) {
        caf::anon_send(me, run_token_atom::value, i, link, request, token, kLocalOnly);
      };
    const uint64_t cluster_id = cluster->Infer(
        run->model, std::move(run->input), deadline_us,
        [me, i, link, request, spec](StatusOr<RequestResult> result) {
          caf::anon_send(me, done_atom::value, i, link, request, EncodeRunAnswer(result, spec), kLocalOnly);
        },
        std::move(on_token));
    runs[{link, request}] = Running{cluster_id, node_id};
    ReportSoon();
  }

  // Run, for the router that sent the current message (none: its connection is gone, the router
  // gets a down message and retries elsewhere).
  void RunForSender(uint64_t node_id, uint64_t request, const std::string& bytes, int64_t timeout_us, bool streams) {
    const int i = IndexOf(caf::actor_cast<caf::actor_addr>(self->current_sender()));
    if (i >= 0) Run(i, node_id, request, bytes, timeout_us, streams);
  }

  // The load changed (a request arrived or finished): report within 10 ms, once for many changes.
  void ReportSoon() {
    if (report_soon || leaving) return;
    report_soon = true;
    self->delayed_send(self, std::chrono::milliseconds(10), soon_atom::value, kLocalOnly);
  }

  void Report() {
    // A stuck node (LocalCluster::Stuck, --stall-after-ms) goes silent: its routers drop it after
    // their --report-timeout-ms and place its requests elsewhere. Once it moves again its reports
    // resume, and each router asks it to register again (reregister_atom). A failed or stopping
    // node keeps reporting: its routers wait for the answers it still sends.
    if (cluster->Stuck()) return;
    const int64_t now = clock.NowMicros();
    const ClusterLoad load = cluster->Load();
    if (load.outstanding_cells == last_cells && now - last_report_us < options.report_interval_ms * 1000) return;
    last_cells = load.outstanding_cells;
    last_report_us = now;
    for (const RouterSlot& r : routers)
      if (r.node_id)
        self->send(r.handle, node_load_atom::value, r.node_id, load.outstanding_cells,
                   static_cast<int32_t>(options.devices));
  }

  void Lost(int i) {
    // A router that drops each connection before it registers the node (a broken router, or
    // another program on its port) is reconnected to every reconnect interval: said once.
    if (routers[i].node_id != 0) {
      monitoring::LogLine("cellserve node: lost router %s; reconnecting\n", routers[i].address.c_str());
    } else if (!routers[i].said_lost_early) {
      monitoring::LogLine(
          "cellserve node: router %s closed the connection before registering this node; reconnecting "
          "(said once until it registers)\n",
          routers[i].address.c_str());
      routers[i].said_lost_early = true;
    }
    std::vector<std::shared_ptr<AckWaiter>> waiting;
    for (const auto& [waiter, router] : asks)
      if (router == i) waiting.push_back(waiter);
    for (const auto& waiter : waiting) Answered(waiter, i, false);
    const uint64_t link = routers[i].link;
    routers[i].handle = nullptr;
    routers[i].node_id = 0;
    routers[i].link = 0;
    CountRegistered();
    // Its requests have no one to answer to any more: free their cells and slots.
    CancelRunsOf(link, 0);
    links->Set(static_cast<size_t>(i), false);
  }

  // Cancels the runs placed through connection `link` (under node id `node_id`; 0: any) in the
  // cluster; their answers go nowhere.
  void CancelRunsOf(uint64_t link, uint64_t node_id) {
    for (auto it = runs.begin(); it != runs.end();) {
      if (it->first.first == link && (node_id == 0 || it->second.node_id == node_id)) {
        cluster->Cancel(it->second.cluster_id);
        it = runs.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Asks every registered router `atom` and counts the answers in `waiter`.
  template <class Atom>
  // A router lost meanwhile counts as failed at once (a request to it would wait for its timeout).
  // `extra`: further answers the waiter is to count (Leave: registrations in flight).
  void AskAll(Atom atom, const std::shared_ptr<AckWaiter>& waiter, int extra = 0) {
    int n = 0;
    for (int i = 0; i < static_cast<int>(routers.size()); ++i) {
      const RouterSlot& r = routers[i];
      if (!r.node_id) continue;
      ++n;
      asks.push_back({waiter, i});
      self->request(r.handle, kAckTimeout, atom, r.node_id)
          .then([this, waiter, i](Atom) { Answered(waiter, i, true); },
                [this, waiter, i](caf::error&) { Answered(waiter, i, false); });
    }
    waiter->Expect(n + extra);
  }
  void Answered(const std::shared_ptr<AckWaiter>& waiter, int router, bool ok) {
    for (auto it = asks.begin(); it != asks.end(); ++it) {
      if (it->first == waiter && it->second == router) {
        asks.erase(it);
        waiter->Count(ok);
        return;
      }
    }
  }
  std::vector<std::pair<std::shared_ptr<AckWaiter>, int>> asks;  // drain/bye asks not answered yet
  std::shared_ptr<AckWaiter> leave_waiter;                        // set by leave_atom
};

caf::behavior AgentActor(caf::stateful_actor<AgentState>* self, NodeBackend* cluster, NodeAgentOptions options,
                         std::shared_ptr<Links> links, std::string registration) {
  AgentState& s = self->state;
  s.self = self;
  s.cluster = cluster;
  s.options = std::move(options);
  s.links = std::move(links);
  s.registration = std::move(registration);
  for (const ModelSpec& spec : cluster->Models()) s.specs.emplace(spec.name, spec);
  GuardFromPeers(self, "node");
  self->set_down_handler([self](caf::down_msg& msg) {
    const int i = self->state.IndexOf(msg.source);
    if (i >= 0) self->state.Lost(i);
  });
  self->delayed_send(self, std::chrono::milliseconds(s.options.report_interval_ms), heartbeat_atom::value, kLocalOnly);
  return {
      [self](connected_atom, int i, const std::string& address, caf::actor router, LocalOnly) {
        AgentState& st = self->state;
        if (i < 0 || st.leaving) return;
        if (i >= static_cast<int>(st.routers.size())) st.routers.resize(static_cast<size_t>(i) + 1);
        // A link JoinSlots gave to a new address starts unsaid; the same address reconnecting
        // keeps it (else a router dropping every connection would be logged every round again).
        if (st.routers[i].address != address) st.routers[i].said_lost_early = false;
        st.routers[i].address = address;
        st.routers[i].handle = router;
        st.routers[i].node_id = 0;
        st.routers[i].register_failures = 0;
        st.routers[i].link = st.next_link++;
        self->monitor(router);
        st.Register(i);
      },
      [self](retry_register_atom, int i, caf::actor router, LocalOnly) {
        AgentState& st = self->state;
        if (st.leaving || i < 0 || i >= static_cast<int>(st.routers.size())) return;
        if (st.routers[i].handle != router || st.routers[i].node_id != 0) return;  // lost, or registered
        st.Register(i);
      },
      [self](reregister_atom) {
        AgentState& st = self->state;
        const int i = st.IndexOf(caf::actor_cast<caf::actor_addr>(self->current_sender()));
        if (i < 0 || st.leaving) return;
        // The router dropped this node (silent too long: it was stuck, or its reports were held
        // up) and placed the runs it had here elsewhere: cancel them. From here on no report goes
        // out under the old id, and the router reads every report sent before this registration
        // first; so each later `reregister` answers an old report and comes before the reply:
        // it finds node_id 0 and changes nothing (runs placed after the reply are never cut).
        const uint64_t old_id = st.routers[i].node_id;
        if (old_id == 0) return;  // a registration is under way (or is retried later)
        st.routers[i].node_id = 0;
        st.CountRegistered();
        st.CancelRunsOf(st.routers[i].link, old_id);
        st.Register(i);
      },
      [self](run_atom, uint64_t node, uint64_t request, const std::string& bytes, int64_t timeout_us, bool streams) {
        self->state.RunForSender(node, request, bytes, timeout_us, streams);
      },
      // From a router older than `run_streams` (cluster/wire.h): it may stream, so every token goes.
      [self](run_atom, uint64_t node, uint64_t request, const std::string& bytes, int64_t timeout_us) {
        self->state.RunForSender(node, request, bytes, timeout_us, /*streams=*/true);
      },
      [self](abort_atom, uint64_t request) {
        AgentState& st = self->state;
        const int i = st.IndexOf(caf::actor_cast<caf::actor_addr>(self->current_sender()));
        if (i < 0) return;
        auto it = st.runs.find({st.routers[i].link, request});
        if (it == st.runs.end()) return;
        ++st.links->aborts;
        st.cluster->Cancel(it->second.cluster_id);
      },
      [self](done_atom, int i, uint64_t link, uint64_t request, const std::string& bytes, LocalOnly) {
        AgentState& st = self->state;
        auto it = st.runs.find({link, request});
        if (it == st.runs.end()) return;  // its router was lost meanwhile
        const uint64_t node_id = it->second.node_id;
        st.runs.erase(it);
        st.ReportSoon();
        const auto& r = st.routers[i];
        if (r.link == link) self->send(r.handle, answer_atom::value, node_id, request, bytes);
      },
      [self](run_token_atom, int i, uint64_t link, uint64_t request, int32_t token, LocalOnly) {
        AgentState& st = self->state;
        auto it = st.runs.find({link, request});
        if (it == st.runs.end()) return;
        const auto& r = st.routers[i];
        if (r.link != link) return;
        ++st.links->tokens_sent;
        self->send(r.handle, token_atom::value, it->second.node_id, request, token);
      },
      [self](heartbeat_atom, LocalOnly) {
        if (self->state.leaving) return;
        self->state.Report();
        self->delayed_send(self, std::chrono::milliseconds(self->state.options.report_interval_ms),
                           heartbeat_atom::value, kLocalOnly);
      },
      [self](local_quit_atom, LocalOnly) { self->quit(caf::exit_reason::user_shutdown); },
      [self](soon_atom, LocalOnly) {
        self->state.report_soon = false;
        self->state.Report();
      },
      [self](drain_atom, std::shared_ptr<AckWaiter>& waiter) {
        self->state.draining = true;
        self->state.AskAll(drain_atom::value, waiter);
      },
      [self](leave_atom, std::shared_ptr<AckWaiter>& waiter) {
        AgentState& st = self->state;
        st.leaving = true;
        st.links->Stop();
        // A registration in flight with a router this node is not registered with yet would
        // register it after the goodbyes: the waiter also waits for each such reply (and the bye
        // that takes an acceptance back), so the router never counts the node as lost.
        int in_flight = 0;
        for (AgentState::RouterSlot& r : st.routers) {
          r.leave_pending = r.node_id == 0 ? r.registering : 0;
          in_flight += r.leave_pending;
        }
        st.leave_waiter = waiter;
        st.AskAll(bye_atom::value, waiter, in_flight);
      },
  };
}

std::string DefaultName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || !host[0]) std::snprintf(host, sizeof(host), "node");
  return std::string(host) + ":" + std::to_string(getpid());
}

}  // namespace

struct NodeAgent::Impl {
  NodeAgentOptions options;
  std::shared_ptr<Links> links;
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  caf::actor agent;
  std::thread connector;
  std::mutex leave_mu;
  bool left = false;  // GUARDED_BY(leave_mu)

  // Looks up --join entry `e` again and updates its slots; a name that does not resolve is said
  // once (until it resolves again), and its addresses known so far are still tried.
  void ResolveEntry(size_t e, JoinSlots& table, const JoinSlots::IsConnected& connected, bool& warned) {
    std::string host;
    uint16_t port = 0;
    if (!ParseHostPort(options.join[e], false, host, port).ok()) return;  // Start checked them
    StatusOr<std::vector<std::string>> ips = ResolveAddresses(host);
    if (!ips.ok()) {
      if (!warned)
        monitoring::LogLine("cellserve node: cannot reach router %s yet (%s); retrying every %lld ms\n",
                            options.join[e].c_str(), ips.status().message().c_str(),
                            static_cast<long long>(options.reconnect_interval_ms));
      warned = true;
      return;
    }
    warned = false;
    table.Resolved(e, options.join[e], host, port, *ips, connected);
  }

  // Connects to every router address that is not connected, again and again, until Leave; each
  // --join name is resolved again every 30 s, and at every round while none of its addresses is
  // connected (a router that starts later, or moves, is found).
  void ConnectLoop() {
    NameThisThread("cs-connect");
    JoinSlots table;
    const JoinSlots::IsConnected connected = [this](size_t link) { return links->IsConnected(link); };
    struct Entry {
      std::chrono::steady_clock::time_point resolved{};
      bool warned = false;  // said that its name does not resolve
    };
    std::vector<Entry> entries(options.join.size());
    while (!links->stop) {
      const auto now = std::chrono::steady_clock::now();
      for (size_t e = 0; e < entries.size() && !links->stop; ++e) {
        if (table.AnyConnected(e, connected) && now - entries[e].resolved < std::chrono::seconds(30)) continue;
        entries[e].resolved = now;
        ResolveEntry(e, table, connected, entries[e].warned);
      }
      for (JoinSlot& slot : table.slots()) {
        if (links->stop) break;
        if (!slot.current || links->IsConnected(slot.link)) continue;
        if (std::chrono::steady_clock::now() < slot.not_before) continue;
        caf::expected<caf::actor> router = caf::sec::request_timeout;
        std::string why;
        int64_t retry_ms = options.reconnect_interval_ms;
        // First a TCP connect of our own, bounded: CAF's connect has no bound (an address that
        // drops SYNs held this thread, and Leave behind it, for minutes).
        if (Status reachable = ProbeTcp(slot.host, slot.port, options.connect_timeout_ms, &links->stop);
            !reachable.ok()) {
          if (reachable.code() == StatusCode::kCancelled) break;
          why = reachable.message();
        } else {
          router = RemoteActorWithin(*system, slot.host, slot.port, options.connect_timeout_ms);
          if (!router && router.error() == caf::sec::request_timeout) {
            why = "it accepts connections but did not answer within " + std::to_string(options.connect_timeout_ms) +
                  " ms: is it a router's --cluster port?";
            slot.not_before = std::chrono::steady_clock::now() + kSilentPortRetry;
            retry_ms = std::chrono::milliseconds(kSilentPortRetry).count();
          } else if (!router && (router.error() == caf::sec::disconnect_during_handshake ||
                                 router.error() == caf::sec::malformed_basp_message)) {
            // What a Cap'n Proto port (a server's or router's --listen) does with CAF's handshake.
            why = "it closed the connection during CAF's handshake (" + system->render(router.error()) +
                  "): is it a router's --cluster port, not a --listen port?";
          } else if (!router) {
            why = system->render(router.error());
          }
        }
        if (!router) {
          if (!slot.warned)
            monitoring::LogLine("cellserve node: cannot reach router %s yet (%s); retrying every %lld ms\n",
                                slot.display.c_str(), why.c_str(), static_cast<long long>(retry_ms));
          slot.warned = true;
          continue;
        }
        slot.warned = false;
        links->Set(slot.link, true);
        caf::anon_send(agent, connected_atom::value, static_cast<int>(slot.link), slot.display, *router, kLocalOnly);
      }
      links->SleepUnlessStopped(options.reconnect_interval_ms);
    }
  }
};

NodeAgent::NodeAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NodeAgent::~NodeAgent() { Leave(); }

Status CheckJoinAddresses(const std::vector<std::string>& join) {
  if (join.empty()) return InvalidArgument("--join needs at least one router HOST:PORT");
  for (const std::string& address : join) {
    std::string host;
    uint16_t port = 0;
    if (Status s = ParseHostPort(address, false, host, port); !s.ok()) return s.WithContext("--join");
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<NodeAgent>> NodeAgent::Start(NodeBackend* cluster, NodeAgentOptions options) {
  if (!cluster) return InvalidArgument("NodeAgent needs a cluster");
  RETURN_IF_ERROR(CheckJoinAddresses(options.join));
  if (options.devices < 1 || options.report_interval_ms < 10 || options.reconnect_interval_ms < 10 ||
      options.max_tokens < 1 || options.connect_timeout_ms < 1)
    return InvalidArgument(
        "devices, max_tokens and connect_timeout_ms must be >= 1, report and reconnect intervals >= 10 ms");
  Registration registration;
  registration.name = options.name.empty() ? DefaultName() : options.name;
  if (Status s = CheckNodeName(registration.name); !s.ok()) return s;
  options.name = registration.name;
  registration.devices = options.devices;
  registration.run_streams = true;
  registration.models = cluster->Models();
  if (registration.models.empty()) return InvalidArgument("the node serves no model");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->links = std::make_shared<Links>();
  impl->config.load<caf::io::middleman>();
  actors::ConfigureActorSystem(impl->config, options.caf_threads);
  impl->system = std::make_unique<caf::actor_system>(impl->config);
  impl->agent = impl->system->spawn(AgentActor, cluster, options, impl->links, EncodeRegistration(registration));
  impl->agent->attach_functor([links = impl->links, on_failure = options.on_actor_failure](const caf::error& reason) {
    if (links->leaving.exchange(true)) return;  // Leave's own end, or told already
    links->failed = true;
    const std::string why = "the node agent's actor ended (" + caf::to_string(reason) + ")";
    monitoring::LogLine("cellserve node: %s: this node is in no router's table any more\n", why.c_str());
    if (on_failure) on_failure(why);
  });
  Impl* raw = impl.get();
  impl->connector = std::thread([raw] { raw->ConnectLoop(); });
  actors::ReleaseThisThreadsCafLogger();  // Leave may come from another thread
  return std::unique_ptr<NodeAgent>(new NodeAgent(std::move(impl)));
}

NodeAgentStats NodeAgent::stats() const {
  NodeAgentStats s;
  s.routers_registered = impl_->links->routers_registered.load();
  s.runs = impl_->links->runs.load();
  s.aborts = impl_->links->aborts.load();
  s.tokens_sent = impl_->links->tokens_sent.load();
  s.registrations = impl_->links->registrations.load();
  s.registration_failures = impl_->links->registration_failures.load();
  return s;
}

bool NodeAgent::WaitRegistered(int64_t timeout_ms) const {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (impl_->links->routers_registered.load() < static_cast<int64_t>(impl_->options.join.size())) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int NodeAgent::Drain(int64_t timeout_ms) {
  std::lock_guard<std::mutex> lock(impl_->leave_mu);
  if (impl_->left || impl_->links->failed) return 0;  // failed: no actor to tell or answer
  auto waiter = std::make_shared<AckWaiter>();
  caf::anon_send(impl_->agent, drain_atom::value, waiter);
  return waiter->Wait(std::chrono::milliseconds(timeout_ms));
}

void NodeAgent::Leave() {
  if (!impl_) return;
  std::lock_guard<std::mutex> lock(impl_->leave_mu);
  if (impl_->left) return;
  impl_->left = true;
  impl_->links->leaving = true;
  if (!impl_->links->failed) {  // failed: its actor is gone, and no goodbye would be answered
    auto waiter = std::make_shared<AckWaiter>();
    caf::anon_send(impl_->agent, leave_atom::value, waiter);
    waiter->Wait(std::chrono::duration_cast<std::chrono::milliseconds>(kAckTimeout));
  }
  impl_->links->Stop();
  impl_->connector.join();
  caf::anon_send(impl_->agent, local_quit_atom::value, kLocalOnly);
  impl_->agent = nullptr;
  impl_->system.reset();
}

}  // namespace cellserve::cluster
