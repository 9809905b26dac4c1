// cluster/node_agent.h against a scripted router: a stand-in published on 127.0.0.1 (in its own
// actor system, as a separate process would be) that holds every registration reply until the
// test releases it, and places requests when the test says. The real router answers at once, so
// the races around a node's goodbye cannot be staged with it; here they are staged exactly, with
// no sleep deciding the order. The same goes for a router that restarts while the node still runs
// its requests: a stand-in backend answers them only when the test says.
#include "cluster/node_agent.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/local_cluster.h"
#include "cluster/wire.h"
#include "tests/unit/cluster/cls_model_repo.h"
#include "tests/unit/common/dead_end_listeners.h"
#include "tests/unit/common/wait_for.h"

namespace cellserve::cluster {
namespace {

using testutil::WaitFor;

using release_atom = caf::atom_constant<caf::atom("release")>;
using place_atom = caf::atom_constant<caf::atom("place")>;
using ask_again_atom = caf::atom_constant<caf::atom("askagain")>;
using place_flagged_atom = caf::atom_constant<caf::atom("placeflag")>;

// An answer the scripted router got from the node.
struct SeenAnswer {
  uint64_t node = 0, request = 0;
  StatusOr<RequestResult> result = Internal("not decoded");
};

// What the scripted router was told; read from the test thread.
struct Seen {
  std::mutex mu;
  int registrations = 0;
  std::vector<uint64_t> byes;    // node ids, in order
  std::vector<uint64_t> drains;  // node ids, in order
  std::vector<SeenAnswer> answers;
  int load_reports = 0;
};

struct ScriptedRouterState {
  static inline const char* name = "scripted_router";
  std::vector<caf::response_promise> held;  // registration replies not given yet
  caf::actor node;                          // the last node agent that registered
};

caf::behavior ScriptedRouterActor(caf::stateful_actor<ScriptedRouterState>* self, std::shared_ptr<Seen> seen) {
  return {
      [self, seen](register_atom, const std::string&) {
        {
          std::lock_guard<std::mutex> lock(seen->mu);
          ++seen->registrations;
        }
        self->state.node = caf::actor_cast<caf::actor>(self->current_sender());
        self->state.held.push_back(self->make_response_promise());
        return self->state.held.back();
      },
      // Places request number `request` on the node as node `node` (no deadline), in the form of
      // a router older than `run_streams`.
      [self](place_atom, uint64_t node, uint64_t request, const std::string& bytes) {
        self->send(self->state.node, run_atom::value, node, request, bytes, int64_t{0});
      },
      // The same, saying whether the caller streams the tokens.
      [self](place_flagged_atom, uint64_t node, uint64_t request, const std::string& bytes, bool streams) {
        self->send(self->state.node, run_atom::value, node, request, bytes, int64_t{0}, streams);
      },
      [seen](answer_atom, uint64_t node, uint64_t request, const std::string& bytes) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->answers.push_back({node, request, DecodeRunAnswer(bytes)});
      },
      [](token_atom, uint64_t, uint64_t, int32_t) {},
      // Answers every held registration: node id `id` (0 = refused, with `error`).
      [self](release_atom, uint64_t id, const std::string& error) {
        for (caf::response_promise& rp : self->state.held) rp.deliver(registered_atom::value, id, error);
        self->state.held.clear();
      },
      [seen](bye_atom, uint64_t node) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->byes.push_back(node);
        return bye_atom::value;
      },
      [seen](drain_atom, uint64_t node) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->drains.push_back(node);
        return drain_atom::value;
      },
      // "I do not know you": the node registers again (as after a router restart).
      [self](ask_again_atom) { self->send(self->state.node, reregister_atom::value); },
      [seen](node_load_atom, uint64_t, int64_t, int32_t) {
        std::lock_guard<std::mutex> lock(seen->mu);
        ++seen->load_reports;
      },
  };
}

