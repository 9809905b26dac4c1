// cluster/router.h and node_agent.h in one process: a Router and NodeAgents over LocalClusters,
// talking through CAF's middleman on 127.0.0.1 (each in its own actor system, as in separate
// processes). Answers equal the LocalCluster's own; a node that leaves hands its work to the
// other; without nodes the router answers at once. The multi-process behaviour (kill -9, SIGTERM,
// restarts) is tests/integration/cluster_test.sh.
#include "cluster/router.h"

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "actors/local_cluster.h"
#include "cluster/node_agent.h"
#include "cluster/wire.h"
#include "monitoring/log.h"
#include "monitoring/metrics.h"
#include "runtime/clock.h"
#include "runtime/this_thread.h"
#include "tests/unit/cluster/cls_model_repo.h"
#include "tests/unit/common/dead_end_listeners.h"
#include "tests/unit/common/thread_probe.h"
#include "tests/unit/common/wait_for.h"

namespace cellserve::cluster {
namespace {

using testutil::WaitFor;

RequestInput Tokens(int n, int seed) {
  RequestInput in;
  for (int i = 0; i < n; ++i) in.tokens.push_back(4 + (i * 37 + seed * 11) % 490);
  return in;
}

// Collects answers from any thread.
class Answers {
 public:
  InferCallback For(int i) {
    return [this, i](StatusOr<RequestResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      results_.emplace(i, std::move(r));
      ++counts_[i];
      cv_.notify_all();
    };
  }
  bool Wait(size_t n, std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return results_.size() >= n; });
  }
  StatusOr<RequestResult> Get(int i) {
    std::lock_guard<std::mutex> lock(mu_);
    return results_.at(i);
  }
  int Count(int i) {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_[i];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int, StatusOr<RequestResult>> results_;
  std::map<int, int> counts_;
};

// Tokens streamed to a caller, from any thread.
class Streamed {
 public:
  TokenCallback Callback() {
    return [this](int32_t token) {
      std::lock_guard<std::mutex> lock(mu_);
      tokens_.push_back(token);
    };
  }
  std::vector<int32_t> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }

 private:
  std::mutex mu_;
  std::vector<int32_t> tokens_;
};

using stream_atom = caf::atom_constant<caf::atom("stream")>;
using die_atom = caf::atom_constant<caf::atom("die")>;
using register_again_atom = caf::atom_constant<caf::atom("regagain")>;
using forge_atom = caf::atom_constant<caf::atom("forge")>;

// What a scripted node was given; read from the test thread.
struct ScriptedNodeSeen {
  std::mutex mu;
  uint64_t id = 0;             // its node id, once registered
  std::vector<uint64_t> runs;  // the requests placed on it, in order
  std::vector<int> streams;    // per run: 1/0 the run's stream flag, -1 the form without it
  int registrations_again = 0;  // answered RegisterAgain calls
};

// A node process reduced to what the test says: it registers, takes runs and answers none; it
// streams the tokens it is given for its last run, and dies when told (the router gets a down
// message, as for a node process killed).
caf::behavior ScriptedNodeActor(caf::event_based_actor* self, caf::actor router, std::string registration,
                                std::shared_ptr<ScriptedNodeSeen> seen) {
  self->request(router, std::chrono::seconds(10), register_atom::value, registration)
      .then([seen](registered_atom, uint64_t id, const std::string&) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->id = id;
      });
  return {
      [seen](run_atom, uint64_t, uint64_t request, const std::string&, int64_t) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->runs.push_back(request);
        seen->streams.push_back(-1);
      },
      [seen](run_atom, uint64_t, uint64_t request, const std::string&, int64_t, bool streams) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->runs.push_back(request);
        seen->streams.push_back(streams ? 1 : 0);
      },
      [self, router, seen](stream_atom, int32_t token) {
        std::lock_guard<std::mutex> lock(seen->mu);
        if (!seen->runs.empty()) self->send(router, token_atom::value, seen->id, seen->runs.back(), token);
      },
      [self](die_atom) { self->quit(caf::exit_reason::user_shutdown); },
      // Registers again from the same connection (the router keeps its node id), with `again`.
      [self, router, seen](register_again_atom, const std::string& again) {
        self->request(router, std::chrono::seconds(10), register_atom::value, again)
            .then([seen](registered_atom, uint64_t, const std::string&) {
              std::lock_guard<std::mutex> lock(seen->mu);
              ++seen->registrations_again;
            });
      },
      // Answers `request` as if it were node `as_node`.
      [self, router](forge_atom, uint64_t as_node, uint64_t request) {
        self->send(router, answer_atom::value, as_node, request, EncodeRunAnswer(RequestResult{}, ModelSpec{}));
      },
      [](abort_atom, uint64_t) {},
      [](reregister_atom) {},
  };
}

// A scripted node in its own actor system (as in its own process), joined to the router on `port`.
class ScriptedNode {
 public:
  ScriptedNode(uint16_t port, const Registration& registration) {
    config_.load<caf::io::middleman>();
    system_ = std::make_unique<caf::actor_system>(config_);
    auto router = system_->middleman().remote_actor("127.0.0.1", port);
    if (router) actor_ = system_->spawn(ScriptedNodeActor, *router, EncodeRegistration(registration), seen_);
  }
  ~ScriptedNode() {
    if (actor_) caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  }
  bool WaitRegistered() {
    return WaitFor(
        [&] {
          std::lock_guard<std::mutex> lock(seen_->mu);
          return seen_->id != 0;
        },
        std::chrono::seconds(10));
  }
  size_t runs() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->runs.size();
  }
  void Stream(int32_t token) { caf::anon_send(actor_, stream_atom::value, token); }
  void Die() { caf::anon_send(actor_, die_atom::value); }
  void Forge(uint64_t as_node, uint64_t request) { caf::anon_send(actor_, forge_atom::value, as_node, request); }
  uint64_t id() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->id;
  }
  std::vector<int> streams() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->streams;
  }
  uint64_t last_run() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->runs.empty() ? 0 : seen_->runs.back();
  }
  bool RegisterAgain(const Registration& registration) {
    caf::anon_send(actor_, register_again_atom::value, EncodeRegistration(registration));
    return WaitFor(
        [&] {
          std::lock_guard<std::mutex> lock(seen_->mu);
          return seen_->registrations_again > 0;
        },
        std::chrono::seconds(10));
  }

 private:
  caf::actor_system_config config_;
  std::unique_ptr<caf::actor_system> system_;
  std::shared_ptr<ScriptedNodeSeen> seen_ = std::make_shared<ScriptedNodeSeen>();
  caf::actor actor_;
};

// A small seq2seq model ("mt").
ModelSpec MtSpec(int64_t version) {
  ModelSpec mt;
  mt.name = "mt";
  mt.version = version;
  mt.kind = ModelKind::kSeq2Seq;
  mt.vocab_size = 200;
  mt.target_vocab_size = 60;
  mt.embed_dim = 16;
  mt.hidden = 16;
  mt.layers = 1;
  mt.classes = 0;
  mt.max_decode_len = 12;
  return mt;
}

// A node of one device that serves mt version 1, as a scripted node registers it.
Registration MtNode(const std::string& name) {
  Registration reg;
  reg.name = name;
  reg.devices = 1;
  reg.models = {MtSpec(1)};
  return reg;
}

