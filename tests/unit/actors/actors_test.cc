// Deterministic tests of the node, request and worker actors: CAF's test_coordinator runs every
// actor on the test's thread, one message at a time, and a FakeDevice runs a batch only when the
// test completes it. Time is a FakeClock (the schedulers' and the request actors' clock) moved in
// step with the test_coordinator's clock (CAF timers). Nothing sleeps; nothing depends on threads.
#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "actor_test_util.h"
#include "actors/messages.h"
#include "actors/node_actor.h"
#include "actors/worker_actor.h"
#include "monitoring/log.h"
#include "runtime/clock.h"

namespace cellserve {
namespace {

using namespace actors;
using namespace actor_testing;

class ActorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.set("scheduler.policy", caf::atom("testing"));
    config_.set("logger.file-verbosity", caf::atom("quiet"));
    config_.set("logger.console-verbosity", caf::atom("quiet"));
    system_ = std::make_unique<caf::actor_system>(config_);
    sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(system_->scheduler());
    lstm_ = MakeModel(SmallSpec("lstm", ModelKind::kLstm), 11);
    s2s_ = MakeModel(SmallSpec("s2s", ModelKind::kSeq2Seq), 12);
    tree_ = MakeModel(SmallSpec("tree", ModelKind::kTreeLstm), 13);
    options_.state_slots = 1024;
    options_.lookahead = 3;
  }

  void TearDown() override {
    if (node_) caf::anon_send(node_, shutdown_atom::value);
    for (auto& w : workers_) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    for (auto& a : others_) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    Run();
    node_ = caf::actor{};
    workers_.clear();
    others_.clear();
    devices_.clear();  // their queued callbacks hold actor handles: release them before the system
    Run();
    system_.reset();
  }

  std::vector<std::shared_ptr<const Model>> AllModels() const { return {lstm_, s2s_, tree_}; }

  void StartNode(std::vector<std::shared_ptr<const Model>> models) {
    NodeOptions o;
    o.models = std::move(models);
    o.clock = &clock_;
    o.counters = counters_;
    o.max_requests_per_worker_model = options_.max_requests;
    o.liveness = liveness_;
    node_ = SpawnNode(*system_, std::move(o));
    Run();
  }

  // A worker on a new FakeDevice; joins the node if there is one.
  FakeDevice& StartWorker(std::vector<std::shared_ptr<const Model>> models, caf::actor node = {}) {
    devices_.push_back(std::make_unique<FakeDevice>("fake:" + std::to_string(devices_.size())));
    WorkerOptions o;
    o.index = static_cast<int>(workers_.size());
    o.device = devices_.back().get();
    o.clock = &clock_;
    o.models = std::move(models);
    o.scheduler = options_;
    o.node = node ? node : node_;
    o.counters = counters_;
    o.load_report_interval_us = 2000;
    o.load_report_rounds = 4;
    o.liveness = liveness_;
    auto w = SpawnWorker(*system_, std::move(o));
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    workers_.push_back(*w);
    if (node_) caf::anon_send(node_, add_worker_atom::value, o.index, *w);
    Run();
    return *devices_.back();
  }

  uint64_t Infer(const std::string& model, RequestInput in, int64_t deadline_us = 0) {
    const uint64_t id = next_id_++;
    auto reply = std::make_shared<ReplySlot>(id, answers_.For(id), counters_);
    caf::anon_send(node_, infer_atom::value, InferMsg{id, model, std::move(in), deadline_us, std::move(reply), nullptr});
    return id;
  }

  void Run() { sched_->run(); }

  // Completes device batches one at a time, letting the actors react after each, until no batch
  // is queued. Returns how many ran.
  int Drain(FakeDevice& d, int max = 100000) {
    Run();
    int n = 0;
    while (n < max && d.CompleteOne()) {
      ++n;
      Run();
    }
    return n;
  }
  int DrainAll() {
    int n = 0;
    for (bool progress = true; progress;) {
      progress = false;
      for (auto& d : devices_) {
        const int k = Drain(*d);
        n += k;
        progress = progress || k > 0;
      }
    }
    return n;
  }

  void Advance(int64_t us) {
    clock_.AdvanceMicros(us);
    sched_->advance_time(std::chrono::microseconds(us));
    Run();
  }

  template <typename Reply, typename Atom>
  Reply Ask(const caf::actor& who, Atom atom) {
    auto out = std::make_shared<Reply>();
    // (Spawned with an argument: CAF 0.17 dereferences a null argument tuple for none, which
    // UBSan reports.)
    system_->spawn(
        [atom, out](caf::event_based_actor* self, caf::actor target) {
          self->request(target, caf::infinite, atom).then([out](const Reply& r) { *out = r; });
        },
        who);
    Run();
    return *out;
  }
  WorkerReport ReportOf(const caf::actor& worker) { return Ask<WorkerReport>(worker, report_atom::value); }
  NodeReport NodeReportOf() { return Ask<NodeReport>(node_, report_atom::value); }

  void ExpectIdle(const caf::actor& worker) {
    WorkerReport r = ReportOf(worker);
    EXPECT_EQ(r.requests_in, 0);
    EXPECT_EQ(r.tracked_requests, 0);
    EXPECT_EQ(r.slots_in_use, 0);
    EXPECT_EQ(r.outstanding_cells, 0);
  }