class ScriptedRouter {
 public:
  // Listens on `port` (0: any free one; another: a router restarted at the same address).
  explicit ScriptedRouter(uint16_t port = 0) {
    config_.load<caf::io::middleman>();
    system_ = std::make_unique<caf::actor_system>(config_);
    actor_ = system_->spawn(ScriptedRouterActor, seen_);
    auto published = system_->middleman().publish(actor_, port, "127.0.0.1", true);
    if (published) port_ = *published;
  }
  ~ScriptedRouter() {
    if (port_) system_->middleman().unpublish(actor_, port_);
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  }
  uint16_t port() const { return port_; }
  int registrations() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->registrations;
  }
  std::vector<uint64_t> byes() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->byes;
  }
  std::vector<uint64_t> drains() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->drains;
  }
  void AskToRegisterAgain() { caf::anon_send(actor_, ask_again_atom::value); }
  void Release(uint64_t id, const std::string& error = "") {
    caf::anon_send(actor_, release_atom::value, id, error);
  }
  void Place(uint64_t node, uint64_t request, const std::string& model, const RequestInput& input) {
    caf::anon_send(actor_, place_atom::value, node, request, EncodeRunRequest(model, input));
  }
  void Place(uint64_t node, uint64_t request, const std::string& model, const RequestInput& input, bool streams) {
    caf::anon_send(actor_, place_flagged_atom::value, node, request, EncodeRunRequest(model, input), streams);
  }
  std::vector<SeenAnswer> answers() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->answers;
  }
  int load_reports() {
    std::lock_guard<std::mutex> lock(seen_->mu);
    return seen_->load_reports;
  }

 private:
  caf::actor_system_config config_;
  std::unique_ptr<caf::actor_system> system_;
  std::shared_ptr<Seen> seen_ = std::make_shared<Seen>();
  caf::actor actor_;
  uint16_t port_ = 0;
};

class NodeAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalClusterOptions o;
    o.model_repo = repo_.dir();
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
    cluster_ = std::move(cluster).value();
    ASSERT_GT(router_.port(), 0) << "the scripted router could not listen";
    NodeAgentOptions a;
    a.join = {"127.0.0.1:" + std::to_string(router_.port())};
    a.name = "n";
    auto agent = NodeAgent::Start(cluster_.get(), a);
    ASSERT_TRUE(agent.ok()) << agent.status().ToString();
    agent_ = std::move(agent).value();
    ASSERT_TRUE(WaitFor([&] { return router_.registrations() == 1; }, std::chrono::seconds(10)));
  }

  // Calls Leave() here while another thread answers the held registration 300 ms later (node id
  // `id`, 0 = refused). Returns whether Leave was still waiting when the answer went out.
  bool LeaveWhileTheRouterAnswersLater(uint64_t id, const std::string& error = "") {
    std::atomic<bool> left{false}, waiting_at_answer{false};
    std::thread answer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // Leave waits up to 5 s
      waiting_at_answer = !left.load();
      router_.Release(id, error);
    });
    agent_->Leave();
    left = true;
    answer.join();
    return waiting_at_answer.load();
  }

  // Destroyed in reverse: the agent leaves before the router and the cluster go.
  ScriptedRouter router_;
  testutil::ClsModelRepo repo_{"cellserve_node_agent_test"};
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<NodeAgent> agent_;
};

// Leave while the router has not answered the registration yet: the router then accepts the node.
// Leave must not return before it has taken that back with a goodbye, or the router keeps a node
// that is gone and counts it lost when its load reports stop.
TEST_F(NodeAgentTest, ARegistrationAcceptedWhileLeavingIsTakenBackBeforeLeaveReturns) {
  EXPECT_TRUE(LeaveWhileTheRouterAnswersLater(7)) << "Leave returned with a registration in flight";
  EXPECT_EQ(router_.byes(), std::vector<uint64_t>{7}) << "the late acceptance was not taken back";
  EXPECT_EQ(agent_->stats().registrations, 0) << "an acceptance during Leave does not count as joining";
}

// The same, refused: nothing to take back, and Leave returns once the refusal is in.
TEST_F(NodeAgentTest, ARegistrationRefusedWhileLeavingNeedsNoGoodbye) {
  EXPECT_TRUE(LeaveWhileTheRouterAnswersLater(0, "the node table is full"));
  EXPECT_TRUE(router_.byes().empty());
}

