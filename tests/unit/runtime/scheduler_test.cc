// The cellular scheduler and its baseline policies, driven deterministically: a FakeClock, and a
// fake in-order device (a FIFO of submitted rounds run by the fingerprinting FakeBackend when the
// test completes them), so every wiring mistake changes a result and every bound is checked.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <random>
#include <set>

#include "fake_backend.h"
#include "runtime/scheduler.h"

namespace cellserve {
namespace {

using namespace runtime_testing;  // NOLINT

struct Outcome {
  bool done = false, failed = false;
  Status status;
  RequestResult result;
  std::vector<int32_t> streamed;
  int answers = 0;
};

// A scheduler, a fake in-order device and what every request heard.
class Harness {
 public:
  Harness(std::shared_ptr<const Model> model, SchedulerOptions options)
      : model(std::move(model)) {
    scheduler = Scheduler::Create(this->model.get(), options, &clock).value();
    EXPECT_TRUE(fake.RegisterModel(*this->model, options.state_slots).ok());
    fake.pad_slot = scheduler->pad_slot() >= 0 ? scheduler->pad_slot() : -2;
  }

  // Admits a request built from `in`; keeps a twin graph to compute the expected result.
  Status Admit(RequestId id, const RequestInput& in, int64_t deadline_us = 0) {
    twins[id] = MustBuild(model, in);
    std::shared_ptr<RequestGraph> graph = MustBuild(model, in);
    handed_over[id] = graph;
    return scheduler->Admit(id, std::move(graph), deadline_us);
  }

  // Submits rounds until the scheduler has none; returns how many.
  int Pump() {
    int n = 0;
    while (auto round = scheduler->NextRound()) {
      EXPECT_LE(scheduler->rounds_in_flight(), scheduler->options().lookahead);
      max_rows = std::max(max_rows, round->batch.rows.size());
      if (rounds_seen++ == 0) first_round_rows = round->batch.rows.size();
      real_rows_seen += static_cast<size_t>(round->real_rows);
      device.push_back(std::move(*round));
      ++n;
    }
    Hear(scheduler->TakeEvents());
    return n;
  }

  // The device finishes its oldest round.
  bool CompleteOne() {
    if (device.empty()) return false;
    Round r = std::move(device.front());
    device.pop_front();
    completed_rounds.push_back(r.batch.type);
    Hear(scheduler->OnRoundDone(r.id, fake.Run(r.batch)));
    return true;
  }

  // Pump and complete until nothing is left; bounded.
  void RunToEnd(int max_rounds = 100000) {
    for (int i = 0; i < max_rounds; ++i) {
      Pump();
      if (!CompleteOne()) {
        clock.AdvanceMicros(1000);  // padded groups wait on the clock
        if (scheduler->requests_in() == 0) return;
      }
    }
    ADD_FAILURE() << "did not finish in " << max_rounds << " rounds";
  }

  void Hear(const std::vector<RequestEvent>& events) {
    for (const auto& e : events) {
      Outcome& o = outcomes[e.id];
      if (e.kind == RequestEvent::Kind::kToken) {
        EXPECT_FALSE(o.done || o.failed) << "token after the answer";
        o.streamed.push_back(e.token);
        continue;
      }
      ++o.answers;
      if (e.kind == RequestEvent::Kind::kDone) {
        o.done = true;
        o.result = e.result;
      } else {
        o.failed = true;
        o.status = e.status;
      }
    }
  }

  // The classifier result the fake computes for request `id`: its head's fingerprint.
  uint64_t ExpectedHead(RequestId id) {
    const RequestGraph& g = *twins.at(id);
    return GraphFingerprints(g).back() & LogitsMask(model->cell_type(model->head_type()).outputs);
  }

  std::shared_ptr<const Model> model;
  FakeClock clock{1000};
  FakeBackend fake;
  std::unique_ptr<Scheduler> scheduler;
  std::deque<Round> device;
  std::map<RequestId, std::unique_ptr<RequestGraph>> twins;
  std::map<RequestId, std::weak_ptr<RequestGraph>> handed_over;  // the scheduler's copies
  std::map<RequestId, Outcome> outcomes;
  std::vector<int32_t> completed_rounds;
  size_t max_rows = 0;
  size_t rounds_seen = 0, first_round_rows = 0, real_rows_seen = 0;  // through Pump
};

SchedulerOptions Options(Policy policy = Policy::kCellular, int lookahead = 5) {
  SchedulerOptions o;
  o.policy = policy;
  o.lookahead = lookahead;
  o.state_slots = 512;
  return o;
}

// Options of a grouping policy (padded, bucketed): groups of up to `batch`, formed when that many
// wait or the oldest has waited `wait_us`; bucket bounds {4, 16}.
SchedulerOptions GroupOptions(Policy policy, int64_t batch, int64_t wait_us = 5000) {
  SchedulerOptions o = Options(policy);
  o.padded_batch = batch;
  o.padded_wait_us = wait_us;
  o.bucket_bounds = {4, 16};
  return o;
}

std::vector<int32_t> Seq(int n, int32_t start = 5) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(start + (i * 7) % 40);
  return t;
}

TEST(Scheduler, CellularResultsAreCorrectAndEverythingIsFreed) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 2, /*max_batch=*/4)), Options());
  for (RequestId id = 1; id <= 9; ++id) ASSERT_TRUE(h.Admit(id, Tokens(Seq(static_cast<int>(id) * 3))).ok());
  h.RunToEnd();
  EXPECT_EQ(h.fake.Violations(), "");
  for (RequestId id = 1; id <= 9; ++id) {
    const Outcome& o = h.outcomes[id];
    ASSERT_TRUE(o.done) << id << ": " << o.status.ToString();
    EXPECT_EQ(o.answers, 1);
    EXPECT_EQ(DecodeLogits(o.result.logits), h.ExpectedHead(id)) << id;
  }
  EXPECT_LE(h.max_rows, 4u);
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
  EXPECT_EQ(h.scheduler->requests_in(), 0);
  EXPECT_EQ(h.scheduler->outstanding_cells(), 0);
  EXPECT_EQ(h.scheduler->stats().requests_done, 9);
  EXPECT_EQ(h.scheduler->table_bytes(), 0) << "finished requests keep their per-cell tables";
}