  caf::actor_system_config config_;
  std::unique_ptr<caf::actor_system> system_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  FakeClock clock_{1'000'000'000};
  std::shared_ptr<ClusterCounters> counters_ = std::make_shared<ClusterCounters>();
  Answers answers_;
  SchedulerOptions options_;
  std::shared_ptr<const Model> lstm_, s2s_, tree_;
  caf::actor node_;
  std::vector<caf::actor> workers_, others_;
  std::vector<std::unique_ptr<FakeDevice>> devices_;
  std::shared_ptr<Liveness> liveness_;  // set before StartNode/StartWorker to watch them
  uint64_t next_id_ = 1;
};

TEST_F(ActorTest, RequestsOfThreeModelsOnOneWorkerMatchTheSyncExecutor) {
  StartNode(AllModels());
  FakeDevice& dev = StartWorker(AllModels());
  struct Sent {
    uint64_t id;
    std::shared_ptr<const Model> model;
    RequestInput in;
  };
  std::vector<Sent> sent;
  for (int i = 0; i < 18; ++i) {
    auto model = AllModels()[i % 3];
    RequestInput in = InputFor(*model, Tokens(1 + (i * 7) % 13, 100 + i, model->spec().vocab_size));
    sent.push_back({Infer(model->spec().name, in), model, in});
  }
  Run();
  EXPECT_GT(dev.pending(), 0);
  EXPECT_EQ(answers_.Total(), 0);  // nothing finishes before the device ran anything
  DrainAll();
  for (const Sent& s : sent) {
    ASSERT_EQ(answers_.Count(s.id), 1) << "request " << s.id;
    auto got = answers_.Get(s.id);
    auto want = Reference(s.model, s.in);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_TRUE(want.ok());
    EXPECT_TRUE(SameResult(*got, *want)) << "request " << s.id << " (" << s.model->spec().name << ")";
  }
  // Three schedulers, each with lookahead 3, share the device.
  EXPECT_LE(dev.max_pending(), 3 * options_.lookahead);
  ExpectIdle(workers_[0]);
  EXPECT_EQ(counters_->accepted.load(), 18);
  EXPECT_EQ(counters_->completed.load(), 18);
  EXPECT_EQ(counters_->Unanswered(), 0);
  EXPECT_EQ(NodeReportOf().requests_in_flight, 0);
}

TEST_F(ActorTest, LookaheadBoundsRoundsOnTheDeviceAndBatchesGrowWithLoad) {
  options_.lookahead = 2;
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  for (int i = 0; i < 20; ++i) Infer("lstm", InputFor(*lstm_, Tokens(10, i, 97)));
  Run();
  EXPECT_EQ(dev.pending(), 2);  // submitted at once, while nothing has completed
  DrainAll();
  EXPECT_EQ(answers_.Total(), 20);
  EXPECT_LE(dev.max_pending(), 2);
  WorkerReport r = ReportOf(workers_[0]);
  // 20 requests of 10 tokens and 2 layers plus a head each: 420 cells, in far fewer rounds.
  EXPECT_EQ(r.cells, 420);
  EXPECT_LT(r.rounds, 120);
  EXPECT_EQ(r.requests_done, 20);
  ExpectIdle(workers_[0]);
}

TEST_F(ActorTest, BadInputAndUnknownModelAreAnsweredAtOnce) {
  StartNode(AllModels());
  FakeDevice& dev = StartWorker(AllModels());
  const uint64_t empty = Infer("lstm", RequestInput{});
  RequestInput out_of_vocab;
  out_of_vocab.tokens = {5, 6, 1000};
  const uint64_t oov = Infer("lstm", out_of_vocab);
  const uint64_t tokens_for_tree = Infer("tree", InputFor(*lstm_, {5, 6}));
  const uint64_t unknown = Infer("nope", InputFor(*lstm_, {5, 6}));
  Run();
  EXPECT_EQ(answers_.Code(empty), StatusCode::kInvalidArgument);
  EXPECT_EQ(answers_.Code(oov), StatusCode::kInvalidArgument);
  EXPECT_EQ(answers_.Code(tokens_for_tree), StatusCode::kInvalidArgument);
  EXPECT_EQ(answers_.Code(unknown), StatusCode::kNotFound);
  EXPECT_NE(answers_.Get(unknown).status().message().find("lstm"), std::string::npos)
      << "NOT_FOUND names the served models";
  EXPECT_EQ(dev.submitted(), 0);
  EXPECT_EQ(counters_->rejected.load(), 4);
  EXPECT_EQ(counters_->accepted.load(), 0);
  EXPECT_EQ(NodeReportOf().requests_in_flight, 0);
}

TEST_F(ActorTest, OverloadIsResourceExhaustedAtOnce) {
  options_.max_requests = 2;
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(4, i, 97))));
  Run();
  // Before the device ran anything: three refused, two in.
  EXPECT_EQ(answers_.Total(), 3);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(answers_.Code(ids[i]), StatusCode::kResourceExhausted);
  Drain(dev);
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(answers_.Get(ids[i]).ok());
  for (uint64_t id : ids) EXPECT_EQ(answers_.Count(id), 1);
  EXPECT_EQ(counters_->rejected.load(), 3);
  EXPECT_EQ(counters_->completed.load(), 2);
  // Room again: the next one runs.
  const uint64_t later = Infer("lstm", InputFor(*lstm_, Tokens(4, 9, 97)));
  Drain(dev);
  EXPECT_TRUE(answers_.Get(later).ok());
  ExpectIdle(workers_[0]);
}