// Registered, then leaving: one goodbye with the id the router gave, and no wait for anything else.
TEST_F(NodeAgentTest, ARegisteredNodeSaysGoodbyeWithItsId) {
  router_.Release(42);
  ASSERT_TRUE(agent_->WaitRegistered(10000));
  EXPECT_EQ(agent_->stats().registrations, 1);
  const auto t0 = std::chrono::steady_clock::now();
  agent_->Leave();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4)) << "Leave waited for its timeout";
  EXPECT_EQ(router_.byes(), std::vector<uint64_t>{42});
}

// Leave from a thread other than the one that started the agent, which lives on (the test's
// own). CAF 0.17 pins the starting thread to the agent's actor system; Start lets go of it, or
// destroying the system here would wait for good (it did: 11 minutes, until killed).
TEST_F(NodeAgentTest, LeavesFromAnotherThread) {
  router_.Release(42);
  ASSERT_TRUE(agent_->WaitRegistered(10000));
  auto left = std::async(std::launch::async, [this] { agent_->Leave(); });
  const bool in_time = left.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  // If this thread still pins the agent's system, let go here, so that Leave ends and the test
  // fails instead of hanging.
  if (!in_time) caf::logger::set_current_actor_system(nullptr);
  left.wait();
  EXPECT_TRUE(in_time) << "Leave from a second thread waited for the thread that started the agent";
  EXPECT_EQ(router_.byes(), std::vector<uint64_t>{42});
}

// A draining node that registers again (the router had forgotten it) says again that it drains,
// or that router would go on placing requests on a node that is leaving.
TEST_F(NodeAgentTest, ADrainingNodeThatRegistersAgainDrainsThereAgain) {
  router_.Release(7);
  ASSERT_TRUE(agent_->WaitRegistered(10000));
  EXPECT_EQ(agent_->Drain(5000), 1);
  EXPECT_EQ(router_.drains(), std::vector<uint64_t>{7});
  router_.AskToRegisterAgain();
  ASSERT_TRUE(WaitFor([&] { return router_.registrations() == 2; }, std::chrono::seconds(10)));
  router_.Release(9);
  EXPECT_TRUE(WaitFor([&] { return router_.drains().size() == 2; }, std::chrono::seconds(10)))
      << "the second registration was not followed by a drain";
  EXPECT_EQ(router_.drains(), (std::vector<uint64_t>{7, 9}));
}

// A router may place requests on a node before the node has its registration reply: the router
// counts the node as joined once it has answered, and the reply can be slow, or time out at the
// node (which then registers again and gets the same id). Such a request must still be run and
// answered under the id the router placed it with; dropped, it would wait for good, as the router
// keeps no timer of its own.
TEST_F(NodeAgentTest, ARequestPlacedBeforeTheRegistrationReplyIsAnswered) {
  ASSERT_TRUE(WaitFor([&] { return router_.registrations() == 1; }, std::chrono::seconds(10)));
  RequestInput input;
  input.tokens = {1, 2, 3};
  router_.Place(7, 1, "cls", input);  // the reply is still held
  ASSERT_TRUE(WaitFor([&] { return !router_.answers().empty(); }, std::chrono::seconds(10)))
      << "the request placed before the registration reply was never answered";
  const std::vector<SeenAnswer> answers = router_.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].node, 7u) << "answered under another id than the one it was placed with";
  EXPECT_EQ(answers[0].request, 1u);
  EXPECT_TRUE(answers[0].result.ok()) << answers[0].result.status().ToString();
  router_.Release(7);
  ASSERT_TRUE(agent_->WaitRegistered(10000));
}