TEST(Scheduler, NewRequestsJoinTheRunningBatchAtTheirNextCell) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options(Policy::kCellular, 1));
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(10))).ok());
  h.Pump();
  h.CompleteOne();  // request 1 has run one step
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(3))).ok());
  ASSERT_EQ(h.Pump(), 1);
  // The next round holds request 1's second step and request 2's first: it joined at once.
  EXPECT_EQ(h.device.front().real_rows, 2);
  h.RunToEnd();
  // Request 2 (3 tokens) leaves long before request 1 (10 tokens) is done.
  EXPECT_TRUE(h.outcomes[1].done && h.outcomes[2].done);
  EXPECT_EQ(DecodeLogits(h.outcomes[2].result.logits), h.ExpectedHead(2));
}

TEST(Scheduler, LookaheadBoundsRoundsInFlightAndDependenciesReleaseAtSubmission) {
  for (int lookahead : {1, 2, 5}) {
    Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options(Policy::kCellular, lookahead));
    ASSERT_TRUE(h.Admit(1, Tokens(Seq(20))).ok());
    // One request's steps depend on each other, yet `lookahead` of them are submitted before the
    // device finishes any: dependencies are released at submission.
    EXPECT_EQ(h.Pump(), lookahead);
    EXPECT_EQ(h.scheduler->rounds_in_flight(), lookahead);
    EXPECT_FALSE(h.scheduler->NextRound().has_value());
    h.RunToEnd();
    EXPECT_TRUE(h.outcomes[1].done);
    EXPECT_EQ(DecodeLogits(h.outcomes[1].result.logits), h.ExpectedHead(1));
    EXPECT_EQ(h.fake.Violations(), "");
  }
}

TEST(Scheduler, OldRequestsAreNotStarvedByAStreamOfNewOnes) {
  for (int fill_first : {0, 1, 4}) {
    SchedulerOptions options = Options(Policy::kCellular, 2);
    options.fill_first_rounds = fill_first;
    Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 2, /*max_batch=*/2)), options);
    ASSERT_TRUE(h.Admit(1, Tokens(Seq(12))).ok());
    RequestId next = 2;
    int rounds = 0;
    while (!h.outcomes[1].done && rounds < 1000) {
      ASSERT_TRUE(h.Admit(next++, Tokens(Seq(12))).ok());  // a newcomer every round
      h.Pump();
      h.CompleteOne();
      ++rounds;
    }
    // 12 steps x 2 layers + head = 25 cells. Oldest first serves one of them every round (plus
    // the lookahead pipeline), however many newcomers compete for the batch of 2; a full type
    // may go first at most fill_first rounds in a row, so a cell waits at most that many more.
    EXPECT_LE(rounds, 25 * (1 + fill_first) + 2) << "the oldest request was starved, fill_first " << fill_first;
    h.RunToEnd();
    for (const auto& [id, twin] : h.twins) EXPECT_TRUE(h.outcomes[id].done) << id;
    EXPECT_EQ(h.fake.Violations(), "");
  }
}

// The converse: a short request admitted beside a long one finishes in a bounded number of rounds,
// not with the long one. The long request's next cell is always the oldest request's, so its type
// stayed chosen and the short request's head waited the long one's whole run (1,991 rounds for a
// 3-token request beside a 2,000-token one): cellular batching's promise, broken. A type with
// ready cells now waits at most max_type_wait_rounds decisions in a row.
TEST(Scheduler, AShortRequestBesideALongOneFinishesInBoundedRounds) {
  for (int wait_rounds : {0, 4, 16}) {
    SchedulerOptions options = Options(Policy::kCellular, 5);
    options.max_type_wait_rounds = wait_rounds;
    ModelSpec spec = SmallSpec(ModelKind::kLstm, 2);
    spec.max_input_tokens = 4000;
    Harness h(MakeModel(spec), options);
    ASSERT_TRUE(h.Admit(1, Tokens(Seq(2000))).ok());
    for (int i = 0; i < 10; ++i) {
      h.Pump();
      h.CompleteOne();
    }
    ASSERT_TRUE(h.Admit(2, Tokens(Seq(3))).ok());
    int rounds = 0;
    while (!h.outcomes[2].done && rounds < 10000) {
      h.Pump();
      h.CompleteOne();
      ++rounds;
    }
    ASSERT_TRUE(h.outcomes[2].done);
    if (wait_rounds == 0) {
      EXPECT_TRUE(h.outcomes[1].done) << "the rule off: the short request finished before the long one";
      EXPECT_GT(rounds, 1000);
    } else {
      // 3 steps x 2 layers + head = 7 cells, each waiting at most wait_rounds decisions plus the
      // lookahead's rounds in flight.
      EXPECT_LE(rounds, 7 * (wait_rounds + 1) + 10) << "max_type_wait_rounds " << wait_rounds;
      EXPECT_FALSE(h.outcomes[1].done);
    }
    h.RunToEnd();
    EXPECT_TRUE(h.outcomes[1].done);
    for (RequestId id : {1, 2}) EXPECT_EQ(DecodeLogits(h.outcomes[id].result.logits), h.ExpectedHead(id)) << id;
    EXPECT_EQ(h.fake.Violations(), "");
  }
}