class RouterTest : public ::testing::Test {
 protected:
  // A router on any free cluster port, with a short stop grace (and `metrics`, if given).
  static RouterOptions TestOptions(monitoring::ServingMetrics* metrics = nullptr) {
    RouterOptions o;
    o.cluster = "127.0.0.1:0";
    o.stop_grace_ms = 5000;
    o.metrics = metrics;
    return o;
  }
  std::unique_ptr<Router> StartRouter(monitoring::ServingMetrics* metrics = nullptr) {
    return StartRouter(TestOptions(metrics));
  }
  // The same, for scripted nodes, which send no load reports: never dropped as silent here.
  static RouterOptions ScriptedNodeOptions(monitoring::ServingMetrics* metrics) {
    RouterOptions o = TestOptions(metrics);
    o.report_timeout_ms = 600000;
    return o;
  }
  std::unique_ptr<Router> StartRouter(const RouterOptions& o) {
    auto r = Router::Start(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  // A LocalCluster serving `repo` (default: cls version 1).
  std::unique_ptr<LocalCluster> StartCluster(const std::string& repo = "") {
    LocalClusterOptions o;
    o.model_repo = repo.empty() ? repo_.dir() : repo;
    auto c = LocalCluster::Start(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : nullptr;
  }
  std::unique_ptr<NodeAgent> Join(NodeBackend* cluster, int port, const std::string& name) {
    NodeAgentOptions o;
    o.join = {"127.0.0.1:" + std::to_string(port)};
    o.name = name;
    auto a = NodeAgent::Start(cluster, o);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    if (!a.ok()) return nullptr;
    EXPECT_TRUE((*a)->WaitRegistered(10000));
    return std::move(a).value();
  }
  // A router (with metrics_) and two LocalClusters joined to it as nodes n1 and n2.
  void StartTwoNodes() {
    router_ = StartRouter(&metrics_);
    ASSERT_TRUE(router_);
    c1_ = StartCluster();
    c2_ = StartCluster();
    ASSERT_TRUE(c1_ && c2_);
    a1_ = Join(c1_.get(), router_->port(), "n1");
    a2_ = Join(c2_.get(), router_->port(), "n2");
    ASSERT_TRUE(a1_ && a2_);
    ASSERT_TRUE(WaitFor([&] { return router_->nodes().size() == 2; }, std::chrono::seconds(10)));
  }

  // A LocalCluster serving cls version 2 (other weights).
  std::unique_ptr<LocalCluster> StartClusterV2() {
    if (!repo_v2_) {
      repo_v2_.emplace("cellserve_router_test_v2");
      ModelSpec v2 = testutil::ClsModelSpec();
      v2.version = 2;
      repo_v2_->Write(v2, 12);
    }
    return StartCluster(repo_v2_->dir());
  }

  testutil::ClsModelRepo repo_{"cellserve_router_test"};
  std::optional<testutil::TempModelRepo> repo_v2_;
  // Declared in the order they must start (and are destroyed in reverse): the agents leave first.
  monitoring::ServingMetrics metrics_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<LocalCluster> c1_, c2_;
  std::unique_ptr<NodeAgent> a1_, a2_;
};

TEST_F(RouterTest, WithoutNodesItAnswersAtOnce) {
  auto router = StartRouter();
  ASSERT_TRUE(router);
  EXPECT_GT(router->port(), 0);
  EXPECT_EQ(router->state(), ClusterState::kStarting);
  EXPECT_EQ(router->StateReason(), "no node has joined yet");
  EXPECT_TRUE(router->Models().empty());
  EXPECT_TRUE(router->Report().devices.empty()) << "a device no node has";
  EXPECT_EQ(router->Report().unlisted_devices, 0) << "a device no node has";
  Answers answers;
  router->Infer("cls", Tokens(3, 1), 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(10)));
  EXPECT_EQ(answers.Get(0).status().code(), StatusCode::kNotFound) << answers.Get(0).status().ToString();
  router->Stop();
  EXPECT_EQ(router->state(), ClusterState::kStopped);
  router->Infer("cls", Tokens(3, 1), 0, answers.For(1));
  ASSERT_TRUE(answers.Wait(2, std::chrono::seconds(10)));
  EXPECT_EQ(answers.Get(1).status().code(), StatusCode::kUnavailable);
}

TEST_F(RouterTest, BadOptionsAndABusyPort) {
  RouterOptions bad;
  bad.cluster = "nonsense";
  EXPECT_EQ(Router::Start(bad).status().code(), StatusCode::kInvalidArgument);
  auto first = StartRouter();
  ASSERT_TRUE(first);
  RouterOptions same;
  same.cluster = "127.0.0.1:" + std::to_string(first->port());
  std::atomic<int> failures{0};
  same.on_actor_failure = [&](const std::string&) { ++failures; };
  auto second = Router::Start(same);
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable) << second.status().ToString();
  // Its actor, ended because the port was busy, is not a failure to report (the command would
  // have taken it for one and stopped before it said why it could not start).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(RouterTest, TwoNodesAnswerAsTheLocalClusterDoesAndOneLeaving) {
  ASSERT_NO_FATAL_FAILURE(StartTwoNodes());
  Router* router = router_.get();
  LocalCluster* c1 = c1_.get();
  NodeAgent* a1 = a1_.get();
  NodeAgent* a2 = a2_.get();
  monitoring::ServingMetrics& metrics = metrics_;
  EXPECT_EQ(router->state(), ClusterState::kServing);
  ASSERT_EQ(router->Models().size(), 1u);
  EXPECT_EQ(router->Models()[0].name, "cls");
  EXPECT_NE(metrics.Serialize().find("cellserve_node_up{node=\"n1\"} 1"), std::string::npos);

  constexpr int kN = 60;
  Answers routed, local;
  for (int i = 0; i < kN; ++i) {
    router->Infer("cls", Tokens(1 + i % 20, i), 0, routed.For(i));
    c1->Infer("cls", Tokens(1 + i % 20, i), 0, local.For(i));
  }
  ASSERT_TRUE(routed.Wait(kN, std::chrono::seconds(60)));
  ASSERT_TRUE(local.Wait(kN, std::chrono::seconds(60)));
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(routed.Get(i).ok()) << i << ": " << routed.Get(i).status().ToString();
    EXPECT_EQ(routed.Get(i)->label, local.Get(i)->label) << i;
    EXPECT_EQ(routed.Get(i)->logits, local.Get(i)->logits) << i;  // same kernels, same bits
    EXPECT_EQ(routed.Count(i), 1);
  }
  EXPECT_GT(a1->stats().runs, 0);
  EXPECT_GT(a2->stats().runs, 0);
  EXPECT_EQ(a1->stats().runs + a2->stats().runs, kN);

  // n1 drains and leaves: the router stops placing there; everything goes to n2.
  EXPECT_EQ(a1->Drain(5000), 1);
  const int64_t n1_runs = a1->stats().runs;
  Answers after;
  for (int i = 0; i < 20; ++i) router->Infer("cls", Tokens(5, i), 0, after.For(i));
  ASSERT_TRUE(after.Wait(20, std::chrono::seconds(60)));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(after.Get(i).ok()) << after.Get(i).status().ToString();
  EXPECT_EQ(a1->stats().runs, n1_runs);
  a1->Leave();
  ASSERT_TRUE(WaitFor([&] { return router->nodes().size() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(router->stats().nodes_lost, 0);  // it left; it was not lost
  const std::string text = metrics.Serialize();
  EXPECT_EQ(text.find("node=\"n1\""), std::string::npos) << "a node that left keeps no series";
  EXPECT_NE(text.find("cellserve_node_up{node=\"n2\"} 1"), std::string::npos);
  EXPECT_NE(text.find("cellserve_requests_total{code=\"OK\",model=\"cls\"} 80"), std::string::npos) << text;
  a2->Leave();
  router->Stop();
}

TEST_F(RouterTest, ANodeThatStopsMidRunHasItsNewRequestsRetriedElsewhere) {
  ASSERT_NO_FATAL_FAILURE(StartTwoNodes());
  Router* router = router_.get();
  LocalCluster* c1 = c1_.get();
  NodeAgent* a1 = a1_.get();
  constexpr int kN = 200;
  Answers answers;
  for (int i = 0; i < kN; ++i) router->Infer("cls", Tokens(200, i), 0, answers.For(i));
  // n1's cluster stops without telling the router (no drain): what it holds finishes, what
  // reaches it from now on is answered UNAVAILABLE, and the router runs those again on n2.
  ASSERT_TRUE(WaitFor([&] { return a1->stats().runs > 0; }, std::chrono::seconds(10)));
  c1->Stop();
  // Stop drained n1; once the router has its answers too, n1 looks idle (placement counts the
  // router's own unanswered cells), so the next requests go there. Without this wait they all
  // went to n2 whenever n1's answers were still on the way (seen 1 run in 8 under load).
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& n : router->nodes())
          if (n.name == "n1") return n.in_flight == 0;
        return false;
      },
      std::chrono::seconds(10)));
  for (int i = kN; i < 2 * kN; ++i) router->Infer("cls", Tokens(50, i), 0, answers.For(i));
  ASSERT_TRUE(answers.Wait(2 * kN, std::chrono::seconds(120)));
  for (int i = 0; i < 2 * kN; ++i) {
    EXPECT_EQ(answers.Count(i), 1) << i;
    EXPECT_TRUE(answers.Get(i).ok()) << i << ": " << answers.Get(i).status().ToString();
  }
  EXPECT_GT(router->stats().retried, 0);
  const ClusterReport report = router->Report();  // health's accepted = completed + failed + in flight
  EXPECT_EQ(report.accepted, 2 * kN) << "a retried request counted twice";
  EXPECT_EQ(report.completed, 2 * kN);
  a1_.reset();
  a2_.reset();
  router->Stop();
}