TEST_F(ActorTest, CancelMidwayAnswersCancelledOnceAndFreesEverything) {
  StartNode({s2s_});
  FakeDevice& dev = StartWorker({s2s_});
  const uint64_t keep = Infer("s2s", InputFor(*s2s_, Tokens(12, 1, 97)));
  const uint64_t cancel = Infer("s2s", InputFor(*s2s_, Tokens(12, 2, 97)));
  Run();
  for (int i = 0; i < 4; ++i) {
    dev.CompleteOne();
    Run();
  }
  EXPECT_EQ(answers_.Total(), 0);
  caf::anon_send(node_, cancel_atom::value, RequestId{cancel});
  Run();
  EXPECT_EQ(answers_.Code(cancel), StatusCode::kCancelled);
  Drain(dev);  // rounds that held its cells complete after the cancel: nothing more for it
  EXPECT_EQ(answers_.Count(cancel), 1);
  EXPECT_EQ(answers_.Count(keep), 1);
  auto want = Reference(s2s_, InputFor(*s2s_, Tokens(12, 1, 97)));
  ASSERT_TRUE(answers_.Get(keep).ok());
  EXPECT_TRUE(SameResult(*answers_.Get(keep), *want));
  ExpectIdle(workers_[0]);
  EXPECT_EQ(counters_->failed.load(), 1);
  EXPECT_EQ(counters_->completed.load(), 1);
}

TEST_F(ActorTest, CancelAfterTheAnswerChangesNothing) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const uint64_t id = Infer("lstm", InputFor(*lstm_, Tokens(3, 3, 97)));
  Drain(dev);
  ASSERT_TRUE(answers_.Get(id).ok());
  caf::anon_send(node_, cancel_atom::value, RequestId{id});
  caf::anon_send(node_, cancel_atom::value, RequestId{12345});  // never existed
  Run();
  EXPECT_EQ(answers_.Count(id), 1);
  EXPECT_TRUE(answers_.Get(id).ok());
}

TEST_F(ActorTest, DeadlinesExpireWhileTheDeviceIsStuck) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const int64_t now = clock_.NowMicros();
  const uint64_t soon = Infer("lstm", InputFor(*lstm_, Tokens(20, 1, 97)), now + 5000);
  const uint64_t later = Infer("lstm", InputFor(*lstm_, Tokens(20, 2, 97)), now + 50000);
  const uint64_t none = Infer("lstm", InputFor(*lstm_, Tokens(20, 3, 97)));
  const uint64_t passed = Infer("lstm", InputFor(*lstm_, Tokens(20, 4, 97)), now - 1);
  const uint64_t due_now = Infer("lstm", InputFor(*lstm_, Tokens(20, 5, 97)), now);
  Run();
  EXPECT_EQ(answers_.Code(passed), StatusCode::kDeadlineExceeded);  // at once, never admitted
  EXPECT_EQ(answers_.Code(due_now), StatusCode::kDeadlineExceeded);  // due at its arrival: passed too
  EXPECT_EQ(answers_.Total(), 2);
  Advance(4000);
  EXPECT_EQ(answers_.Total(), 2);
  Advance(1500);  // past `soon`'s deadline, with no device completion at all
  EXPECT_EQ(answers_.Code(soon), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(answers_.Count(later), 0);
  Drain(dev);  // `later` and `none` finish before their deadline
  Advance(100000);
  EXPECT_TRUE(answers_.Get(later).ok());
  EXPECT_TRUE(answers_.Get(none).ok());
  for (uint64_t id : {soon, later, none, passed, due_now}) EXPECT_EQ(answers_.Count(id), 1);
  ExpectIdle(workers_[0]);
}

TEST_F(ActorTest, DeviceErrorFailsTheRequestsOfThatRoundOnce) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const uint64_t a = Infer("lstm", InputFor(*lstm_, Tokens(5, 1, 97)));
  const uint64_t b = Infer("lstm", InputFor(*lstm_, Tokens(5, 2, 97)));
  Run();
  ASSERT_TRUE(dev.CompleteOne(Internal("injected device failure")));
  Run();
  EXPECT_EQ(answers_.Code(a), StatusCode::kInternal);
  EXPECT_EQ(answers_.Code(b), StatusCode::kInternal);
  Drain(dev);
  EXPECT_EQ(answers_.Count(a), 1);
  EXPECT_EQ(answers_.Count(b), 1);
  ExpectIdle(workers_[0]);
  // The worker goes on serving.
  const uint64_t c = Infer("lstm", InputFor(*lstm_, Tokens(5, 3, 97)));
  Drain(dev);
  EXPECT_TRUE(answers_.Get(c).ok());
}

// The state pool runs out with nothing in flight: the scheduler sheds the newest request holding
// slots, and the worker answers it (RESOURCE_EXHAUSTED, once) while the others run to the end.
TEST_F(ActorTest, AnExhaustedStatePoolShedsTheNewestRequestAndAnswersIt) {
  options_.state_slots = 8;  // 7 usable; a 9-leaf tree needs 9 at its first round
  options_.lookahead = 1;
  StartNode({tree_});
  FakeDevice& dev = StartWorker({tree_});
  const uint64_t small1 = Infer("tree", InputFor(*tree_, Tokens(2, 1, 97)));
  const uint64_t big = Infer("tree", InputFor(*tree_, Tokens(9, 2, 97)));
  const uint64_t small2 = Infer("tree", InputFor(*tree_, Tokens(2, 3, 97)));
  DrainAll();
  EXPECT_TRUE(answers_.Get(small1).ok()) << answers_.Get(small1).status().ToString();
  EXPECT_TRUE(answers_.Get(small2).ok()) << answers_.Get(small2).status().ToString();
  EXPECT_EQ(answers_.Code(big), StatusCode::kResourceExhausted);
  for (uint64_t id : {small1, big, small2}) EXPECT_EQ(answers_.Count(id), 1);
  EXPECT_EQ(counters_->Unanswered(), 0);
  const WorkerReport r = ReportOf(workers_[0]);
  EXPECT_EQ(r.requests_done, 2);
  EXPECT_EQ(r.requests_failed, 1);
  EXPECT_EQ(r.device_batches, dev.stats().batches);
  EXPECT_GT(r.device_batches, 0);
  ExpectIdle(workers_[0]);
}