TEST(Scheduler, ATypeThatFillsItsMaxBatchGoesFirstForABoundedNumberOfRounds) {
  RequestInput pair, chain;
  pair.tree = ParseTreeSexpr("(1 2)").value();
  pair.has_tree = true;
  chain.tree = ParseTreeSexpr("(((1 2) 3) 4)").value();  // one internal cell ready at a time
  chain.has_tree = true;
  for (int fill_first : {0, 1}) {
    SchedulerOptions options = Options(Policy::kCellular, /*lookahead=*/4);
    options.fill_first_rounds = fill_first;
    Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1, /*max_batch=*/3)), options);
    const Model& m = *h.model;
    ASSERT_TRUE(h.Admit(1, pair).ok());
    for (RequestId id = 2; id <= 4; ++id) ASSERT_TRUE(h.Admit(id, chain).ok());  // 12 more leaves
    ASSERT_EQ(h.Pump(), 4);  // the lookahead is full
    std::vector<int> types;
    for (const Round& r : h.device) types.push_back(r.batch.type);
    // First request 1's two leaves and request 2's first (the oldest's type, and full); request
    // 1's root is ready then, and never full (one or two internal cells are ready at a time).
    EXPECT_EQ(types[0], m.leaf_type());
    if (fill_first == 0) {
      // Oldest first: request 1's root, then its head, then leaves again.
      EXPECT_EQ(types[1], m.internal_type());
      EXPECT_EQ(types[2], m.head_type());
      EXPECT_EQ(types[3], m.leaf_type());
    } else {
      // One full round of leaves goes first, then request 1's root: it waited one round, no more.
      EXPECT_EQ(types[1], m.leaf_type());
      EXPECT_EQ(h.device[1].batch.rows.size(), 3u);
      EXPECT_EQ(types[2], m.internal_type());
      EXPECT_EQ(types[3], m.leaf_type());  // request 1's head is the oldest again: passed over once
    }
    h.RunToEnd();
    for (RequestId id = 1; id <= 4; ++id) {
      ASSERT_TRUE(h.outcomes[id].done) << id;
      EXPECT_EQ(DecodeLogits(h.outcomes[id].result.logits), h.ExpectedHead(id)) << id;
    }
    EXPECT_EQ(h.fake.Violations(), "");
    EXPECT_EQ(h.scheduler->slots_in_use(), 0);
  }
}

// "Full" means exactly max_batch ready cells: request 2's 4 leaves less the one the first round
// took leave 3, a full batch of 3, which goes before request 1's root.
TEST(Scheduler, ExactlyMaxBatchReadyCellsCountAsFull) {
  RequestInput pair, chain;
  pair.tree = ParseTreeSexpr("(1 2)").value();
  pair.has_tree = true;
  chain.tree = ParseTreeSexpr("(((1 2) 3) 4)").value();
  chain.has_tree = true;
  SchedulerOptions options = Options(Policy::kCellular, /*lookahead=*/2);
  options.fill_first_rounds = 1;
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1, /*max_batch=*/3)), options);
  ASSERT_TRUE(h.Admit(1, pair).ok());
  ASSERT_TRUE(h.Admit(2, chain).ok());
  ASSERT_EQ(h.Pump(), 2);
  EXPECT_EQ(h.device[0].batch.rows.size(), 3u);  // request 1's two leaves and request 2's first
  EXPECT_EQ(h.device[1].batch.type, h.model->leaf_type());
  EXPECT_EQ(h.device[1].batch.rows.size(), 3u);
  h.RunToEnd();
  EXPECT_TRUE(h.outcomes[1].done && h.outcomes[2].done);
}

TEST(Scheduler, DeadlinesAndCancellationFreeEverything) {
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1)), Options(Policy::kCellular, 3));
  RequestInput tree;
  tree.tree = ParseTreeSexpr("((1 2) ((3 4) (5 6)))").value();
  tree.has_tree = true;
  ASSERT_TRUE(h.Admit(1, tree, /*deadline_us=*/h.clock.NowMicros() + 500).ok());
  ASSERT_TRUE(h.Admit(2, tree).ok());
  ASSERT_TRUE(h.Admit(3, tree).ok());
  h.Pump();  // rounds in flight for all three
  EXPECT_GT(h.scheduler->table_bytes(), 0);
  h.clock.AdvanceMicros(600);
  auto expired = h.scheduler->ExpireDeadlines();
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].status.code(), StatusCode::kDeadlineExceeded);
  h.Hear(expired);
  h.Hear(h.scheduler->Cancel(2, Cancelled("client went away")));
  EXPECT_TRUE(h.scheduler->Cancel(2, Cancelled("again")).empty());
  EXPECT_TRUE(h.scheduler->Cancel(99, Cancelled("unknown")).empty());
  h.RunToEnd();  // in-flight rounds of 1 and 2 complete and are ignored
  EXPECT_EQ(h.outcomes[1].answers, 1);
  EXPECT_EQ(h.outcomes[2].status.code(), StatusCode::kCancelled);
  EXPECT_EQ(h.outcomes[2].answers, 1);
  ASSERT_TRUE(h.outcomes[3].done);
  EXPECT_EQ(DecodeLogits(h.outcomes[3].result.logits), h.ExpectedHead(3));
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
  EXPECT_EQ(h.scheduler->requests_in(), 0);
  EXPECT_EQ(h.scheduler->table_bytes(), 0) << "expired, cancelled or done, a request's tables are freed";
  EXPECT_EQ(h.fake.Violations(), "");
}