// A node backend that answers a request only when the test says, and whose Cancel answers
// nothing: a request's answer can come as late as the test likes (a real cluster's CANCELLED
// comes within milliseconds). Serves one model, "cls".
class HeldBackend final : public NodeBackend {
 public:
  uint64_t Infer(const std::string&, RequestInput, int64_t, InferCallback done, TokenCallback on_token) override {
    std::lock_guard<std::mutex> lock(mu_);
    held_.push_back(std::move(done));
    token_callbacks_.push_back(on_token != nullptr);
    return held_.size();  // ids from 1
  }
  void Cancel(uint64_t id) override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(id);
  }
  ClusterReport Report() const override { return {}; }
  std::vector<ModelSpec> Models() const override { return {testutil::ClsModelSpec()}; }
  ClusterState state() const override { return stuck_ ? ClusterState::kStopped : ClusterState::kServing; }
  ClusterLoad Load() const override { return {}; }
  bool Stuck() const override { return stuck_; }
  // Whether it says it is stuck from now on (as a LocalCluster whose device hangs).
  void set_stuck(bool stuck) { stuck_ = stuck; }

  size_t infers() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  std::vector<uint64_t> cancelled() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }
  // Per request (in order): whether the agent asked for its tokens.
  std::vector<bool> token_callbacks() {
    std::lock_guard<std::mutex> lock(mu_);
    return token_callbacks_;
  }
  // Lets go of every request unanswered (their callbacks hold the agent's handle, which must not
  // outlive the agent's actor system).
  void DropAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (InferCallback& done : held_) done = nullptr;
  }
  // Answers request `id` (from Infer) with label `label` (on the caller's thread, as a cluster's
  // thread would).
  void Answer(uint64_t id, int32_t label) {
    InferCallback done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done = std::move(held_.at(id - 1));  // let go of the agent's handle once answered
    }
    RequestResult result;
    result.label = label;
    result.logits = {0, 0, 0};
    result.logits[static_cast<size_t>(label)] = 1;
    done(result);
  }

 private:
  std::mutex mu_;
  std::vector<InferCallback> held_;
  std::vector<bool> token_callbacks_;
  std::vector<uint64_t> cancelled_;
  std::atomic<bool> stuck_{false};
};

// Node "n" over `backend`, joining the router at 127.0.0.1:`port`.
StatusOr<std::unique_ptr<NodeAgent>> StartAgent(NodeBackend* backend, uint16_t port) {
  NodeAgentOptions a;
  a.join = {"127.0.0.1:" + std::to_string(port)};
  a.name = "n";
  return NodeAgent::Start(backend, a);
}

// Declared after the agent: however the test ends, lets go of the backend's unanswered requests
// before the agent goes.
struct DropUnanswered {
  HeldBackend& backend;
  ~DropUnanswered() { backend.DropAll(); }
};

// A node agent over a HeldBackend, registered as node 7 with a scripted router. However a test
// ends, the backend's unanswered requests are let go first (the destructor's body), then the agent
// goes before the router and the backend (members in reverse).
struct HeldNode {
  HeldBackend backend;
  ScriptedRouter router;
  std::unique_ptr<NodeAgent> agent;
  ~HeldNode() { backend.DropAll(); }

  ::testing::AssertionResult Start() {
    if (router.port() == 0) return ::testing::AssertionFailure() << "the scripted router could not listen";
    auto started = StartAgent(&backend, router.port());  // reports every 200 ms
    if (!started.ok()) return ::testing::AssertionFailure() << started.status().ToString();
    agent = std::move(started).value();
    if (!WaitFor([&] { return router.registrations() == 1; }, std::chrono::seconds(10)))
      return ::testing::AssertionFailure() << "the agent did not register";
    router.Release(7);
    if (!agent->WaitRegistered(10000)) return ::testing::AssertionFailure() << "no registration reply";
    return ::testing::AssertionSuccess();
  }
};

// A node asks its cluster for a run's tokens only when the run says the caller streams them (each
// token is a message to the router): always for a router older than the flag, which may stream.
TEST(NodeAgentTokensTest, TokensAreAskedForOnlyWhereTheCallerStreams) {
  HeldNode node;
  ASSERT_TRUE(node.Start());
  RequestInput input;
  input.tokens = {1, 2, 3};
  node.router.Place(7, 1, "cls", input, /*streams=*/false);
  node.router.Place(7, 2, "cls", input, /*streams=*/true);
  node.router.Place(7, 3, "cls", input);  // an older router's run
  ASSERT_TRUE(WaitFor([&] { return node.backend.infers() == 3; }, std::chrono::seconds(10)));
  EXPECT_EQ(node.backend.token_callbacks(), (std::vector<bool>{false, true, true}));
  node.agent->Leave();
}