// The table each node shows (health, logs) follows its requests: what was placed there, and
// nothing in flight once every answer is in (published at the next sweep, not only when a node
// joins or leaves).
TEST_F(RouterTest, NodesShowWhatWasPlacedThereAndWhatIsInFlight) {
  ASSERT_NO_FATAL_FAILURE(StartTwoNodes());
  constexpr int kN = 20;
  Answers answers;
  for (int i = 0; i < kN; ++i) router_->Infer("cls", Tokens(5, i), 0, answers.For(i));
  ASSERT_TRUE(answers.Wait(kN, std::chrono::seconds(30)));
  auto settled = [&] {
    int64_t placed = 0, in_flight = 0;
    for (const RouterNodeInfo& n : router_->nodes()) {
      placed += n.placed;
      in_flight += n.in_flight;
    }
    return placed == kN && in_flight == 0;
  };
  EXPECT_TRUE(WaitFor(settled, std::chrono::seconds(10)))
      << "nodes() still shows what it showed when the nodes joined";
  const std::vector<RouterNodeInfo> nodes = router_->nodes();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_NE(nodes[0].id, 0u);
  EXPECT_NE(nodes[0].id, nodes[1].id);
  for (const RouterNodeInfo& n : nodes) {
    EXPECT_TRUE(n.name == "n1" || n.name == "n2") << n.name;
    EXPECT_EQ(n.devices, 1);
    EXPECT_EQ(n.models, std::vector<std::string>{"cls"});
    EXPECT_FALSE(n.draining);
  }
  const ClusterReport report = router_->Report();
  EXPECT_TRUE(report.devices.empty());  // counted, not listed: a node may claim 65,536
  EXPECT_EQ(report.unlisted_devices, 2);
  EXPECT_EQ(report.requests_held, 0);
  EXPECT_EQ(report.completed, kN);
  a1_->Leave();
  a2_->Leave();
  router_->Stop();
}