// A worker told to cancel everything also refuses, with the same reason, an admission that was
// already on its way (sent by the node before the node stopped).
TEST_F(ActorTest, AWorkerThatCancelledEverythingRefusesAdmissionsStillOnTheirWay) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  caf::anon_send(workers_[0], cancel_all_atom::value, Cancelled("the worker was told to stop"));
  const uint64_t late = Infer("lstm", InputFor(*lstm_, Tokens(4, 1, 97)));
  Run();
  ASSERT_EQ(answers_.Count(late), 1);
  EXPECT_EQ(answers_.Code(late), StatusCode::kCancelled);
  EXPECT_NE(answers_.Get(late).status().message().find("the worker was told to stop"), std::string::npos)
      << answers_.Get(late).status().ToString();
  EXPECT_EQ(Drain(dev), 0);  // nothing reached the device
  ExpectIdle(workers_[0]);
}

// While rounds are on the device the report says so (between 1 and the lookahead), and none after.
TEST_F(ActorTest, TheReportCountsRoundsInFlight) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  for (int i = 0; i < 3; ++i) Infer("lstm", InputFor(*lstm_, Tokens(6, i, 97)));
  Run();
  WorkerReport r = ReportOf(workers_[0]);
  EXPECT_GE(r.rounds_in_flight, 1);
  EXPECT_LE(r.rounds_in_flight, options_.lookahead);
  Drain(dev);
  r = ReportOf(workers_[0]);
  EXPECT_EQ(r.rounds_in_flight, 0);
  EXPECT_EQ(r.requests_done, 3);
}

// A worker that stops (killed, or an error) while requests are in tells each of them: no one waits
// for an answer that worker can no longer give.
TEST_F(ActorTest, AWorkerThatStopsAnswersTheRequestsItHeld) {
  StartNode({lstm_});
  StartWorker({lstm_});
  const uint64_t a = Infer("lstm", InputFor(*lstm_, Tokens(6, 1, 97)));
  const uint64_t b = Infer("lstm", InputFor(*lstm_, Tokens(6, 2, 97)));
  Run();
  ASSERT_EQ(answers_.Total(), 0);
  caf::anon_send_exit(workers_[0], caf::exit_reason::kill);
  Run();
  for (uint64_t id : {a, b}) {
    ASSERT_EQ(answers_.Count(id), 1);
    EXPECT_EQ(answers_.Code(id), StatusCode::kUnavailable);
    EXPECT_NE(answers_.Get(id).status().message().find("device worker stopped"), std::string::npos)
        << answers_.Get(id).status().ToString();
  }
  workers_.clear();
}

// A worker that ends on its own: the node hears of it, answers every request placed there (those
// the worker held, and one placed on it whose admit it never read), tells its owner once, and sends
// new requests to the other worker.
TEST_F(ActorTest, AWorkerThatEndsIsTakenOutAndItsRequestsAnswered) {
  std::vector<std::string> lost;
  NodeOptions o;
  o.models = {lstm_};
  o.clock = &clock_;
  o.counters = counters_;
  o.on_worker_lost = [&](int w, const std::string& why) { lost.push_back(std::to_string(w) + ": " + why); };
  node_ = SpawnNode(*system_, std::move(o));
  Run();
  FakeDevice& d0 = StartWorker({lstm_});
  FakeDevice& d1 = StartWorker({lstm_});
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(6, i, 97))));
  Run();
  const NodeReport before = NodeReportOf();
  ASSERT_EQ(before.in_flight.size(), 2u);
  ASSERT_GT(before.in_flight[0], 0) << "nothing was placed on worker 0";
  // Worker 0 ends without answering (kill: ~WorkerState cannot run its answers through a mailbox
  // either way), and a request is placed on it before the node hears of it.
  caf::anon_send_exit(workers_[0], caf::exit_reason::kill);
  ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(6, 99, 97))));
  Run();
  DrainAll();
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_NE(lost[0].find("0: device worker 0 stopped"), std::string::npos) << lost[0];
  int unavailable_or_cancelled = 0, ok = 0;
  for (uint64_t id : ids) {
    ASSERT_EQ(answers_.Count(id), 1) << "request " << id;
    if (answers_.Get(id).ok()) ++ok;
    else ++unavailable_or_cancelled;
  }
  EXPECT_EQ(unavailable_or_cancelled, before.in_flight[0] + (NodeReportOf().assigned[0] - before.assigned[0]));
  EXPECT_EQ(NodeReportOf().requests_in_flight, 0);
  // New requests go to worker 1 and are answered.
  const uint64_t after = Infer("lstm", InputFor(*lstm_, Tokens(5, 7, 97)));
  Drain(d1);
  ASSERT_EQ(answers_.Count(after), 1);
  EXPECT_TRUE(answers_.Get(after).ok()) << answers_.Get(after).status().ToString();
  EXPECT_EQ(lost.size(), 1u);
  (void)d0;
  workers_.erase(workers_.begin());
}