// A deadline passes at its very microsecond; requests that expire together are answered oldest
// first, wherever their entries sit (request 4 reuses request 1's entry).
TEST(Scheduler, DeadlinesExpireAtTheirMicrosecondOldestFirst) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options(Policy::kCellular, 1));
  const int64_t at = h.clock.NowMicros() + 100;
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(1))).ok());
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(20)), at).ok());
  for (int i = 0; i < 100 && !h.outcomes[1].done; ++i) {
    h.Pump();
    h.CompleteOne();
  }
  ASSERT_TRUE(h.outcomes[1].done);
  ASSERT_FALSE(h.outcomes[2].done);
  ASSERT_TRUE(h.Admit(4, Tokens(Seq(20)), at).ok());  // takes request 1's entry, before request 2's
  EXPECT_EQ(h.scheduler->request_entries(), 2);
  h.clock.AdvanceMicros(99);
  EXPECT_TRUE(h.scheduler->ExpireDeadlines().empty());
  h.clock.AdvanceMicros(1);
  const std::vector<RequestEvent> expired = h.scheduler->ExpireDeadlines();
  ASSERT_EQ(expired.size(), 2u);
  EXPECT_EQ(expired[0].id, 2u);
  EXPECT_EQ(expired[1].id, 4u);
  EXPECT_EQ(expired[1].status.code(), StatusCode::kDeadlineExceeded);
}

// While a padded group runs, newcomers wait for it to end, not for the clock: no wake-up is due
// for them until then.
TEST(Scheduler, NoWakeupForAGroupThatCannotFormYet) {
  SchedulerOptions o = GroupOptions(Policy::kPadded, 1);
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(6))).ok());
  ASSERT_GT(h.Pump(), 0);  // a group of 1 at once
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(2))).ok());
  EXPECT_EQ(h.scheduler->NextWakeupMicros(), -1);
  h.RunToEnd();
  EXPECT_TRUE(h.outcomes[1].done && h.outcomes[2].done);
}

TEST(Scheduler, NextWakeupIsTheEarliestDeadline) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options());
  EXPECT_EQ(h.scheduler->NextWakeupMicros(), -1);
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(3)), 9000).ok());
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(3)), 7000).ok());
  EXPECT_EQ(h.scheduler->NextWakeupMicros(), 7000);
}

TEST(Scheduler, QueueBoundRejectsAtOnce) {
  SchedulerOptions o = Options();
  o.max_requests = 2;
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(3))).ok());
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(3))).ok());
  EXPECT_EQ(h.Admit(3, Tokens(Seq(3))).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(h.scheduler->Admit(1, MustBuild(h.model, Tokens(Seq(2)))).code(), StatusCode::kInvalidArgument);
  h.RunToEnd();
  EXPECT_TRUE(h.Admit(3, Tokens(Seq(3))).ok());  // room again
}

TEST(Scheduler, ExhaustedPoolShedsTheNewestRequestAndTheRestFinish) {
  SchedulerOptions o = Options(Policy::kCellular, 1);
  o.state_slots = 8;  // 7 usable
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1)), o);
  RequestInput small, big;
  small.tree = ParseTreeSexpr("(1 2)").value();
  small.has_tree = true;
  std::string s = "1";
  for (int i = 2; i <= 9; ++i) s = "(" + s + " " + std::to_string(i) + ")";  // 9 leaves
  big.tree = ParseTreeSexpr(s).value();
  big.has_tree = true;
  ASSERT_TRUE(h.Admit(1, small).ok());
  ASSERT_TRUE(h.Admit(2, big).ok());
  ASSERT_TRUE(h.Admit(3, small).ok());
  h.RunToEnd();
  EXPECT_TRUE(h.outcomes[1].done);
  EXPECT_TRUE(h.outcomes[3].done) << h.outcomes[3].status.ToString();
  EXPECT_EQ(h.outcomes[2].status.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
  EXPECT_EQ(h.fake.Violations(), "");
}

// A ready head needs no slot: when the oldest type's next cell waits for one, the head runs (its
// request finishes and frees its slots) before any request is shed for lack of them.
TEST(Scheduler, AReadyHeadRunsBeforeARequestIsShedForSlots) {
  for (int lookahead : {1, 5}) {
    SCOPED_TRACE("lookahead " + std::to_string(lookahead));
    SchedulerOptions o = Options(Policy::kCellular, lookahead);
    o.state_slots = 2;
    Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
    ASSERT_TRUE(h.Admit(1, Tokens({5, 6, 7})).ok());
    ASSERT_TRUE(h.Admit(2, Tokens({8})).ok());
    h.RunToEnd();
    EXPECT_TRUE(h.outcomes[1].done) << h.outcomes[1].status.ToString();
    EXPECT_TRUE(h.outcomes[2].done) << h.outcomes[2].status.ToString();
    EXPECT_EQ(h.scheduler->slots_in_use(), 0);
    EXPECT_EQ(h.fake.Violations(), "");
  }
}

// A finished request's id may come back: the group policies hold their group by admission, so the
// newcomer is not taken for a member of the group that has ended (which waited for it for good).
TEST(Scheduler, AnIdThatComesBackAfterItsRequestEndedRuns) {
  for (Policy policy : {Policy::kSequential, Policy::kPadded, Policy::kBucketed, Policy::kCellular}) {
    SCOPED_TRACE(PolicyName(policy));
    Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options(policy, 2));
    ASSERT_TRUE(h.Admit(5, Tokens({5, 6})).ok());
    h.RunToEnd();
    ASSERT_TRUE(h.outcomes[5].done);
    h.outcomes.erase(5);
    ASSERT_TRUE(h.Admit(5, Tokens({7, 8, 9})).ok());
    h.clock.AdvanceMicros(1000000);  // past any group wait
    h.RunToEnd();
    EXPECT_TRUE(h.outcomes[5].done) << h.outcomes[5].status.ToString();
    EXPECT_EQ(h.scheduler->requests_in(), 0);
  }
}

