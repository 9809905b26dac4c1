// cluster/node_agent.h against a scripted router: a stand-in published on 127.0.0.1 (in its own
// actor system, as a separate process would be) that holds every registration reply until the
// test releases it. The real router answers at once, so the races around a node's goodbye cannot
// be staged with it; here they are staged exactly, with no sleep deciding the order.
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
#include "tests/unit/common/wait_for.h"

namespace cellserve::cluster {
namespace {

using testutil::WaitFor;

using release_atom = caf::atom_constant<caf::atom("release")>;

// What the scripted router was told; read from the test thread.
struct Seen {
  std::mutex mu;
  int registrations = 0;
  std::vector<uint64_t> byes;  // node ids, in order
};

struct ScriptedRouterState {
  static inline const char* name = "scripted_router";
  std::vector<caf::response_promise> held;  // registration replies not given yet
};

caf::behavior ScriptedRouterActor(caf::stateful_actor<ScriptedRouterState>* self, std::shared_ptr<Seen> seen) {
  return {
      [self, seen](register_atom, const std::string&) {
        {
          std::lock_guard<std::mutex> lock(seen->mu);
          ++seen->registrations;
        }
        self->state.held.push_back(self->make_response_promise());
        return self->state.held.back();
      },
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
      [](drain_atom, uint64_t) { return drain_atom::value; },
      [](node_load_atom, uint64_t, int64_t, int32_t) {},
  };
}

class ScriptedRouter {
 public:
  ScriptedRouter() {
    config_.load<caf::io::middleman>();
    system_ = std::make_unique<caf::actor_system>(config_);
    actor_ = system_->spawn(ScriptedRouterActor, seen_);
    auto port = system_->middleman().publish(actor_, 0, "127.0.0.1", true);
    if (port) port_ = *port;
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
  void Release(uint64_t id, const std::string& error = "") {
    caf::anon_send(actor_, release_atom::value, id, error);
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

}  // namespace
}  // namespace cellserve::cluster