// A rolling upgrade: n1 serves cls version 1, n2 version 2 (other weights). A request for a
// version runs there; one for any version says which one ran it, and its answer is that
// version's; once n1 has left, only version 2 is listed.
TEST_F(RouterTest, NodesServingTwoVersionsAnswerByVersionAndSaySo) {
  router_ = StartRouter();
  ASSERT_TRUE(router_);
  c1_ = StartCluster();
  c2_ = StartClusterV2();
  ASSERT_TRUE(c1_ && c2_);
  a1_ = Join(c1_.get(), router_->port(), "n1");
  a2_ = Join(c2_.get(), router_->port(), "n2");
  ASSERT_TRUE(a1_ && a2_);
  ASSERT_TRUE(WaitFor([&] { return router_->Models().size() == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(router_->Models()[0].version, 1);
  EXPECT_EQ(router_->Models()[1].version, 2);

  constexpr int kN = 20;
  Answers by_version, any, local1, local2;
  for (int i = 0; i < kN; ++i) {
    RequestInput in = Tokens(1 + i % 7, i);
    c1_->Infer("cls", in, 0, local1.For(i));
    c2_->Infer("cls", in, 0, local2.For(i));
    router_->Infer("cls", in, 0, any.For(i));
    in.model_version = 2;
    router_->Infer("cls", in, 0, by_version.For(i));
  }
  ASSERT_TRUE(by_version.Wait(kN, std::chrono::seconds(60)) && any.Wait(kN, std::chrono::seconds(60)));
  ASSERT_TRUE(local1.Wait(kN, std::chrono::seconds(60)) && local2.Wait(kN, std::chrono::seconds(60)));
  int ran_v1 = 0;
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(by_version.Get(i).ok()) << by_version.Get(i).status().ToString();
    EXPECT_EQ(by_version.Get(i)->model_version, 2) << i;
    EXPECT_EQ(by_version.Get(i)->logits, local2.Get(i)->logits) << i;
    ASSERT_TRUE(any.Get(i).ok()) << any.Get(i).status().ToString();
    const int64_t ran = any.Get(i)->model_version;
    ASSERT_TRUE(ran == 1 || ran == 2) << "request " << i << " says version " << ran;
    EXPECT_EQ(any.Get(i)->logits, (ran == 1 ? local1 : local2).Get(i)->logits) << i << " is not version " << ran << "'s";
    ran_v1 += ran == 1;
  }
  EXPECT_EQ(ran_v1, a1_->stats().runs) << "n1 serves version 1 only";

  // n1's cluster stops without telling the router (it answers UNAVAILABLE): a request for any
  // version that went there runs again on n2, version 2 (nothing was streamed to pin it to 1).
  c1_->Stop();
  Answers retried;
  for (int i = 0; i < kN; ++i) router_->Infer("cls", Tokens(2 + i % 5, i), 0, retried.For(i));
  ASSERT_TRUE(retried.Wait(kN, std::chrono::seconds(60)));
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(retried.Get(i).ok()) << i << ": " << retried.Get(i).status().ToString();
    EXPECT_EQ(retried.Get(i)->model_version, 2) << i;
  }
  EXPECT_GT(router_->stats().retried, 0) << "none went to n1: nothing shown";

  a1_->Leave();
  ASSERT_TRUE(WaitFor([&] { return router_->Models().size() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(router_->Models()[0].version, 2);
  RequestInput old = Tokens(3, 1);
  old.model_version = 1;
  router_->Infer("cls", old, 0, any.For(kN));
  c2_->Infer("cls", old, 0, any.For(kN + 1));  // a node asked for a version it does not have
  ASSERT_TRUE(any.Wait(kN + 2, std::chrono::seconds(30)));
  EXPECT_EQ(any.Get(kN).status().code(), StatusCode::kNotFound) << any.Get(kN).status().ToString();
  EXPECT_NE(any.Get(kN).status().message().find("version 1"), std::string::npos) << any.Get(kN).status().message();
  EXPECT_EQ(any.Get(kN + 1).status().code(), StatusCode::kNotFound) << any.Get(kN + 1).status().ToString();
  EXPECT_NE(any.Get(kN + 1).status().message().find("has version 2"), std::string::npos)
      << any.Get(kN + 1).status().message();
  a2_->Leave();
  router_->Stop();
}

// The only node's cluster stops without telling the router: the node answers UNAVAILABLE, the
// router finds no other node, and the client is told what the node said and what to do (not that
// a node was lost).
TEST_F(RouterTest, WhenNoOtherNodeCanTakeARetryTheAnswerSaysWhyAndWhatToDo) {
  router_ = StartRouter();
  ASSERT_TRUE(router_);
  c1_ = StartCluster();
  ASSERT_TRUE(c1_);
  a1_ = Join(c1_.get(), router_->port(), "n1");
  ASSERT_TRUE(a1_);
  c1_->Stop();
  Answers answers;
  router_->Infer("cls", Tokens(3, 1), 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(30)));
  const Status status = answers.Get(0).status();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
  EXPECT_NE(status.message().find("node n1 could not run the request"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("stop"), std::string::npos) << "the node's own reason: " << status.message();
  EXPECT_NE(status.message().find("start another node that serves 'cls'"), std::string::npos) << status.message();
  EXPECT_EQ(status.message().find("lost"), std::string::npos) << status.message();
  a1_->Leave();
  router_->Stop();
}

// A node's own refusal (a token outside the vocabulary) is the answer: only UNAVAILABLE (the node
// began stopping) is tried on another node.
TEST_F(RouterTest, ARequestANodeRefusesIsAnsweredNotRetried) {
  ASSERT_NO_FATAL_FAILURE(StartTwoNodes());
  Answers answers;
  RequestInput bad;
  bad.tokens = {5, 600};  // the vocabulary has 500
  router_->Infer("cls", bad, 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(30)));
  EXPECT_EQ(answers.Get(0).status().code(), StatusCode::kInvalidArgument) << answers.Get(0).status().ToString();
  EXPECT_EQ(router_->stats().retried, 0);
  EXPECT_EQ(a1_->stats().runs + a2_->stats().runs, 1);
  const ClusterReport report = router_->Report();  // as the node counts it: rejected, not failed
  EXPECT_EQ(report.rejected, 1);
  EXPECT_EQ(report.failed, 0);
  a1_->Leave();
  a2_->Leave();
  router_->Stop();
}

// A deadline travels with the request: one already past is answered by the router, one that
// passes on the node by the node; a request without one runs.
TEST_F(RouterTest, TheDeadlineGoesWithTheRequest) {
  ASSERT_NO_FATAL_FAILURE(StartTwoNodes());
  Answers answers;
  SteadyClock clock;  // the router's clock: the same steady time
  router_->Infer("cls", Tokens(5, 1), clock.NowMicros() - 1000, answers.For(0));
  router_->Infer("cls", Tokens(5, 1), clock.NowMicros() + 60'000'000, answers.For(1));
  ASSERT_TRUE(answers.Wait(2, std::chrono::seconds(30)));
  EXPECT_EQ(answers.Get(0).status().code(), StatusCode::kDeadlineExceeded) << answers.Get(0).status().ToString();
  EXPECT_NE(answers.Get(0).status().message().find("router"), std::string::npos) << answers.Get(0).status().message();
  EXPECT_TRUE(answers.Get(1).ok()) << answers.Get(1).status().ToString();
  EXPECT_EQ(a1_->stats().runs + a2_->stats().runs, 1) << "the late one never went to a node";
  a1_->Leave();
  a2_->Leave();
  router_->Stop();
}

// A seq2seq request through the router streams its tokens to the caller, in order, each once,
// and they are the result's tokens and the node's own.
TEST_F(RouterTest, StreamedTokensComeThroughTheRouterOnceAndInOrder) {
  testutil::TempModelRepo repo("cellserve_router_test_mt");
  repo.Write(MtSpec(1), 5);
  router_ = StartRouter();
  ASSERT_TRUE(router_);
  c1_ = StartCluster(repo.dir());
  ASSERT_TRUE(c1_);
  a1_ = Join(c1_.get(), router_->port(), "n1");
  ASSERT_TRUE(a1_);
  std::mutex mu;
  std::vector<int32_t> streamed;
  Answers routed, local;
  RequestInput in;
  in.tokens = {3, 17, 42, 9};
  router_->Infer("mt", in, 0, routed.For(0), [&](int32_t token) {
    std::lock_guard<std::mutex> lock(mu);
    streamed.push_back(token);
  });
  c1_->Infer("mt", in, 0, local.For(0));
  ASSERT_TRUE(routed.Wait(1, std::chrono::seconds(30)) && local.Wait(1, std::chrono::seconds(30)));
  ASSERT_TRUE(routed.Get(0).ok()) << routed.Get(0).status().ToString();
  ASSERT_FALSE(routed.Get(0)->tokens.empty());
  EXPECT_EQ(routed.Get(0)->tokens, local.Get(0)->tokens);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(streamed, routed.Get(0)->tokens) << "every token streamed, once, before the answer";
  }
  EXPECT_EQ(a1_->stats().tokens_sent, static_cast<int64_t>(routed.Get(0)->tokens.size()));
  // A caller that does not stream: the same answer, and no token crosses to the router.
  router_->Infer("mt", in, 0, routed.For(1));
  ASSERT_TRUE(routed.Wait(2, std::chrono::seconds(30)));
  ASSERT_TRUE(routed.Get(1).ok()) << routed.Get(1).status().ToString();
  EXPECT_EQ(routed.Get(1)->tokens, local.Get(0)->tokens);
  EXPECT_EQ(a1_->stats().tokens_sent, static_cast<int64_t>(routed.Get(0)->tokens.size()))
      << "tokens nobody streams were sent to the router";
  a1_->Leave();
  router_->Stop();
}

// The run message says whether the caller streams to a node that registered `run_streams`; a node
// that did not (an older one) gets the form it knows.
TEST_F(RouterTest, ANodeIsToldWhetherTheCallerStreamsOnlyIfItSaidItUnderstands) {
  router_ = StartRouter(ScriptedNodeOptions(&metrics_));
  ASSERT_TRUE(router_);
  Registration reg = MtNode("new");
  reg.run_streams = true;
  ScriptedNode node(router_->port(), reg);
  ASSERT_TRUE(node.WaitRegistered());
  Answers answers;
  Streamed tokens;
  router_->Infer("mt", Tokens(3, 1), 0, answers.For(0));
  router_->Infer("mt", Tokens(3, 2), 0, answers.For(1), tokens.Callback());
  ASSERT_TRUE(WaitFor([&] { return node.runs() == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(node.streams(), (std::vector<int>{0, 1}));
  node.Die();
  ASSERT_TRUE(answers.Wait(2, std::chrono::seconds(30)));  // UNAVAILABLE: no other node

  ScriptedNode old(router_->port(), MtNode("old"));
  ASSERT_TRUE(old.WaitRegistered());
  router_->Infer("mt", Tokens(3, 3), 0, answers.For(2));
  ASSERT_TRUE(WaitFor([&] { return old.runs() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(old.streams(), std::vector<int>{-1});
  old.Die();
  ASSERT_TRUE(answers.Wait(3, std::chrono::seconds(30)));
  router_->Stop();
}

// Each version a node brings is a name in the router's table (max_models): the versions no node
// serves any more leave it, so upgrade after upgrade fits (this router has room for 2 names: a
// model and one version of it).
TEST_F(RouterTest, VersionsNoNodeServesLeaveTheTable) {
  RouterOptions o = TestOptions();
  o.policy.max_models = 2;
  router_ = StartRouter(o);
  ASSERT_TRUE(router_);
  c1_ = StartCluster();
  ASSERT_TRUE(c1_);
  a1_ = Join(c1_.get(), router_->port(), "v1");
  ASSERT_TRUE(a1_);
  a1_->Leave();
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().empty(); }, std::chrono::seconds(10)));
  c2_ = StartClusterV2();
  ASSERT_TRUE(c2_);
  a2_ = Join(c2_.get(), router_->port(), "v2");  // refused while cls@1 held the second name
  ASSERT_TRUE(a2_);
  Answers answers;
  router_->Infer("cls", Tokens(3, 1), 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(30)));
  ASSERT_TRUE(answers.Get(0).ok()) << answers.Get(0).status().ToString();
  EXPECT_EQ(answers.Get(0)->model_version, 2);
  a2_->Leave();
  router_->Stop();
}

// A node that registers again from the same connection under another name: the router's
// node_up series follows the name, and the old name's does not stay at 1 for good.
TEST_F(RouterTest, ARenamedNodesOldSeriesGoes) {
  testutil::TempModelRepo repo("cellserve_router_test_rename");
  repo.Write(MtSpec(1), 5);
  router_ = StartRouter(ScriptedNodeOptions(&metrics_));
  ASSERT_TRUE(router_);
  Registration reg = MtNode("before");
  ScriptedNode node(router_->port(), reg);
  ASSERT_TRUE(node.WaitRegistered());
  EXPECT_NE(metrics_.Serialize().find("cellserve_node_up{node=\"before\"} 1"), std::string::npos);
  reg.name = "after";
  ASSERT_TRUE(node.RegisterAgain(reg));
  const std::string text = metrics_.Serialize();
  EXPECT_NE(text.find("cellserve_node_up{node=\"after\"} 1"), std::string::npos) << text;
  EXPECT_EQ(text.find("node=\"before\""), std::string::npos) << text;
}

// A node that takes a run and never answers it (one of another version could not read it, and
// ignores what it does not know): the router answers the request itself, DEADLINE_EXCEEDED, a
// little after its deadline, and tells the node to drop it. Before, the caller waited for good.
TEST_F(RouterTest, ARequestItsNodeNeverAnswersEndsAfterItsDeadline) {
  RouterOptions o = ScriptedNodeOptions(&metrics_);
  o.stop_grace_ms = 100;         // the request without a deadline is never answered
  router_ = StartRouter(o);
  ASSERT_TRUE(router_);
  ScriptedNode node(router_->port(), MtNode("mute"));
  ASSERT_TRUE(node.WaitRegistered());
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().size() == 1; }, std::chrono::seconds(10)));
  Answers answers;
  const auto t0 = std::chrono::steady_clock::now();
  router_->Infer("mt", Tokens(3, 1), SteadyClock().NowMicros() + 200'000, answers.For(0));
  router_->Infer("mt", Tokens(3, 2), 0, answers.For(1));  // no deadline: waits, as asked
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(10))) << "the overdue request was never answered";
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(answers.Get(0).status().code(), StatusCode::kDeadlineExceeded) << answers.Get(0).status().ToString();
  EXPECT_NE(answers.Get(0).status().message().find("node mute did not answer"), std::string::npos)
      << answers.Get(0).status().message();
  EXPECT_GE(took, std::chrono::milliseconds(2200)) << "answered before its node had time to answer";
  EXPECT_EQ(answers.Count(1), 0) << "a request without a deadline was ended";
  EXPECT_EQ(node.runs(), 2u);
  router_->Stop();
}