TEST(Scheduler, Seq2SeqGrowsInTheWorkerAndStreamsTokens) {
  Harness h(MakeModel(SmallSpec(ModelKind::kSeq2Seq, 2)), Options());
  // Request with origin o (its first token) decodes 3 tokens 10, 11, 12 then EOS; origin 9: max len.
  h.fake.head_argmax = [](int32_t origin, int step, const CellType&) {
    return origin == 9 ? 10 : (step < 3 ? 10 + step : 2);
  };
  ASSERT_TRUE(h.Admit(1, Tokens({5, 6, 7})).ok());
  ASSERT_TRUE(h.Admit(2, Tokens({9, 6}, /*max_decode_len=*/5)).ok());
  h.RunToEnd();
  ASSERT_TRUE(h.outcomes[1].done);
  EXPECT_EQ(h.outcomes[1].result.tokens, (std::vector<int32_t>{10, 11, 12, 2}));
  EXPECT_EQ(h.outcomes[1].streamed, h.outcomes[1].result.tokens);
  ASSERT_TRUE(h.outcomes[2].done);
  EXPECT_EQ(h.outcomes[2].result.tokens, std::vector<int32_t>(5, 10));
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
  EXPECT_EQ(h.fake.Violations(), "");
}

TEST(Scheduler, DeviceFailureFailsOnlyTheRequestsInThatRound) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1, /*max_batch=*/1)), Options(Policy::kCellular, 1));
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(4))).ok());
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(4))).ok());
  h.fake.fail_batch = [](size_t index, const BatchRecord&) { return index == 0; };  // request 1's first cell
  h.RunToEnd();
  EXPECT_TRUE(h.outcomes[1].failed);
  EXPECT_EQ(h.outcomes[1].status.code(), StatusCode::kInternal);
  EXPECT_TRUE(h.outcomes[2].done);
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
}

TEST(Scheduler, SequentialRunsOneRequestAtATimeWithBatchOne) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 2)), Options(Policy::kSequential));
  for (RequestId id = 1; id <= 4; ++id) ASSERT_TRUE(h.Admit(id, Tokens(Seq(5))).ok());
  std::vector<RequestId> finish_order;
  for (int i = 0; i < 10000 && h.scheduler->requests_in() > 0; ++i) {
    h.Pump();
    h.CompleteOne();
    for (auto& [id, o] : h.outcomes)
      if (o.done && std::find(finish_order.begin(), finish_order.end(), id) == finish_order.end())
        finish_order.push_back(id);
  }
  EXPECT_EQ(h.max_rows, 1u);
  EXPECT_EQ(finish_order, (std::vector<RequestId>{1, 2, 3, 4}));
  for (RequestId id = 1; id <= 4; ++id) EXPECT_EQ(DecodeLogits(h.outcomes[id].result.logits), h.ExpectedHead(id));
}

TEST(Scheduler, PaddedWaitsForAGroupThenPadsToItsLongestMember) {
  SchedulerOptions o = GroupOptions(Policy::kPadded, 3);
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(2))).ok());
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(6))).ok());
  EXPECT_EQ(h.Pump(), 0);  // 2 < B and nobody waited T yet
  EXPECT_EQ(h.scheduler->NextWakeupMicros(), 1000 + 5000);
  h.clock.AdvanceMicros(5000);
  EXPECT_GT(h.Pump(), 0);  // the wait is over: a group of 2
  ASSERT_TRUE(h.Admit(3, Tokens(Seq(1))).ok());  // a newcomer waits for the group to finish
  h.RunToEnd();
  for (RequestId id = 1; id <= 3; ++id) {
    ASSERT_TRUE(h.outcomes[id].done) << id;
    EXPECT_EQ(DecodeLogits(h.outcomes[id].result.logits), h.ExpectedHead(id)) << id;
  }
  // Group {1, 2}: 6 lstm rounds of width 2 (request 1 padded for 4 steps); group {3}: 1 round.
  EXPECT_EQ(h.scheduler->stats().padding_rows, 4);
  EXPECT_EQ(h.fake.padding_rows, 4);
  EXPECT_EQ(h.fake.Violations(), "");
}

// Padded serving of seq2seq encodes the whole group (padded to its longest source), then decodes
// it: decoder cells wait for every member's encoder, so each decoder step is one round padded
// once. (Decoding beside the encoder padded the decoder twice: 26 padding rows here, not 14.)
TEST(Scheduler, PaddedSeq2SeqEncodesTheWholeGroupBeforeItDecodes) {
  SchedulerOptions o = GroupOptions(Policy::kPadded, 3);
  Harness h(MakeModel(SmallSpec(ModelKind::kSeq2Seq, 2)), o);
  h.fake.head_argmax = [](int32_t, int, const CellType&) { return 2; };  // EOS at once: one step
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(1))).ok());
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(2))).ok());
  ASSERT_TRUE(h.Admit(3, Tokens(Seq(5))).ok());
  h.RunToEnd();
  for (RequestId id = 1; id <= 3; ++id) {
    ASSERT_TRUE(h.outcomes[id].done) << id;
    EXPECT_EQ(h.outcomes[id].result.tokens, std::vector<int32_t>{2}) << id;
  }
  // Encoder: 2 layers x 5 steps x 3 rows = 30 rows for 2 x (1 + 2 + 5) = 16 cells; the decoder's
  // one step: 2 layers x 3 rows, all real.
  EXPECT_EQ(h.scheduler->stats().padding_rows, 14);
  EXPECT_EQ(h.fake.padding_rows, 14);
  EXPECT_EQ(h.fake.Violations(), "");
}