// A node with no worker yet answers at once, UNAVAILABLE, and keeps nothing.
TEST_F(ActorTest, ANodeWithoutWorkersAnswersUnavailableAtOnce) {
  StartNode({lstm_});
  const uint64_t id = Infer("lstm", InputFor(*lstm_, Tokens(4, 1, 97)));
  Run();
  ASSERT_EQ(answers_.Count(id), 1);
  EXPECT_EQ(answers_.Code(id), StatusCode::kUnavailable);
  EXPECT_NE(answers_.Get(id).status().message().find("no device worker"), std::string::npos);
  EXPECT_EQ(NodeReportOf().requests_in_flight, 0);
}

// Each request's actor goes when its request is answered, whatever the answer: none lingers.
TEST_F(ActorTest, RequestActorsQuitOnceAnswered) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const size_t running = system_->registry().running();
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(5, i, 97))));
  ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(5, 7, 97)), clock_.NowMicros() - 1));  // refused
  Run();
  EXPECT_EQ(system_->registry().running(), running + 3);
  Drain(dev);
  for (uint64_t id : ids) EXPECT_EQ(answers_.Count(id), 1);
  EXPECT_EQ(system_->registry().running(), running);
}

TEST_F(ActorTest, NodeSpreadsRequestsByOutstandingWork) {
  StartNode({lstm_});
  FakeDevice& d0 = StartWorker({lstm_});
  FakeDevice& d1 = StartWorker({lstm_});
  // One long request goes to worker 0; then short ones fill worker 1 up to about the same work.
  Infer("lstm", InputFor(*lstm_, Tokens(40, 1, 97)));
  for (int i = 0; i < 10; ++i) Infer("lstm", InputFor(*lstm_, Tokens(4, 10 + i, 97)));
  Run();
  NodeReport r = NodeReportOf();
  ASSERT_EQ(r.assigned.size(), 2u);
  EXPECT_EQ(r.assigned[0] + r.assigned[1], 11);
  EXPECT_GE(r.assigned[1], 8) << "short requests should go to the worker without the long one";
  DrainAll();
  EXPECT_EQ(answers_.Total(), 11);
  Advance(3000);  // the workers' last (idle) load reports go out
  // Equal requests alternate.
  for (int i = 0; i < 10; ++i) Infer("lstm", InputFor(*lstm_, Tokens(6, 30 + i, 97)));
  Run();
  r = NodeReportOf();
  EXPECT_EQ(r.in_flight[0], 5);
  EXPECT_EQ(r.in_flight[1], 5);
  DrainAll();
  EXPECT_EQ(answers_.Total(), 21);
  EXPECT_GT(d0.submitted(), 0);
  EXPECT_GT(d1.submitted(), 0);
  ExpectIdle(workers_[0]);
  ExpectIdle(workers_[1]);
}

TEST_F(ActorTest, ARequestGoesWhereItsModelHasRoomNotWhereAnotherModelIsQuiet) {
  options_.max_requests = 2;  // per worker and model
  StartNode({lstm_, s2s_});
  StartWorker({lstm_, s2s_});
  StartWorker({lstm_, s2s_});
  // A long s2s request makes worker 0 the busy one; two short lstm requests go to worker 1 and
  // fill it for lstm. The third lstm request would be refused there (RESOURCE_EXHAUSTED) while
  // worker 0 has room for lstm: it goes to worker 0.
  const uint64_t s2s = Infer("s2s", InputFor(*s2s_, Tokens(40, 1, 97)));
  std::vector<uint64_t> lstm;
  for (int i = 0; i < 3; ++i) {
    lstm.push_back(Infer("lstm", InputFor(*lstm_, Tokens(3, 10 + i, 97))));
    Run();
  }
  NodeReport r = NodeReportOf();
  ASSERT_EQ(r.assigned.size(), 2u);
  EXPECT_EQ(r.assigned[0], 2) << "the s2s request and the third lstm one";
  EXPECT_EQ(r.assigned[1], 2);
  DrainAll();
  EXPECT_EQ(answers_.Code(s2s), StatusCode::kOk);
  for (uint64_t id : lstm) EXPECT_EQ(answers_.Code(id), StatusCode::kOk) << "request " << id;
  ExpectIdle(workers_[0]);
  ExpectIdle(workers_[1]);
}

// Two models on one device: while both hold requests, the device holds two rounds at most and the
// model charged less device time goes first, so the small one's steps do not each wait behind the
// busy one's whole lookahead (they did: about lookahead + 1 rounds per step).
TEST_F(ActorTest, ASharedDeviceRunsASmallModelsStepsBetweenABusyOnesRounds) {
  options_.lookahead = 3;
  StartNode({lstm_, s2s_});
  FakeDevice& dev = StartWorker({lstm_, s2s_});
  dev.set_us_per_row(100);
  const RequestInput small = InputFor(*s2s_, Tokens(4, 7, 97));
  // Alone, the small request takes R rounds.
  const uint64_t alone = Infer("s2s", small);
  DrainAll();
  ASSERT_EQ(answers_.Code(alone), StatusCode::kOk);
  const int64_t rounds_alone = dev.submitted();
  ASSERT_GT(rounds_alone, 3);
  // The busy model alone fills its lookahead.
  for (int i = 0; i < 8; ++i) Infer("lstm", InputFor(*lstm_, Tokens(30, 20 + i, 97)));
  Run();
  EXPECT_EQ(dev.pending(), 3);
  dev.CompleteOne();
  Run();
  EXPECT_EQ(dev.pending(), 3);
  // The small request arrives: the device's queue drains to two rounds, and stays there.
  const uint64_t shared = Infer("s2s", small);
  Run();
  int completions = 0;
  int64_t most_pending_after_drain = 0;
  while (answers_.Count(shared) == 0 && dev.CompleteOne()) {
    Run();
    ++completions;
    // (Once it is answered, the busy model is alone again and refills its lookahead.)
    if (completions > 1 && answers_.Count(shared) == 0)
      most_pending_after_drain = std::max(most_pending_after_drain, dev.pending());
  }
  ASSERT_EQ(answers_.Code(shared), StatusCode::kOk);
  EXPECT_LE(most_pending_after_drain, 2);
  // Each of its rounds waited behind one busy round at most (and the queue it found, 3 rounds).
  EXPECT_LE(completions, 2 * rounds_alone + 3) << "rounds alone: " << rounds_alone;
  EXPECT_TRUE(SameResult(*answers_.Get(shared), *answers_.Get(alone)));
  DrainAll();
  EXPECT_EQ(answers_.Total(), 10);
  ExpectIdle(workers_[0]);
}