// A router restarted at the same address numbers its requests from 1 again. The old router's
// request 1 is still running on the node when the new one places its own request 1; the old
// one's answer, coming first, must not be taken for the new one's (and must not use up its
// entry, so that the new one's answer would be dropped).
TEST(NodeAgentRestartTest, AnOldRoutersLateAnswerIsNotTakenForTheRestartedRoutersRequest) {
  HeldBackend backend;
  auto first = std::make_unique<ScriptedRouter>();
  const uint16_t port = first->port();
  ASSERT_GT(port, 0) << "the scripted router could not listen";
  auto agent = StartAgent(&backend, port);
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  DropUnanswered drop_unanswered{backend};
  ASSERT_TRUE(WaitFor([&] { return first->registrations() == 1; }, std::chrono::seconds(10)));
  first->Release(7);
  ASSERT_TRUE((*agent)->WaitRegistered(10000));
  RequestInput input;
  input.tokens = {1, 2, 3};
  first->Place(7, 1, "cls", input);
  ASSERT_TRUE(WaitFor([&] { return backend.infers() == 1; }, std::chrono::seconds(10)));

  first.reset();  // the router goes; the node cancels what it ran for it (answered later, here)
  ASSERT_TRUE(WaitFor([&] { return backend.cancelled() == std::vector<uint64_t>{1}; }, std::chrono::seconds(10)));
  // The same address again (another process's connection could take the port meanwhile: then
  // this cannot be staged here).
  std::unique_ptr<ScriptedRouter> restarted;
  for (int attempt = 0; attempt < 20 && (!restarted || restarted->port() != port); ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    restarted = std::make_unique<ScriptedRouter>(port);
  }
  if (restarted->port() != port) GTEST_SKIP() << "port " << port << " was taken before the router could restart there";
  ScriptedRouter& second = *restarted;
  ASSERT_TRUE(WaitFor([&] { return second.registrations() == 1; }, std::chrono::seconds(10)));
  second.Release(8);
  ASSERT_TRUE(WaitFor([&] { return (*agent)->stats().registrations == 2; }, std::chrono::seconds(10)));
  second.Place(8, 1, "cls", input);
  ASSERT_TRUE(WaitFor([&] { return backend.infers() == 2; }, std::chrono::seconds(10)));

  backend.Answer(1, 0);  // the old router's request, late: to be dropped
  backend.Answer(2, 2);  // the restarted router's: its answer (the agent handles them in this order)
  ASSERT_TRUE(WaitFor([&] { return !second.answers().empty(); }, std::chrono::seconds(10)));
  const std::vector<SeenAnswer> answers = second.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].node, 8u);
  EXPECT_EQ(answers[0].request, 1u);
  ASSERT_TRUE(answers[0].result.ok()) << answers[0].result.status().ToString();
  EXPECT_EQ(answers[0].result->label, 2) << "the old router's answer was taken for the new one's request";
  (*agent)->Leave();
}