TEST(Scheduler, BucketedGroupsRequestsOfSimilarLength) {
  SchedulerOptions o = GroupOptions(Policy::kBucketed, 2);
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(3))).ok());   // bucket 0
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(12))).ok());  // bucket 1
  ASSERT_TRUE(h.Admit(3, Tokens(Seq(2))).ok());   // bucket 0: full -> group {1, 3}
  ASSERT_TRUE(h.Admit(4, Tokens(Seq(10))).ok());  // bucket 1
  h.RunToEnd();
  for (RequestId id = 1; id <= 4; ++id) ASSERT_TRUE(h.outcomes[id].done) << id;
  // Only short requests padded against each other: 1 pad row (3 vs 2) + 2 (12 vs 10).
  EXPECT_EQ(h.scheduler->stats().padding_rows, 3);
}

// The queue-wait metric's input: each request's wait from Admit to the round that submits its
// first cell, reported in that round and in no other.
TEST(Scheduler, EachRoundReportsTheQueueWaitOfTheRequestsItStarts) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1, /*max_batch=*/2)), Options(Policy::kCellular, 1));
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(3))).ok());  // t = 1000
  h.clock.AdvanceMicros(100);
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(3))).ok());  // t = 1100
  h.clock.AdvanceMicros(100);
  ASSERT_TRUE(h.Admit(3, Tokens(Seq(3))).ok());  // t = 1200
  h.clock.AdvanceMicros(50);
  std::map<RequestId, int64_t> admitted = {{1, 1000}, {2, 1100}, {3, 1200}};
  std::vector<int64_t> waits;
  int rounds = 0;
  for (int i = 0; i < 1000 && h.scheduler->requests_in() > 0; ++i) {
    while (auto r = h.scheduler->NextRound()) {
      if (rounds++ == 0) {
        // Batch of 2, oldest first: requests 1 and 2 start, 250 and 150 us after their Admit.
        EXPECT_EQ(r->first_cell_waits_us, (std::vector<int64_t>{250, 150}));
      }
      for (int64_t w : r->first_cell_waits_us) waits.push_back(w);
      if (!r->first_cell_waits_us.empty() && rounds > 1) {
        // Only request 3 is left to start; it starts now.
        EXPECT_EQ(r->first_cell_waits_us, (std::vector<int64_t>{h.clock.NowMicros() - admitted[3]}));
      }
      h.device.push_back(std::move(*r));
    }
    h.CompleteOne();
    h.clock.AdvanceMicros(100);
  }
  EXPECT_EQ(h.scheduler->requests_in(), 0);
  ASSERT_EQ(waits.size(), 3u);  // once per request
  EXPECT_GT(waits[2], 50);       // request 3 waited for a free row

  // Padded: the wait includes the time the group took to form.
  SchedulerOptions o = GroupOptions(Policy::kPadded, 4);
  Harness p(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  ASSERT_TRUE(p.Admit(1, Tokens(Seq(2))).ok());
  EXPECT_FALSE(p.scheduler->NextRound().has_value());
  p.clock.AdvanceMicros(5000);
  auto first = p.scheduler->NextRound();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->first_cell_waits_us, (std::vector<int64_t>{5000}));
  auto second = p.scheduler->NextRound();
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->first_cell_waits_us.empty());
}