TEST_F(ActorTest, ARejectedRequestLeavesNoEstimateBehindOnItsWorker) {
  StartNode({lstm_});
  StartWorker({lstm_});
  StartWorker({lstm_});
  // A long request with a token outside the vocabulary: placed on worker 0, refused before it
  // reaches the worker, so worker 0's load never changes and it sends no report.
  std::vector<int32_t> bad = Tokens(40, 1, 97);
  bad.back() = 97 + 5;
  const uint64_t refused = Infer("lstm", InputFor(*lstm_, bad));
  Run();
  ASSERT_EQ(answers_.Code(refused), StatusCode::kInvalidArgument);
  // Requests one at a time: worker 0 takes its share, not none (it looked 40 cells busy forever).
  for (int i = 0; i < 6; ++i) {
    Infer("lstm", InputFor(*lstm_, Tokens(4, 10 + i, 97)));
    DrainAll();
    Advance(3000);  // the last (idle) load reports go out
  }
  EXPECT_EQ(answers_.Total(), 7);
  NodeReport r = NodeReportOf();
  ASSERT_EQ(r.assigned.size(), 2u);
  EXPECT_GT(r.assigned[0], 1) << "worker 0 got nothing after the refused request";
  ExpectIdle(workers_[0]);
  ExpectIdle(workers_[1]);
}

TEST_F(ActorTest, LoadReportsAreRateLimitedAndTheLastOneIsFlushed) {
  // A stand-in node that records load reports.
  auto loads = std::make_shared<std::vector<LoadReport>>();
  caf::actor probe = system_->spawn(
      [](caf::event_based_actor*, std::shared_ptr<std::vector<LoadReport>> out) -> caf::behavior {
        return {[out](load_atom, const LoadReport& r) { out->push_back(r); },
                [](finished_atom, RequestId, int, bool) {}};
      },
      loads);
  others_.push_back(probe);
  NodeOptions no;
  no.models = {lstm_};
  no.clock = &clock_;
  no.counters = counters_;
  node_ = SpawnNode(*system_, std::move(no));
  FakeDevice& dev = StartWorker({lstm_}, probe);
  for (int i = 0; i < 8; ++i) Infer("lstm", InputFor(*lstm_, Tokens(12, i, 97)));
  const int rounds = Drain(dev);  // the clock does not move: only the round count lets reports out
  ASSERT_GT(rounds, 20);
  EXPECT_GE(loads->size(), 2u);
  EXPECT_LE(static_cast<int>(loads->size()), rounds / 4 + 3);
  // The final state (idle) is reported once the interval has passed.
  Advance(3000);
  ASSERT_FALSE(loads->empty());
  EXPECT_EQ(loads->back().outstanding_cells, 0);
  EXPECT_EQ(loads->back().requests_in, 0);
  EXPECT_EQ(ReportOf(workers_[0]).load_reports, static_cast<int64_t>(loads->size()));
}

// The node keeps each worker's last reported load, and the cluster's outstanding-cells counter
// follows the reports: up while work is in, back to 0 once the idle state is reported.
TEST_F(ActorTest, TheNodeKeepsTheLastLoadEachWorkerReported) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  for (int i = 0; i < 8; ++i) Infer("lstm", InputFor(*lstm_, Tokens(12, i, 97)));
  Run();
  for (int i = 0; i < 6; ++i) {  // enough rounds for a report, not enough to finish
    dev.CompleteOne();
    Run();
  }
  NodeReport mid = NodeReportOf();
  ASSERT_EQ(mid.reported_cells.size(), 1u);
  EXPECT_GT(mid.reported_cells[0], 0);
  EXPECT_EQ(counters_->outstanding_cells.load(), mid.reported_cells[0]);
  Drain(dev);
  Advance(3000);  // the idle state is reported once the interval has passed
  NodeReport end = NodeReportOf();
  EXPECT_EQ(end.reported_cells[0], 0);
  EXPECT_EQ(counters_->outstanding_cells.load(), 0);
}

// CAF cannot cancel a delayed message. A deadline timer armed per request held each answered
// request's actor in memory until its deadline (113 MiB for 78k requests with a 10-minute
// timeout). Once every request is answered, no timer of theirs is left.
TEST_F(ActorTest, AnsweredRequestsLeaveNoTimersBehind) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const size_t before = sched_->clock().schedule().size();
  const int64_t hour = int64_t{3600} * 1000 * 1000;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 40; ++i)
    ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(5, i, 97)), clock_.NowMicros() + hour));
  Drain(dev);
  for (uint64_t id : ids) ASSERT_TRUE(answers_.Get(id).ok()) << answers_.Get(id).status().ToString();
  // The worker's own timers may still be armed (its wakeup at most a second ahead, its load
  // report); nothing per request.
  EXPECT_LE(sched_->clock().schedule().size(), before + 2);
  ExpectIdle(workers_[0]);
}