// A stuck node (its cluster's Stuck(): --stall-after-ms) sends no load reports, so that its
// routers drop it and place its requests elsewhere; once it moves its reports resume. A router
// that dropped it asks it to register again, once per report it sent meanwhile: the first makes
// the node cancel the runs that router had placed there (they were placed elsewhere) and register
// again; the others, which come before the registration's reply, change nothing, so the runs
// placed after the reply are not cut.
TEST(NodeAgentStuckTest, AStuckNodeGoesSilentAndARegisterAgainCancelsWhatItRanForThatRouter) {
  HeldNode node;
  ASSERT_TRUE(node.Start());
  RequestInput input;
  input.tokens = {1, 2, 3};
  node.router.Place(7, 1, "cls", input);
  ASSERT_TRUE(WaitFor([&] { return node.backend.infers() == 1; }, std::chrono::seconds(10)));
  int reports = node.router.load_reports();
  ASSERT_TRUE(WaitFor([&] { return node.router.load_reports() >= reports + 2; }, std::chrono::seconds(10)));

  node.backend.set_stuck(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a report on its way arrives
  reports = node.router.load_reports();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // five report intervals
  EXPECT_EQ(node.router.load_reports(), reports) << "a stuck node went on reporting its load";
  EXPECT_TRUE(node.backend.cancelled().empty());

  node.backend.set_stuck(false);
  ASSERT_TRUE(WaitFor([&] { return node.router.load_reports() > reports; }, std::chrono::seconds(10)))
      << "the node moves again, but its reports did not resume";
  node.router.AskToRegisterAgain();
  node.router.AskToRegisterAgain();  // the answer to a second report under the old id
  ASSERT_TRUE(WaitFor([&] { return node.router.registrations() == 2; }, std::chrono::seconds(10)));
  EXPECT_EQ(node.backend.cancelled(), std::vector<uint64_t>{1}) << "the run the router placed elsewhere goes on here";
  reports = node.router.load_reports();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(node.router.registrations(), 2) << "one drop, one registration";
  EXPECT_EQ(node.router.load_reports(), reports) << "reports went out under the id the router dropped";
  node.router.Release(8);
  ASSERT_TRUE(WaitFor([&] { return node.agent->stats().registrations == 2; }, std::chrono::seconds(10)));
  node.router.Place(8, 1, "cls", input);  // placed after the new registration: runs
  ASSERT_TRUE(WaitFor([&] { return node.backend.infers() == 2; }, std::chrono::seconds(10)));
  node.backend.Answer(2, 1);
  ASSERT_TRUE(WaitFor([&] { return node.router.answers().size() == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(node.router.answers()[0].node, 8u);
  EXPECT_EQ(node.backend.cancelled(), std::vector<uint64_t>{1});
  node.agent->Leave();
}

// --join names a router whose address drops SYNs, a port that accepts and never answers, and a
// live router. CAF's connect has no bound: it held the connector for the kernel's ~2 minutes on
// the first (and Leave, so a SIGTERM, behind it), and for good on the second. Each attempt is
// bounded now: the live router is joined within a few bounds, and Leave returns promptly.
TEST(NodeAgentDeadEndTest, AnUnansweringRouterAddressDelaysNeitherTheOthersNorLeave) {
  testutil::DeadEndListener blackhole = testutil::DeadEndListener::Blackhole();
  testutil::DeadEndListener silent = testutil::DeadEndListener::Silent();
  ASSERT_GT(blackhole.port(), 0);
  ASSERT_GT(silent.port(), 0);
  ScriptedRouter router;
  ASSERT_GT(router.port(), 0) << "the scripted router could not listen";
  testutil::ClsModelRepo repo{"cellserve_node_agent_dead_end_test"};
  LocalClusterOptions o;
  o.model_repo = repo.dir();
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  NodeAgentOptions a;
  a.join = {"127.0.0.1:" + std::to_string(blackhole.port()), "127.0.0.1:" + std::to_string(silent.port()),
            "127.0.0.1:" + std::to_string(router.port())};
  a.name = "n";
  a.connect_timeout_ms = 300;
  auto agent = NodeAgent::Start(cluster->get(), a);
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  EXPECT_TRUE(WaitFor([&] { return router.registrations() == 1; }, std::chrono::seconds(10)))
      << "the live router was not reached past the two dead ends";
  router.Release(9);
  EXPECT_TRUE(WaitFor([&] { return (*agent)->stats().registrations == 1; }, std::chrono::seconds(10)));
  const auto t0 = std::chrono::steady_clock::now();
  (*agent)->Leave();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3))
      << "Leave waited on a connect to a dead end";
  EXPECT_EQ(router.byes(), std::vector<uint64_t>{9});
}

TEST(NodeAgentDeadEndTest, AConnectTimeoutBelowOneMillisecondIsRefused) {
  HeldBackend backend;
  NodeAgentOptions a;
  a.join = {"127.0.0.1:1"};
  a.connect_timeout_ms = 0;
  const auto agent = NodeAgent::Start(&backend, a);
  ASSERT_FALSE(agent.ok());
  EXPECT_EQ(agent.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(agent.status().message().find("connect_timeout_ms"), std::string::npos) << agent.status().message();
}

}  // namespace
}  // namespace cellserve::cluster