// Many requests come and go under every policy: admitted while others run, cancelled, timed out,
// so the scheduler's request entries, slots and queues are reused many times over. Every
// admitted request must be answered exactly once, with its own result (or the reason it was
// stopped), and nothing may be left behind.
TEST(Scheduler, RequestsComingAndGoingAreEachAnsweredOnceWithTheirOwnResult) {
  struct Case {
    Policy policy;
    ModelKind kind;
  };
  for (Case c : {Case{Policy::kCellular, ModelKind::kLstm}, Case{Policy::kCellular, ModelKind::kTreeLstm},
                 Case{Policy::kPadded, ModelKind::kLstm}, Case{Policy::kBucketed, ModelKind::kLstm},
                 Case{Policy::kSequential, ModelKind::kLstm}}) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      SCOPED_TRACE(std::string(PolicyName(c.policy)) + " " + ModelKindName(c.kind) + " seed " +
                   std::to_string(seed));
      std::mt19937 rng(seed);
      SchedulerOptions o = Options(c.policy, 1 + static_cast<int>(seed % 3));
      o.max_requests = 12;
      o.padded_batch = 3;
      o.padded_wait_us = 2000;
      o.bucket_bounds = {4, 8, 16};
      Harness h(MakeModel(SmallSpec(c.kind, 2, /*max_batch=*/4)), o);
      RequestId next = 1;
      std::set<RequestId> cancelled, with_deadline;
      auto random_input = [&] {
        const int n = 1 + static_cast<int>(rng() % 14);
        if (c.kind == ModelKind::kLstm) return Tokens(Seq(n, static_cast<int32_t>(rng() % 9)));
        std::string sexpr = std::to_string(1 + rng() % 30);
        for (int i = 1; i < n; ++i)
          sexpr = rng() % 2 ? "(" + sexpr + " " + std::to_string(1 + rng() % 30) + ")"
                            : "(" + std::to_string(1 + rng() % 30) + " " + sexpr + ")";
        RequestInput tree;
        tree.tree = ParseTreeSexpr(sexpr).value();
        tree.has_tree = true;
        return tree;
      };
      for (int step = 0; step < 1500; ++step) {
        switch (rng() % 8) {
          case 0:
          case 1:
          case 2: {  // a new request, now and then with a deadline
            const bool deadline = rng() % 6 == 0;
            const int64_t at = deadline ? h.clock.NowMicros() + 500 + rng() % 5000 : 0;
            const Status admitted = h.Admit(next, random_input(), at);
            if (admitted.ok()) {
              if (deadline) with_deadline.insert(next);
            } else {
              EXPECT_EQ(admitted.code(), StatusCode::kResourceExhausted);  // max_requests in
              h.twins.erase(next);
            }
            ++next;
            break;
          }
          case 3: {  // a client goes away
            const RequestId id = 1 + rng() % next;
            const auto events = h.scheduler->Cancel(id, Cancelled("client went away"));
            if (!events.empty()) cancelled.insert(id);
            h.Hear(events);
            break;
          }
          case 4:
            h.clock.AdvanceMicros(rng() % 1500);
            h.Hear(h.scheduler->ExpireDeadlines());
            break;
          default:
            h.Pump();
            h.CompleteOne();
        }
      }
      h.RunToEnd();
      ASSERT_GT(h.twins.size(), 40u);
      int64_t done = 0, failed = 0;
      for (const auto& [id, twin] : h.twins) {
        SCOPED_TRACE("request " + std::to_string(id));
        const Outcome& o = h.outcomes[id];
        EXPECT_EQ(o.answers, 1);
        EXPECT_TRUE(h.handed_over[id].expired()) << "the scheduler still holds the graph";
        if (o.done) {
          ++done;
          EXPECT_EQ(DecodeLogits(o.result.logits), h.ExpectedHead(id));
        } else {
          ++failed;
          if (cancelled.count(id)) {
            EXPECT_EQ(o.status.code(), StatusCode::kCancelled);
          } else {
            EXPECT_TRUE(with_deadline.count(id)) << o.status.ToString();
            EXPECT_EQ(o.status.code(), StatusCode::kDeadlineExceeded);
          }
        }
      }
      EXPECT_GT(done, 20);
      EXPECT_EQ(h.scheduler->stats().requests_done, done);
      EXPECT_EQ(h.scheduler->stats().requests_failed, failed);
      EXPECT_EQ(h.scheduler->stats().rounds, static_cast<int64_t>(h.rounds_seen));
      EXPECT_EQ(h.scheduler->stats().cells, static_cast<int64_t>(h.real_rows_seen));
      EXPECT_EQ(h.scheduler->requests_in(), 0);
      EXPECT_EQ(h.scheduler->slots_in_use(), 0);
      EXPECT_EQ(h.scheduler->outstanding_cells(), 0);
      EXPECT_EQ(h.scheduler->rounds_in_flight(), 0);
      EXPECT_LE(h.scheduler->request_entries(), o.max_requests);  // entries reused, not leaked
      EXPECT_EQ(h.fake.Violations(), "");
    }
  }
}

// Sequential: a request starts only when the one before it has been answered.
TEST(Scheduler, SequentialStartsARequestOnlyAfterThePreviousOneIsAnswered) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 2)), Options(Policy::kSequential, 3));
  for (RequestId id = 1; id <= 4; ++id) ASSERT_TRUE(h.Admit(id, Tokens(Seq(3))).ok());
  int started = 0;
  for (int i = 0; i < 1000 && h.scheduler->requests_in() > 0; ++i) {
    while (auto r = h.scheduler->NextRound()) {
      if (!r->first_cell_waits_us.empty()) {
        ++started;
        EXPECT_EQ(r->first_cell_waits_us.size(), 1u);
        int answered = 0;
        for (const auto& [id, o] : h.outcomes) answered += o.answers;
        EXPECT_EQ(answered, started - 1) << "request " << started << " started before the one before it ended";
      }
      h.device.push_back(std::move(*r));
    }
    h.CompleteOne();
  }
  EXPECT_EQ(started, 4);
}

// Padded and bucketed groups form the moment they may: B requests waiting (exactly B), or the
// oldest one has waited T (exactly T); never a microsecond later, never earlier.
TEST(Scheduler, GroupsFormExactlyAtBRequestsOrAfterTheWait) {
  for (Policy policy : {Policy::kPadded, Policy::kBucketed}) {
    SCOPED_TRACE(PolicyName(policy));
    SchedulerOptions o = GroupOptions(policy, 3);
    {
      Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
      ASSERT_TRUE(h.Admit(1, Tokens(Seq(2))).ok());
      ASSERT_TRUE(h.Admit(2, Tokens(Seq(3))).ok());
      EXPECT_EQ(h.Pump(), 0);
      ASSERT_TRUE(h.Admit(3, Tokens(Seq(2))).ok());  // the third of the same bucket
      EXPECT_GT(h.Pump(), 0) << "a full group waited";
    }
    {
      Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
      ASSERT_TRUE(h.Admit(1, Tokens(Seq(2))).ok());
      EXPECT_EQ(h.scheduler->NextWakeupMicros(), 1000 + 5000);
      h.clock.AdvanceMicros(4999);
      EXPECT_EQ(h.Pump(), 0) << "formed before the wait was over";
      h.clock.AdvanceMicros(1);
      EXPECT_GT(h.Pump(), 0) << "not formed when the wait was over";
    }
  }
}