// A seq2seq request whose node is lost after it streamed tokens runs again only on the version
// that made them: the retry's first tokens are not sent again, and the caller gets each token
// once. Without a node of that version the answer is UNAVAILABLE, not version 2's tokens after
// version 1's.
TEST_F(RouterTest, AStreamedRequestIsRetriedOnlyOnTheVersionThatMadeItsTokens) {
  testutil::TempModelRepo repo1("cellserve_router_test_mt1"), repo2("cellserve_router_test_mt2");
  repo1.Write(MtSpec(1), 5);
  repo2.Write(MtSpec(2), 6);
  router_ = StartRouter(ScriptedNodeOptions(&metrics_));
  ASSERT_TRUE(router_);
  c1_ = StartCluster(repo1.dir());
  c2_ = StartCluster(repo2.dir());
  ASSERT_TRUE(c1_ && c2_);
  RequestInput in;
  in.tokens = {3, 17, 42, 9};
  Answers local;
  c1_->Infer("mt", in, 0, local.For(0));
  c2_->Infer("mt", in, 0, local.For(1));
  ASSERT_TRUE(local.Wait(2, std::chrono::seconds(30)));
  ASSERT_TRUE(local.Get(0).ok() && local.Get(1).ok()) << local.Get(0).status().ToString();
  const std::vector<int32_t> want = local.Get(0)->tokens;
  ASSERT_GE(want.size(), 3u) << "the test needs a version 1 answer longer than what is streamed";
  ASSERT_NE(want, local.Get(1)->tokens) << "the two versions must answer differently";
  Registration reg;
  reg.models = {MtSpec(1)};
  // A scripted version-1 node `name` takes the request, `join` starts another node meanwhile, and
  // the scripted node streams version 1's first two tokens and dies. What the caller got: `answer`
  // and `streamed`. `listen`: whether the caller streams (a node sends its tokens either way).
  StatusOr<RequestResult> answer = Internal("not answered");
  std::vector<int32_t> streamed;
  auto lose_mid_stream = [&](const std::string& name, const std::function<void()>& join, bool listen = true,
                             std::vector<int32_t> send = {}) {
    if (send.empty()) send = {want[0], want[1]};
    reg.name = name;
    ScriptedNode node(router_->port(), reg);
    ASSERT_TRUE(node.WaitRegistered());
    Answers routed;
    Streamed tokens;
    router_->Infer("mt", in, 0, routed.For(0), listen ? tokens.Callback() : TokenCallback());
    ASSERT_TRUE(WaitFor([&] { return node.runs() == 1; }, std::chrono::seconds(10)));
    join();
    for (int32_t token : send) node.Stream(token);
    if (listen) {
      ASSERT_TRUE(WaitFor([&] { return tokens.Get().size() == 2; }, std::chrono::seconds(10)));
    }
    node.Die();
    ASSERT_TRUE(routed.Wait(1, std::chrono::seconds(30)));
    answer = routed.Get(0);
    streamed = tokens.Get();
  };

  // s1 (version 1) takes the request, n2 (version 2) joins, s1 dies: nowhere to go.
  ASSERT_NO_FATAL_FAILURE(lose_mid_stream("s1", [&] { a2_ = Join(c2_.get(), router_->port(), "n2"); }));
  ASSERT_TRUE(a2_);
  EXPECT_EQ(answer.status().code(), StatusCode::kUnavailable) << answer.status().ToString();
  EXPECT_NE(answer.status().message().find("'mt' version 1"), std::string::npos) << answer.status().message();
  EXPECT_EQ(streamed, std::vector<int32_t>(want.begin(), want.begin() + 2));
  EXPECT_EQ(a2_->stats().runs, 0) << "version 2 ran a request whose first tokens were version 1's";
  a2_->Leave();
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().empty(); }, std::chrono::seconds(10)));
  // A lost node stays on the dashboard, down (the alert's series); one that left says nothing.
  const std::string text = metrics_.Serialize();
  EXPECT_NE(text.find("cellserve_node_up{node=\"s1\"} 0"), std::string::npos) << text;
  EXPECT_EQ(text.find("node=\"n2\""), std::string::npos) << text;

  // s1b (version 1) takes the request, n1 (version 1) joins, s1b dies: n1 runs it again and the
  // caller gets the rest of version 1's tokens.
  ASSERT_NO_FATAL_FAILURE(lose_mid_stream("s1b", [&] { a1_ = Join(c1_.get(), router_->port(), "n1"); }));
  ASSERT_TRUE(a1_);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->tokens, want);
  EXPECT_EQ(answer->model_version, 1);
  EXPECT_EQ(streamed, want) << "each token once, in order, across the two nodes";
  EXPECT_EQ(a1_->stats().runs, 1);
  EXPECT_EQ(router_->stats().retried, 1) << "the first request had nowhere to go";
  a1_->Leave();
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().empty(); }, std::chrono::seconds(10)));

  // A request that does not stream is not held to the version of tokens its caller never saw:
  // s1c (version 1) takes it and dies after two tokens, n2b (version 2) answers it.
  a2_.reset();
  ASSERT_NO_FATAL_FAILURE(
      lose_mid_stream("s1c", [&] { a2_ = Join(c2_.get(), router_->port(), "n2b"); }, /*listen=*/false));
  ASSERT_TRUE(a2_);
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  EXPECT_EQ(answer->tokens, local.Get(1)->tokens);
  EXPECT_EQ(answer->model_version, 2);
  EXPECT_TRUE(streamed.empty());
  a2_->Leave();
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().empty(); }, std::chrono::seconds(10)));

  // s1d (version 1, but another backend: its second token differs from n1c's) streams two tokens
  // and dies; n1c's retry replays a different second token. Before, the router skipped the
  // replayed tokens unseen and answered with n1c's tokens, which contradicted the streamed ones.
  a1_.reset();
  const int32_t other = want[1] == 5 ? 6 : 5;
  ASSERT_NO_FATAL_FAILURE(
      lose_mid_stream("s1d", [&] { a1_ = Join(c1_.get(), router_->port(), "n1c"); }, true, {want[0], other}));
  ASSERT_TRUE(a1_);
  EXPECT_EQ(answer.status().code(), StatusCode::kUnavailable) << answer.status().ToString();
  EXPECT_NE(answer.status().message().find("the retry's tokens differ from the 2 already streamed"),
            std::string::npos)
      << answer.status().message();
  EXPECT_EQ(streamed, (std::vector<int32_t>{want[0], other})) << "nothing streamed after the divergence";
  a1_->Leave();
  router_->Stop();
}