// Deadlines that keep falling (each request's earlier than all before it) armed one worker timer
// apiece, each pending until its own deadline (a day away here). The worker arms none further
// than a second ahead, and the deadlines still expire on time.
TEST_F(ActorTest, FallingDeadlinesKeepTheWorkersTimersFewAndStillExpire) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const size_t before = sched_->clock().schedule().size();
  const int64_t day = int64_t{24} * 3600 * 1000 * 1000;
  std::vector<uint64_t> ids;
  for (int i = 0; i < 40; ++i)
    ids.push_back(Infer("lstm", InputFor(*lstm_, Tokens(5, i, 97)), clock_.NowMicros() + day - i * 1000));
  Run();  // admitted; the device completes nothing
  EXPECT_LE(sched_->clock().schedule().size(), before + 2) << "a timer per falling deadline";
  Advance(day);  // one capped timer after another, then the deadlines
  Drain(dev);
  Advance(1000);
  for (uint64_t id : ids) EXPECT_EQ(answers_.Code(id), StatusCode::kDeadlineExceeded);
  ExpectIdle(workers_[0]);
}

// Health's probes (LocalCluster::state()): one to the node is read when the node gets to its
// mailbox, and the node passes one to each worker whose last was read; an actor that has not run
// yet shows its probe outstanding for as long as the clock moves. A device's rounds are counted
// from the worker's Submit to the completion callback.
TEST_F(ActorTest, HealthProbesReachEveryActorAndDeviceRoundsAreCounted) {
  // The test's clock, not owned (the fixture's outlives every actor and callback here).
  liveness_ = std::make_shared<Liveness>(2, std::shared_ptr<const Clock>(&clock_, [](const Clock*) {}));
  Liveness& live = *liveness_;
  StartNode({lstm_});
  FakeDevice& dev0 = StartWorker({lstm_});
  StartWorker({lstm_});

  live.node.Began(clock_.NowMicros());
  caf::anon_send(node_, probe_atom::value);
  clock_.AdvanceMicros(700);
  EXPECT_EQ(live.node.StuckForUs(clock_.NowMicros()), 700) << "the node has not run: its probe is unread";
  ASSERT_TRUE(sched_->try_run_once());  // the node reads it and probes both workers
  EXPECT_EQ(live.node.outstanding(), 0);
  EXPECT_EQ(live.worker[0].outstanding(), 1);
  EXPECT_EQ(live.worker[1].outstanding(), 1);
  clock_.AdvanceMicros(300);
  EXPECT_EQ(live.worker[1].StuckForUs(clock_.NowMicros()), 300);

  // A second probe before the workers ran is not passed on twice.
  live.node.Began(clock_.NowMicros());
  caf::anon_send(node_, probe_atom::value);
  Run();
  EXPECT_EQ(live.node.outstanding(), 0);
  EXPECT_EQ(live.worker[0].outstanding(), 0);
  EXPECT_EQ(live.worker[1].outstanding(), 0);

  // Rounds: outstanding while the device holds them; the oldest unfinished counts from its
  // Submit, and each completion moves the progress time.
  Infer("lstm", InputFor(*lstm_, Tokens(6, 1, 97)));
  Run();
  ASSERT_GT(dev0.pending(), 0);
  EXPECT_EQ(live.device[0].outstanding(), dev0.pending());
  EXPECT_EQ(live.device[1].outstanding(), 0) << "the request went to worker 0 (both idle: the first)";
  clock_.AdvanceMicros(5'000);
  EXPECT_EQ(live.device[0].StuckForUs(clock_.NowMicros()), 5'000);
  ASSERT_TRUE(dev0.CompleteOne());
  EXPECT_EQ(live.device[0].StuckForUs(clock_.NowMicros()), 0);
  Run();
  DrainAll();
  EXPECT_EQ(answers_.Total(), 1);
  EXPECT_EQ(live.device[0].outstanding(), 0);
  EXPECT_EQ(live.device[0].StuckForUs(clock_.NowMicros() + 60'000'000), 0) << "an idle device is never stuck";
}

TEST_F(ActorTest, PaddedGroupsFormOnTheWakeupTimer) {
  options_.policy = Policy::kPadded;
  options_.padded_batch = 4;
  options_.padded_wait_us = 10000;
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  const uint64_t a = Infer("lstm", InputFor(*lstm_, Tokens(3, 1, 97)));
  const uint64_t b = Infer("lstm", InputFor(*lstm_, Tokens(7, 2, 97)));
  Run();
  EXPECT_EQ(dev.submitted(), 0);  // waiting for a full group or the wait to end
  Advance(9000);
  EXPECT_EQ(dev.submitted(), 0);
  Advance(1500);
  EXPECT_GT(dev.submitted(), 0);
  Drain(dev);
  ASSERT_TRUE(answers_.Get(a).ok());
  ASSERT_TRUE(answers_.Get(b).ok());
  EXPECT_TRUE(SameResult(*answers_.Get(a), *Reference(lstm_, InputFor(*lstm_, Tokens(3, 1, 97)))));
  EXPECT_TRUE(SameResult(*answers_.Get(b), *Reference(lstm_, InputFor(*lstm_, Tokens(7, 2, 97)))));
  EXPECT_GT(ReportOf(workers_[0]).padding_rows, 0);  // the short one was padded to the long one
  ExpectIdle(workers_[0]);
}

TEST_F(ActorTest, StopRefusesNewRequestsAndCancelAllAnswersTheRest) {
  StartNode({lstm_});
  FakeDevice& dev = StartWorker({lstm_});
  std::vector<uint64_t> in;
  for (int i = 0; i < 4; ++i) in.push_back(Infer("lstm", InputFor(*lstm_, Tokens(8, i, 97))));
  Run();
  caf::anon_send(node_, stop_atom::value);
  const uint64_t refused = Infer("lstm", InputFor(*lstm_, Tokens(8, 9, 97)));
  Run();
  EXPECT_EQ(answers_.Code(refused), StatusCode::kUnavailable);
  dev.CompleteOne();
  Run();
  EXPECT_EQ(answers_.Total(), 1);  // the accepted ones are still running
  caf::anon_send(node_, cancel_all_atom::value);
  Run();
  for (uint64_t id : in) EXPECT_EQ(answers_.Code(id), StatusCode::kUnavailable);
  Drain(dev);
  for (uint64_t id : in) EXPECT_EQ(answers_.Count(id), 1);
  EXPECT_EQ(counters_->Unanswered(), 0);
  ExpectIdle(workers_[0]);
}

TEST_F(ActorTest, ShutdownAnswersRequestsStillInFlight) {
  StartNode({lstm_});
  StartWorker({lstm_});
  const uint64_t a = Infer("lstm", InputFor(*lstm_, Tokens(8, 1, 97)));
  const uint64_t b = Infer("lstm", InputFor(*lstm_, Tokens(8, 2, 97)));
  Run();
  caf::anon_send(node_, shutdown_atom::value);
  Run();
  EXPECT_EQ(answers_.Code(a), StatusCode::kUnavailable);
  EXPECT_EQ(answers_.Code(b), StatusCode::kUnavailable);
  EXPECT_EQ(counters_->Unanswered(), 0);
  // A request sent to a node that is gone is answered when its message is dropped.
  const uint64_t late = Infer("lstm", InputFor(*lstm_, Tokens(8, 3, 97)));
  Run();
  EXPECT_EQ(answers_.Code(late), StatusCode::kUnavailable);
  for (uint64_t id : {a, b, late}) EXPECT_EQ(answers_.Count(id), 1);
  node_ = caf::actor{};
}

TEST(ActorReplySlotTest, AnswersExactlyOnceAndWhenDroppedUnanswered) {
  auto counters = std::make_shared<ClusterCounters>();
  Answers answers;
  {
    auto slot = std::make_shared<ReplySlot>(1, answers.For(1), counters);
    EXPECT_EQ(counters->Unanswered(), 1);
    EXPECT_TRUE(slot->Answer(RequestResult{}, AnswerKind::kRan));
    EXPECT_FALSE(slot->Answer(Internal("second"), AnswerKind::kRan));
    EXPECT_TRUE(slot->answered());
  }
  { auto dropped = std::make_shared<ReplySlot>(2, answers.For(2), counters); }
  EXPECT_EQ(answers.Count(1), 1);
  EXPECT_TRUE(answers.Get(1).ok());
  EXPECT_EQ(answers.Count(2), 1);
  EXPECT_EQ(answers.Code(2), StatusCode::kUnavailable);
  EXPECT_EQ(counters->completed.load(), 1);
  EXPECT_EQ(counters->failed.load(), 1);
  EXPECT_EQ(counters->Unanswered(), 0);
  EXPECT_TRUE(counters->WaitAllAnswered(std::chrono::microseconds(0)));
}

// A callback that throws: said, not passed on to the actor that answers, and the answer is
// counted, or Stop would wait its whole grace for it.
TEST(ActorReplySlotTest, ACallbackThatThrowsStillCountsAsAnswered) {
  auto counters = std::make_shared<ClusterCounters>();
  auto slot = std::make_shared<ReplySlot>(
      1, [](StatusOr<RequestResult>) { throw std::runtime_error("the caller's bug"); }, counters);
  testing::internal::CaptureStderr();
  EXPECT_NO_THROW(EXPECT_TRUE(slot->Answer(RequestResult{}, AnswerKind::kRan)));
  EXPECT_TRUE(monitoring::FlushLog(std::chrono::seconds(5)));
  EXPECT_NE(testing::internal::GetCapturedStderr().find("request 1 threw: the caller's bug"), std::string::npos);
  EXPECT_EQ(counters->Unanswered(), 0);
  EXPECT_TRUE(counters->WaitAllAnswered(std::chrono::microseconds(0)));
  EXPECT_FALSE(slot->Answer(Internal("again"), AnswerKind::kRan));
}

TEST(ActorEstimateCellsTest, GrowsWithInput) {
  auto lstm = MakeModel(SmallSpec("lstm", ModelKind::kLstm));
  auto tree = MakeModel(SmallSpec("tree", ModelKind::kTreeLstm));
  EXPECT_EQ(EstimateCells(lstm->spec(), InputFor(*lstm, Tokens(10, 1, 97))), 21);
  EXPECT_EQ(EstimateCells(tree->spec(), InputFor(*tree, Tokens(10, 1, 97))), 20);
  EXPECT_LT(EstimateCells(lstm->spec(), InputFor(*lstm, Tokens(3, 1, 97))),
            EstimateCells(lstm->spec(), InputFor(*lstm, Tokens(30, 1, 97))));
}

}  // namespace
}  // namespace cellserve