// Bucketed: of the buckets ready to go, the one whose oldest request is oldest goes first, even
// when a younger bucket is full.
// Bucketed: a full bucket goes at once, though an older request waits (not yet timed out) in
// another bucket.
TEST(Scheduler, BucketedStartsAFullBucketWhileAnOlderOneStillWaits) {
  SchedulerOptions o = GroupOptions(Policy::kBucketed, 2);
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  h.clock.AdvanceMicros(20000);                     // times well past T
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(10))).ok());  // bucket 1, alone, waits until 26000
  h.clock.AdvanceMicros(100);
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(2))).ok());   // bucket 0
  ASSERT_TRUE(h.Admit(3, Tokens(Seq(3))).ok());   // bucket 0: full
  ASSERT_GT(h.Pump(), 0);
  EXPECT_EQ(h.first_round_rows, 2u);  // requests 2 and 3
  h.RunToEnd();
  for (RequestId id = 1; id <= 3; ++id) EXPECT_TRUE(h.outcomes[id].done) << id;
}

TEST(Scheduler, BucketedStartsTheReadyBucketWithTheOldestRequest) {
  SchedulerOptions o = GroupOptions(Policy::kBucketed, 2);
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), o);
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(10))).ok());  // bucket 1, alone
  h.clock.AdvanceMicros(5000);                      // ...and now timed out
  ASSERT_TRUE(h.Admit(2, Tokens(Seq(2))).ok());   // bucket 0
  ASSERT_TRUE(h.Admit(3, Tokens(Seq(3))).ok());   // bucket 0: full
  h.RunToEnd();
  ASSERT_EQ(h.outcomes.size(), 3u);
  for (RequestId id = 1; id <= 3; ++id) ASSERT_TRUE(h.outcomes[id].done) << id;
  EXPECT_EQ(h.first_round_rows, 1u);  // request 1's group (of 1) ran first, not bucket 0's (of 2)
  EXPECT_EQ(h.scheduler->stats().padding_rows, 1);  // only 2 tokens against 3 in bucket 0
}

// A slot is freed as soon as its last reader is submitted: one running lstm request of one layer
// holds one slot (its latest h and c), whichever slot that is.
TEST(Scheduler, ASlotIsFreedWhenItsLastReaderIsSubmitted) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options(Policy::kCellular, 1));
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(12))).ok());
  for (int step = 0; step < 12; ++step) {
    ASSERT_EQ(h.Pump(), 1);
    EXPECT_EQ(h.scheduler->slots_in_use(), 1) << "step " << step;
    h.CompleteOne();
  }
  h.RunToEnd();
  EXPECT_TRUE(h.outcomes[1].done);
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
}

// A completion for a round the scheduler does not know (already completed, or never submitted)
// is ignored: no answer, nothing freed twice.
TEST(Scheduler, ACompletionOfAnUnknownRoundIsIgnored) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1)), Options(Policy::kCellular, 2));
  ASSERT_TRUE(h.Admit(1, Tokens(Seq(4))).ok());
  ASSERT_EQ(h.Pump(), 2);
  const Round first = h.device.front();
  h.CompleteOne();
  EXPECT_TRUE(h.scheduler->OnRoundDone(first.id, h.fake.Run(first.batch)).empty());  // again
  EXPECT_TRUE(h.scheduler->OnRoundDone(first.id + 1000, BatchOutput{}).empty());
  EXPECT_EQ(h.scheduler->rounds_in_flight(), 1);
  h.RunToEnd();
  EXPECT_EQ(h.outcomes[1].answers, 1);
  EXPECT_EQ(h.scheduler->slots_in_use(), 0);
}

// Each option at its smallest allowed value is accepted and one below it refused, with a message
// that names the option.
TEST(Scheduler, RejectsBadOptions) {
  auto model = MakeModel(SmallSpec(ModelKind::kLstm, 1));
  FakeClock clock;
  struct Bound {
    const char* name;
    void (*set)(SchedulerOptions&, int64_t);
    int64_t lowest;
  };
  const Bound bounds[] = {
      {"lookahead", [](SchedulerOptions& o, int64_t v) { o.lookahead = static_cast<int>(v); }, 1},
      {"fill_first_rounds", [](SchedulerOptions& o, int64_t v) { o.fill_first_rounds = static_cast<int>(v); }, 0},
      {"state_slots", [](SchedulerOptions& o, int64_t v) { o.state_slots = static_cast<int32_t>(v); }, 2},
      {"max_requests", [](SchedulerOptions& o, int64_t v) { o.max_requests = v; }, 1},
      {"padded_batch", [](SchedulerOptions& o, int64_t v) { o.padded_batch = v; }, 1},
      {"padded_wait_us", [](SchedulerOptions& o, int64_t v) { o.padded_wait_us = v; }, 0},
  };
  for (const Bound& b : bounds) {
    SCOPED_TRACE(b.name);
    SchedulerOptions ok, bad;
    b.set(ok, b.lowest);
    b.set(bad, b.lowest - 1);
    EXPECT_TRUE(Scheduler::Create(model.get(), ok, &clock).ok());
    const Status refused = Scheduler::Create(model.get(), bad, &clock).status();
    EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(refused.message().find(b.name), std::string::npos) << refused.ToString();
  }
  SchedulerOptions forever;  // arrival + wait would overflow the wakeup time
  forever.padded_wait_us = INT64_MAX;
  EXPECT_EQ(Scheduler::Create(model.get(), forever, &clock).status().code(), StatusCode::kInvalidArgument);
  SchedulerOptions descending;
  std::reverse(descending.bucket_bounds.begin(), descending.bucket_bounds.end());
  EXPECT_EQ(Scheduler::Create(model.get(), descending, &clock).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(nullptr, SchedulerOptions{}, &clock).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(model.get(), SchedulerOptions{}, nullptr).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParsePolicy("fifo").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParsePolicy("padded").value(), Policy::kPadded);
}

}  // namespace
}  // namespace cellserve