// A node restarted under the same name (a new connection, a new id) before the router dropped
// its old entry: the old entry's end does not mark the name down, or remove its series, while
// the new one serves.
TEST_F(RouterTest, AnOldInstanceGoingDoesNotMarkItsRestartedTwinDown) {
  router_ = StartRouter(ScriptedNodeOptions(&metrics_));
  ASSERT_TRUE(router_);
  const Registration reg = MtNode("twin");
  auto old_instance = std::make_unique<ScriptedNode>(router_->port(), reg);
  ASSERT_TRUE(old_instance->WaitRegistered());
  ScriptedNode restarted(router_->port(), reg);
  ASSERT_TRUE(restarted.WaitRegistered());
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().size() == 2; }, std::chrono::seconds(10)));
  old_instance->Die();
  ASSERT_TRUE(WaitFor([&] { return router_->nodes().size() == 1; }, std::chrono::seconds(10)));
  const std::string text = metrics_.Serialize();
  EXPECT_NE(text.find("cellserve_node_up{node=\"twin\"} 1"), std::string::npos) << text;
  old_instance.reset();
  router_->Stop();
}

// Another peer on the cluster port cannot answer a request placed on a node it is not: the
// answer names the node, and only that node's own messages count.
TEST_F(RouterTest, AnAnswerFromAnotherPeerThanTheRequestsNodeIsDropped) {
  router_ = StartRouter(ScriptedNodeOptions(&metrics_));
  ASSERT_TRUE(router_);
  ScriptedNode a(router_->port(), MtNode("a"));
  ScriptedNode b(router_->port(), MtNode("b"));
  ASSERT_TRUE(a.WaitRegistered() && b.WaitRegistered());
  Answers routed;
  RequestInput in;
  in.tokens = {3, 17};
  router_->Infer("mt", in, 0, routed.For(0));
  ASSERT_TRUE(WaitFor([&] { return a.runs() + b.runs() == 1; }, std::chrono::seconds(10)));
  ScriptedNode& ran = a.runs() == 1 ? a : b;
  ScriptedNode& other = a.runs() == 1 ? b : a;
  other.Forge(ran.id(), ran.last_run());
  ASSERT_TRUE(WaitFor([&] { return router_->stats().forged_answers == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(routed.Count(0), 0) << "the forged answer was taken";
  // The node's own answer counts.
  ran.Forge(ran.id(), ran.last_run());
  ASSERT_TRUE(routed.Wait(1, std::chrono::seconds(10)));
  EXPECT_TRUE(routed.Get(0).ok()) << routed.Get(0).status().ToString();
  router_->Stop();
}

TEST_F(RouterTest, IdlePollKeepsTheCallersCoresAwakeUntilStop) {
  RouterOptions o;
  o.cluster = "127.0.0.1:0";
  o.idle_poll = true;
  auto r = Router::Start(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Router* router = r->get();
  const std::vector<int> cpus = ThisThreadCpus();
  EXPECT_EQ(router->idle_poll_cpus(), cpus);
  for (int cpu : cpus)
    EXPECT_EQ(testing_threads::AllowedCpusOfThread("cs-idle-poll:" + std::to_string(cpu)), std::to_string(cpu));
  auto c = StartCluster();
  ASSERT_TRUE(c);
  auto agent = Join(c.get(), router->port(), "n");
  ASSERT_TRUE(agent);
  ASSERT_TRUE(WaitFor([&] { return router->nodes().size() == 1; }, std::chrono::seconds(10)));
  Answers answers;
  for (int i = 0; i < 20; ++i) router->Infer("cls", Tokens(1 + i, i), 0, answers.For(i));
  ASSERT_TRUE(answers.Wait(20, std::chrono::seconds(30)));
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(answers.Get(i).ok()) << answers.Get(i).status().ToString();
  agent.reset();
  router->Stop();
  EXPECT_TRUE(router->idle_poll_cpus().empty());
  for (int cpu : cpus)
    EXPECT_TRUE(testing_threads::ThreadGone("cs-idle-poll:" + std::to_string(cpu))) << "Stop stops it";
  RouterOptions bad = o;
  bad.idle_poll_below = -1;
  EXPECT_EQ(Router::Start(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RouterTest, OneNodeServesTwoRoutersAndARouterRestartLosesNoNode) {
  auto r1 = StartRouter();
  auto r2 = StartRouter();
  ASSERT_TRUE(r1 && r2);
  auto c = StartCluster();
  ASSERT_TRUE(c);
  NodeAgentOptions o;
  o.join = {"127.0.0.1:" + std::to_string(r1->port()), "127.0.0.1:" + std::to_string(r2->port())};
  o.name = "both";
  auto agent = NodeAgent::Start(c.get(), o);
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  ASSERT_TRUE((*agent)->WaitRegistered(10000));
  Answers answers;
  for (int i = 0; i < 10; ++i) (i % 2 ? r1 : r2)->Infer("cls", Tokens(4, i), 0, answers.For(i));
  ASSERT_TRUE(answers.Wait(10, std::chrono::seconds(30)));
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(answers.Get(i).ok()) << answers.Get(i).status().ToString();
  EXPECT_EQ((*agent)->stats().runs, 10);

  // Router 2 goes away and a new one opens the same port: the node finds it and registers again.
  const int port = r2->port();
  r2->Stop();
  r2.reset();
  RouterOptions again;
  again.cluster = "127.0.0.1:" + std::to_string(port);
  auto r3 = Router::Start(again);
  ASSERT_TRUE(r3.ok()) << r3.status().ToString();
  ASSERT_TRUE(WaitFor([&] { return (*r3)->nodes().size() == 1; }, std::chrono::seconds(20)));
  (*r3)->Infer("cls", Tokens(4, 99), 0, answers.For(99));
  ASSERT_TRUE(answers.Wait(11, std::chrono::seconds(30)));
  EXPECT_TRUE(answers.Get(99).ok()) << answers.Get(99).status().ToString();
  EXPECT_GE((*agent)->stats().registrations, 3);
  (*agent)->Leave();
  (*r3)->Stop();
  r1->Stop();
}

// A node that drains (SIGTERM) before a router comes up, or while a router restarts, registers
// with it and then says that it drains. That message once went one way while the router answered
// it: the answer was unexpected at the node, whose error reply stopped the router's actor, and the
// router, still saying "serving", cancelled every request from then on. The router must keep
// serving the other nodes.
TEST_F(RouterTest, ANodeDrainingAsItRegistersLeavesTheRouterServing) {
  // The draining node first: it joins a port where no router listens yet.
  const int port = [] {
    testutil::DeadEndListener free_port = testutil::DeadEndListener::Silent();
    return static_cast<int>(free_port.port());
  }();
  ASSERT_GT(port, 0);
  auto c1 = StartCluster();
  auto c2 = StartCluster();
  ASSERT_TRUE(c1 && c2);
  NodeAgentOptions o;
  o.join = {"127.0.0.1:" + std::to_string(port)};
  o.name = "draining";
  o.reconnect_interval_ms = 50;
  auto draining = NodeAgent::Start(c1.get(), o);
  ASSERT_TRUE(draining.ok()) << draining.status().ToString();
  EXPECT_EQ((*draining)->Drain(100), 0) << "no router to tell yet";
  RouterOptions ro = TestOptions();
  ro.cluster = "127.0.0.1:" + std::to_string(port);
  auto router = StartRouter(ro);
  ASSERT_TRUE(router);
  ASSERT_TRUE((*draining)->WaitRegistered(10000));
  ASSERT_TRUE(WaitFor([&] { return router->nodes().size() == 1 && router->nodes()[0].draining; },
                      std::chrono::seconds(10)))
      << "the router never heard that the node drains";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // what followed the drain, if anything
  auto serving = Join(c2.get(), port, "serving");
  ASSERT_TRUE(serving) << "a second node could not join";
  Answers answers;
  for (int i = 0; i < 4; ++i) router->Infer("cls", Tokens(4, i), 0, answers.For(i));
  ASSERT_TRUE(answers.Wait(4, std::chrono::seconds(30)));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(answers.Get(i).ok()) << answers.Get(i).status().ToString();
  EXPECT_EQ(serving->stats().runs, 4) << "a draining node got requests";
  EXPECT_EQ(router->state(), ClusterState::kServing);
  serving->Leave();
  (*draining)->Leave();
  router->Stop();
}

// The messages the router takes only from its own process (Stop's rstop and rfailall, the RPC
// server's rcancel, its sweep timer) cannot come off the cluster port, nor can an ordinary exit
// message end its actor: a peer that sent a bare `rstop` stopped the router for good while health
// said "serving", and `rfailall` or `rcancel` answered the calls in flight.
TEST_F(RouterTest, APeerCannotSendTheRoutersOwnMessages) {
  auto router = StartRouter();
  ASSERT_TRUE(router);
  ScriptedNode node(static_cast<uint16_t>(router->port()), MtNode("mute"));  // takes runs, answers none
  ASSERT_TRUE(node.WaitRegistered());
  Answers answers;
  router->Infer("mt", Tokens(3, 1), 0, answers.For(0));
  ASSERT_TRUE(WaitFor([&] { return node.runs() == 1; }, std::chrono::seconds(10)));
  const uint64_t in_flight = node.last_run();
  {
    caf::actor_system_config config;
    config.load<caf::io::middleman>();
    caf::actor_system peer(config);
    auto remote = peer.middleman().remote_actor("127.0.0.1", static_cast<uint16_t>(router->port()));
    ASSERT_TRUE(remote) << peer.render(remote.error());
    caf::scoped_actor me{peer};
    using rstop = caf::atom_constant<caf::atom("rstop")>;
    using rfailall = caf::atom_constant<caf::atom("rfailall")>;
    using rcancel = caf::atom_constant<caf::atom("rcancel")>;
    using sweep = caf::atom_constant<caf::atom("sweep")>;
    using lquit = caf::atom_constant<caf::atom("lquit")>;
    me->send(*remote, rstop::value);
    me->send(*remote, rfailall::value);
    me->send(*remote, rcancel::value, in_flight);
    me->send(*remote, sweep::value);
    me->send(*remote, lquit::value);
    me->send_exit(*remote, caf::exit_reason::user_shutdown);
    // Messages from one sender arrive in order: once this is answered, those were handled.
    bool answered = false;
    me->request(*remote, std::chrono::seconds(10), register_atom::value, std::string("not json"))
        .receive([&](registered_atom, uint64_t, const std::string&) { answered = true; },
                 [&](caf::error& e) { ADD_FAILURE() << peer.render(e); });
    ASSERT_TRUE(answered);
  }
  EXPECT_EQ(router->state(), ClusterState::kServing);
  EXPECT_EQ(answers.Count(0), 0) << "the call in flight was answered by a peer's message";
  router->Infer("mt", Tokens(4, 2), 0, answers.For(1));
  EXPECT_TRUE(WaitFor([&] { return node.runs() == 2; }, std::chrono::seconds(10)))
      << "the router places no new call";
  router->Stop();  // answers both (UNAVAILABLE: the node never does)
  EXPECT_EQ(answers.Count(0), 1);
  EXPECT_EQ(answers.Count(1), 1);
}

// The router's actor ending other than by Stop (here a peer on the cluster port kills it; in
// production it would be a bug): the router says it is stopped, tells its owner once, and answers
// new requests at once instead of dropping them.
TEST_F(RouterTest, ARouterWhoseActorEndsSaysSoAndAnswersAtOnce) {
  std::mutex mu;
  std::vector<std::string> failures;
  RouterOptions o = TestOptions();
  o.on_actor_failure = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    failures.push_back(why);
  };
  auto router = StartRouter(o);
  ASSERT_TRUE(router);
  {
    caf::actor_system_config config;
    config.load<caf::io::middleman>();
    caf::actor_system peer(config);
    auto remote = peer.middleman().remote_actor("127.0.0.1", static_cast<uint16_t>(router->port()));
    ASSERT_TRUE(remote) << peer.render(remote.error());
    caf::anon_send_exit(*remote, caf::exit_reason::kill);
    ASSERT_TRUE(WaitFor([&] { return router->state() == ClusterState::kStopped; }, std::chrono::seconds(10)))
        << "the router still says " << ClusterStateName(router->state());
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(failures.size(), 1u);
    EXPECT_NE(failures[0].find("the router's actor ended"), std::string::npos) << failures[0];
  }
  Answers answers;
  router->Infer("cls", Tokens(3, 1), 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(1))) << "not answered at once";
  EXPECT_EQ(answers.Get(0).status().code(), StatusCode::kUnavailable) << answers.Get(0).status().ToString();
  router->Stop();
  EXPECT_EQ(router->state(), ClusterState::kStopped);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(failures.size(), 1u) << "Stop after the failure was taken for a second one";
}

// The actor's heartbeat: a router whose actor has not swept for stall_after_ms says it is not
// serving (health: not ready, so a readiness probe takes it out of its Service) and logs why.
// The limit here (1 ms) is far below the sweep interval (1 s): between sweeps it reads as stuck.
// With the default limit the same router serves.
TEST_F(RouterTest, ARouterWhoseActorHasNotSweptForStallAfterMsIsNotServing) {
  RouterOptions stalls = TestOptions();
  stalls.report_timeout_ms = 4000;  // a sweep a second
  stalls.stall_after_ms = 1;
  RouterOptions normal = stalls;
  normal.stall_after_ms = RouterOptions().stall_after_ms;
  auto stuck = StartRouter(stalls), fine = StartRouter(normal);
  ASSERT_TRUE(stuck && fine);
  auto c = StartCluster();
  ASSERT_TRUE(c);
  auto to_stuck = Join(c.get(), stuck->port(), "n1"), to_fine = Join(c.get(), fine->port(), "n1");
  ASSERT_TRUE(to_stuck && to_fine);
  testing::internal::CaptureStderr();
  EXPECT_TRUE(WaitFor([&] { return stuck->state() == ClusterState::kStopped; }, std::chrono::seconds(5)));
  (void)monitoring::FlushLog(std::chrono::seconds(5));
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("its actor has not swept for"), std::string::npos) << log;
  EXPECT_NE(stuck->StateReason().find("its actor has not swept for"), std::string::npos) << stuck->StateReason();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // more than a sweep
  EXPECT_EQ(fine->state(), ClusterState::kServing);
  EXPECT_EQ(fine->StateReason(), "");
  to_stuck.reset();
  to_fine.reset();
}

// A node whose device is stuck (a sim device whose rounds take 2.5 s, against --stall-after-ms
// 200, and a router that drops a node silent for 1 s) goes silent; the router drops it and runs its requests on the other node, so every answer
// is the working node's (the sim's answers are meaningless: they would differ). Once the stuck
// rounds end, the node joins again.
TEST_F(RouterTest, AStuckNodesRequestsAreRunElsewhereAndItRejoinsOnceItMoves) {
  const std::string profile = repo_.dir() + "/stuck_profile.json";
  {
    std::FILE* f = std::fopen(profile.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(R"({"name": "stuck", "default": {"a_us": 0, "c_us": 2500000}})", f);
    std::fclose(f);
  }
  RouterOptions o = TestOptions();
  o.report_timeout_ms = 1000;
  auto router = StartRouter(o);
  ASSERT_TRUE(router);
  LocalClusterOptions stuck_options;
  stuck_options.model_repo = repo_.dir();
  stuck_options.backend = "sim";
  stuck_options.sim_profile = profile;
  stuck_options.stall_after_ms = 200;
  stuck_options.scheduler.lookahead = 1;  // one round on the device at a time: it rejoins sooner
  auto stuck = LocalCluster::Start(stuck_options);
  ASSERT_TRUE(stuck.ok()) << stuck.status().ToString();
  auto fine = StartCluster();
  ASSERT_TRUE(fine);
  auto to_stuck = Join(stuck->get(), router->port(), "stuck"), to_fine = Join(fine.get(), router->port(), "fine");
  ASSERT_TRUE(to_stuck && to_fine);
  ASSERT_TRUE(WaitFor([&] { return router->nodes().size() == 2; }, std::chrono::seconds(10)));

  constexpr int kN = 6;
  Answers routed, local;
  for (int i = 0; i < kN; ++i) {
    router->Infer("cls", Tokens(4, i), 0, routed.For(i));
    fine->Infer("cls", Tokens(4, i), 0, local.For(i));
  }
  ASSERT_TRUE(local.Wait(kN, std::chrono::seconds(60)));
  ASSERT_TRUE(routed.Wait(kN, std::chrono::seconds(60)));
  ASSERT_GT(to_stuck->stats().runs, 0) << "nothing was placed on the stuck node: the test shows nothing";
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(routed.Get(i).ok()) << i << ": " << routed.Get(i).status().ToString();
    EXPECT_EQ(routed.Get(i)->logits, local.Get(i)->logits) << i << ": the stuck node's answer was taken";
    EXPECT_EQ(routed.Count(i), 1);
  }
  EXPECT_GE(router->stats().nodes_lost, 1);
  EXPECT_GE(router->stats().retried, to_stuck->stats().runs);
  // Its round ends (the node cancels the requests the router moved, so no more follow): it reports
  // again, is asked to register again, and takes requests again.
  ASSERT_TRUE(WaitFor([&] { return router->nodes().size() == 2; }, std::chrono::seconds(30)))
      << "the node did not rejoin once it moved";
  EXPECT_GE(to_stuck->stats().registrations, 2);
  to_stuck.reset();
  to_fine.reset();
}

// A clock that jumps forward when told; safe to read from any thread.
class JumpingClock final : public Clock {
 public:
  int64_t NowMicros() const override { return steady_.NowMicros() + offset_us_.load(); }
  void Jump(std::chrono::microseconds by) { offset_us_ += by.count(); }

 private:
  SteadyClock steady_;
  std::atomic<int64_t> offset_us_{0};
};

// A node backend that forwards to a LocalCluster, except that the test can make it say it is
// stuck for a while: its agent then sends no load reports.
class PausableNode final : public NodeBackend {
 public:
  explicit PausableNode(LocalCluster* inner) : inner_(inner) {}
  uint64_t Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                 TokenCallback on_token) override {
    return inner_->Infer(model, std::move(input), deadline_us, std::move(done), std::move(on_token));
  }
  void Cancel(uint64_t id) override { inner_->Cancel(id); }
  ClusterReport Report() const override { return inner_->Report(); }
  std::vector<ModelSpec> Models() const override { return inner_->Models(); }
  ClusterState state() const override { return paused_ ? ClusterState::kStopped : inner_->state(); }
  ClusterLoad Load() const override { return inner_->Load(); }
  bool Stuck() const override { return paused_ || inner_->Stuck(); }
  void Pause(bool paused) { paused_ = paused; }

 private:
  LocalCluster* inner_;
  std::atomic<bool> paused_{false};
};

// The router's own actor not running for longer than --report-timeout-ms (stuck, or starved of
// CPU) must not cost it its nodes: their load reports of that time wait in its mailbox behind
// the late sweep. Staged: the node's reports stop, the router's clock jumps 10 s, and they start
// again as soon as the next sweep has run, which sees the node 10 s silent and itself 10 s late.
TEST_F(RouterTest, ASweepThatComesLateDropsNoNodeWhoseReportsMayWaitBehindIt) {
  JumpingClock clock;
  RouterOptions o = TestOptions();
  o.clock = &clock;
  auto router = StartRouter(o);  // report timeout 3 s: a sweep every 750 ms
  ASSERT_TRUE(router);
  auto c = StartCluster();
  ASSERT_TRUE(c);
  PausableNode node(c.get());
  auto agent = Join(&node, router->port(), "n1");
  ASSERT_TRUE(agent);
  ASSERT_TRUE(WaitFor([&] { return router->nodes().size() == 1; }, std::chrono::seconds(10)));
  node.Pause(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a report on its way arrives
  const int64_t sweeps = router->stats().sweeps;
  clock.Jump(std::chrono::seconds(10));
  ASSERT_TRUE(WaitFor([&] { return router->stats().sweeps > sweeps; }, std::chrono::seconds(5)));
  node.Pause(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));  // two more sweeps, reports again
  EXPECT_EQ(router->nodes().size(), 1u);
  EXPECT_EQ(router->stats().nodes_lost, 0) << "the node was dropped for the router's own stall";
  EXPECT_EQ(router->stats().late_sweeps, 1);
  Answers answers;
  router->Infer("cls", Tokens(3, 1), 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(10)));
  EXPECT_TRUE(answers.Get(0).ok()) << answers.Get(0).status().ToString();
  agent.reset();
}

TEST_F(RouterTest, ANodeRefusedForAFullTableJoinsOnceThereIsRoom) {
  RouterOptions o;
  o.cluster = "127.0.0.1:0";
  o.policy.max_nodes = 1;
  auto router = Router::Start(o);
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  auto c1 = StartCluster();
  auto c2 = StartCluster();
  ASSERT_TRUE(c1 && c2);
  auto first = Join(c1.get(), (*router)->port(), "first");
  ASSERT_TRUE(first);
  NodeAgentOptions late;
  late.join = {"127.0.0.1:" + std::to_string((*router)->port())};
  late.name = "late";
  late.reconnect_interval_ms = 50;
  auto second = NodeAgent::Start(c2.get(), late);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  // Refused at least once (a slow start could otherwise make the test pass without a retry).
  ASSERT_TRUE(WaitFor([&] { return (*second)->stats().registration_failures >= 2; }, std::chrono::seconds(10)));
  EXPECT_FALSE((*second)->WaitRegistered(0)) << "the table has room for one node";
  ASSERT_EQ((*router)->nodes().size(), 1u);

  // The first node leaves: the refused one, still connected, is taken on its next try.
  first->Leave();
  ASSERT_TRUE((*second)->WaitRegistered(10000)) << "a refused node never tried again";
  ASSERT_TRUE(WaitFor([&] { return (*router)->nodes().size() == 1 && (*router)->nodes()[0].name == "late"; },
                      std::chrono::seconds(10)));
  Answers answers;
  (*router)->Infer("cls", Tokens(4, 1), 0, answers.For(0));
  ASSERT_TRUE(answers.Wait(1, std::chrono::seconds(30)));
  EXPECT_TRUE(answers.Get(0).ok()) << answers.Get(0).status().ToString();
  EXPECT_EQ((*second)->stats().runs, 1);
  (*second)->Leave();
  (*router)->Stop();
}

}  // namespace
}  // namespace cellserve::cluster
