#include "runtime/sync_executor.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/tree.h"
#include "tests/unit/runtime/fake_backend.h"

namespace cellserve {
namespace {

using runtime_testing::BatchRecord;
using runtime_testing::DecodeLogits;
using runtime_testing::FakeBackend;
using runtime_testing::GraphFingerprints;
using runtime_testing::LogitsMask;
using runtime_testing::MakeModel;
using runtime_testing::MustBuild;
using runtime_testing::SmallSpec;
using runtime_testing::Tokens;

using Graphs = std::vector<std::unique_ptr<RequestGraph>>;
using Results = std::vector<StatusOr<RequestResult>>;

// A model, the fake backend it is registered on, and an executor.
struct Harness {
  Harness(std::shared_ptr<const Model> m, int32_t slots) : model(std::move(m)) {
    EXPECT_TRUE(fake.RegisterModel(*model, slots).ok());
    exec = std::make_unique<SyncExecutor>(&fake, model.get(), slots);
  }
  // Runs the graphs; fake.batches then holds this run's batches only.
  Results Run(Graphs& graphs) {
    fake.batches.clear();
    stats_before = exec->stats();
    return exec->Run(graphs);
  }

  std::shared_ptr<const Model> model;
  FakeBackend fake;
  std::unique_ptr<SyncExecutor> exec;
  SyncExecutorStats stats_before;
};

RequestInput Tree(const std::string& sexpr) {
  RequestInput in;
  in.has_tree = true;
  StatusOr<TreeInput> t = ParseTreeSexpr(sexpr);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  if (t.ok()) in.tree = *t;
  return in;
}

// Checks that hold after every Run: the fake saw no broken invariant, no slot leaked, no batch
// was too big, the stats add up, and every cell of every successful request ran exactly once
// (with the right inputs: the fingerprints match the graph's). Fingerprints of different requests
// must not collide: tests give every request its own first token / leaf tokens.
void ExpectCleanRun(const Harness& h, const Graphs& graphs, const Results& results) {
  EXPECT_TRUE(h.fake.violations.empty()) << h.fake.Violations();
  EXPECT_EQ(h.exec->slots_in_use(), 0) << "slots leaked";
  EXPECT_EQ(h.exec->slots_in_use(), 0);
  int64_t rows = 0;
  for (const BatchRecord& b : h.fake.batches) {
    EXPECT_LE(static_cast<int64_t>(b.rows()), h.model->spec().max_batch);
    EXPECT_GE(b.rows(), 1u);
    rows += static_cast<int64_t>(b.rows());
  }
  EXPECT_EQ(h.exec->stats().batches - h.stats_before.batches,
            static_cast<int64_t>(h.fake.batches.size()));
  EXPECT_EQ(h.exec->stats().cells - h.stats_before.cells, rows);
  ASSERT_EQ(results.size(), graphs.size());
  const std::multiset<uint64_t> executed = h.fake.ExecutedFingerprints();
  size_t all_cells = 0;
  bool all_ok = true;
  for (size_t r = 0; r < graphs.size(); ++r) {
    all_cells += graphs[r]->cells().size();
    all_ok = all_ok && results[r].ok();
    if (!results[r].ok()) continue;
    EXPECT_TRUE(graphs[r]->finished()) << "request " << r;
    std::map<uint64_t, size_t> want;
    for (uint64_t fp : GraphFingerprints(*graphs[r])) ++want[fp];
    for (const auto& [fp, n] : want)
      EXPECT_EQ(executed.count(fp), n) << "request " << r << ": a cell ran " << executed.count(fp)
                                       << " times, want " << n;
  }
  if (all_ok) {
    EXPECT_EQ(executed.size(), all_cells) << "cells ran that belong to no graph";
    EXPECT_EQ(static_cast<size_t>(rows), all_cells);
  }
}

// The fingerprint of each head cell of a graph, in order.
std::vector<uint64_t> HeadFingerprints(const RequestGraph& g) {
  const std::vector<uint64_t> fp = GraphFingerprints(g);
  std::vector<uint64_t> heads;
  for (size_t i = 0; i < g.cells().size(); ++i)
    if (g.cells()[i].type == g.model().head_type()) heads.push_back(fp[i]);
  return heads;
}

// Checks a classifier result against what the fake computed for the graph's head.
void ExpectClassifierResult(const RequestGraph& g, const RequestResult& res, int32_t label) {
  const int64_t classes = g.model().spec().classes;
  EXPECT_EQ(res.label, label);
  ASSERT_EQ(static_cast<int64_t>(res.logits.size()), classes);
  const std::vector<uint64_t> heads = HeadFingerprints(g);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(DecodeLogits(res.logits), heads[0] & LogitsMask(classes))
      << "the head read the wrong state";
  for (int64_t k = 4; k < classes; ++k) EXPECT_EQ(res.logits[k], -1.0f);
  EXPECT_TRUE(res.tokens.empty());
}

// ---- lstm ----

class LstmExecutorTest : public ::testing::Test {
 protected:
  // 10 requests with distinct first tokens (10 + r) and lengths 1..10 in a scrambled order.
  Graphs Requests(const std::shared_ptr<const Model>& m) {
    Graphs graphs;
    for (int r = 0; r < 10; ++r) {
      const int len = 1 + (r * 7) % 10;
      std::vector<int32_t> tokens = {10 + r};
      for (int t = 1; t < len; ++t) tokens.push_back((r * 13 + t * 5) % 50);
      graphs.push_back(MustBuild(m, Tokens(tokens)));
    }
    return graphs;
  }
  static int32_t Label(int32_t origin) { return (origin * 3 + 1) % 5; }
};

TEST_F(LstmExecutorTest, TenRequestsMaxBatchThree) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 2, /*max_batch=*/3)), 64);
  h.fake.head_argmax = [](int32_t origin, int, const CellType&) { return Label(origin); };
  Graphs graphs = Requests(h.model);
  size_t total_cells = 0;
  for (const auto& g : graphs) total_cells += g->cells().size();

  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  for (size_t r = 0; r < graphs.size(); ++r) {
    ASSERT_TRUE(results[r].ok()) << r << ": " << results[r].status().ToString();
    ExpectClassifierResult(*graphs[r], *results[r], Label(10 + static_cast<int32_t>(r)));
  }
  // Every cell exactly once, nothing else ran.
  EXPECT_EQ(h.fake.ExecutedFingerprints().size(), total_cells);
  EXPECT_EQ(h.exec->stats().cells, static_cast<int64_t>(total_cells));
  // It batched: some batch is full, and far fewer batches than cells.
  size_t biggest = 0;
  for (const BatchRecord& b : h.fake.batches) biggest = std::max(biggest, b.rows());
  EXPECT_EQ(biggest, 3u);
  EXPECT_LT(h.fake.batches.size(), total_cells / 2);
  // The first batch takes the first ready cells in request order.
  ASSERT_FALSE(h.fake.batches.empty());
  EXPECT_EQ(h.fake.batches[0].type, h.model->layer_type(0));
  EXPECT_EQ(h.fake.batches[0].origins, (std::vector<int32_t>{10, 11, 12}));
}

TEST_F(LstmExecutorTest, MaxBatchOneAndSingleLayer) {
  // One cell per batch: the 10 requests advance round-robin, each holding up to 2 slots.
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 1, /*max_batch=*/1)), 20);
  h.fake.head_argmax = [](int32_t origin, int, const CellType&) { return Label(origin); };
  Graphs graphs = Requests(h.model);
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  for (const BatchRecord& b : h.fake.batches) EXPECT_EQ(b.rows(), 1u);
  for (size_t r = 0; r < graphs.size(); ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
    ExpectClassifierResult(*graphs[r], *results[r], Label(10 + static_cast<int32_t>(r)));
  }
}

TEST_F(LstmExecutorTest, ExecutorIsReusable) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 3, 4)), 32);
  h.fake.head_argmax = [](int32_t origin, int, const CellType&) { return Label(origin); };
  for (int round = 0; round < 3; ++round) {
    Graphs graphs = Requests(h.model);
    Results results = h.Run(graphs);
    ExpectCleanRun(h, graphs, results);
    for (size_t r = 0; r < graphs.size(); ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
      ExpectClassifierResult(*graphs[r], *results[r], Label(10 + static_cast<int32_t>(r)));
    }
  }
  Graphs none;
  const int64_t batches = h.exec->stats().batches;
  EXPECT_TRUE(h.Run(none).empty());
  EXPECT_EQ(h.exec->stats().batches, batches);
}

TEST_F(LstmExecutorTest, BackendErrorFailsExactlyThatBatchsRequests) {
  Harness h(MakeModel(SmallSpec(ModelKind::kLstm, 2, /*max_batch=*/3)), 64);
  h.fake.head_argmax = [](int32_t origin, int, const CellType&) { return Label(origin); };
  std::set<int32_t> failed_origins;
  const int fail_type = h.model->layer_type(1);
  h.fake.fail_batch = [&](size_t, const BatchRecord& b) {
    if (!failed_origins.empty() || b.type != fail_type) return false;
    failed_origins.insert(b.origins.begin(), b.origins.end());
    return true;
  };
  Graphs graphs = Requests(h.model);
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  ASSERT_EQ(failed_origins.size(), 3u);  // a full batch of 3 requests
  int failed = 0;
  for (size_t r = 0; r < graphs.size(); ++r) {
    const int32_t origin = 10 + static_cast<int32_t>(r);
    if (failed_origins.count(origin)) {
      ++failed;
      EXPECT_EQ(results[r].status().code(), StatusCode::kInternal) << r;
      EXPECT_NE(results[r].status().message().find("injected"), std::string::npos)
          << results[r].status().ToString();
    } else {
      ASSERT_TRUE(results[r].ok()) << r << ": " << results[r].status().ToString();
      ExpectClassifierResult(*graphs[r], *results[r], Label(origin));
    }
  }
  EXPECT_EQ(failed, 3);
  // After the failure none of the failed requests' cells ran again.
  bool after = false;
  for (const BatchRecord& b : h.fake.batches) {
    if (b.failed) {
      after = true;
      continue;
    }
    if (!after) continue;
    for (int32_t o : b.origins) EXPECT_EQ(failed_origins.count(o), 0u) << "origin " << o;
  }
}

TEST(SyncExecutorTest, GraphForAnotherModelIsInvalidArgument) {
  const ModelSpec spec = SmallSpec(ModelKind::kLstm, 1);
  auto mine = MakeModel(spec);
  auto other = MakeModel(spec);  // same spec, another model
  Harness h(mine, 16);
  h.fake.head_argmax = [](int32_t, int, const CellType&) { return 4; };
  Graphs graphs;
  graphs.push_back(MustBuild(mine, Tokens({10, 1, 2})));
  graphs.push_back(MustBuild(other, Tokens({11, 3})));
  graphs.push_back(MustBuild(mine, Tokens({12})));
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  EXPECT_EQ(results[1].status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(results[1].status().message().find("another model"), std::string::npos);
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  ASSERT_TRUE(results[2].ok()) << results[2].status().ToString();
  ExpectClassifierResult(*graphs[0], *results[0], 4);
  ExpectClassifierResult(*graphs[2], *results[2], 4);
  for (const BatchRecord& b : h.fake.batches)
    for (int32_t o : b.origins) EXPECT_NE(o, 11) << "a cell of the foreign graph ran";
}

// ---- treelstm ----

TEST(TreeExecutorTest, TreesOfManyShapes) {
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1, /*max_batch=*/4)), 64);
  h.fake.head_argmax = [](int32_t origin, int, const CellType&) { return origin % 5; };
  // Leaf tokens distinct across requests (same tokens within one request are fine).
  const std::vector<std::string> trees = {"10", "(11 1)", "((12 2) 3)", "(13 (4 5))",
                                          "((14 6) ((7 8) (9 (20 21))))", "(15 15)",
                                          "((16 22) (23 24))"};
  Graphs graphs;
  for (const std::string& t : trees) graphs.push_back(MustBuild(h.model, Tree(t)));
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  for (size_t r = 0; r < graphs.size(); ++r) {
    ASSERT_TRUE(results[r].ok()) << trees[r] << ": " << results[r].status().ToString();
    ExpectClassifierResult(*graphs[r], *results[r], (10 + static_cast<int32_t>(r)) % 5);
  }
}

TEST(TreeExecutorTest, PoolTooSmallForOneBigRequest) {
  // 10 slots. The 20-leaf tree needs 20 at once for its leaves; the 2-leaf trees need 3 each.
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1)), 10);
  h.fake.head_argmax = [](int32_t origin, int, const CellType&) { return origin % 5; };
  std::string big = "30";  // leftmost leaf (origin) 30, then 19 more leaves 11..29
  for (int i = 11; i <= 29; ++i) big = "(" + big + " " + std::to_string(i) + ")";
  Graphs graphs;
  graphs.push_back(MustBuild(h.model, Tree("(40 3)")));
  graphs.push_back(MustBuild(h.model, Tree(big)));
  graphs.push_back(MustBuild(h.model, Tree("(41 4)")));
  graphs.push_back(MustBuild(h.model, Tree("(42 (5 6))")));
  ASSERT_EQ(graphs[1]->cells().size(), 40u);  // 20 leaves, 19 internal, head
  ASSERT_EQ(graphs[1]->cells()[0].token, 30);
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  ASSERT_FALSE(results[1].ok());
  EXPECT_EQ(results[1].status().code(), StatusCode::kResourceExhausted)
      << results[1].status().ToString();
  const int32_t origins[] = {40, 30, 41, 42};
  for (size_t r : {0u, 2u, 3u}) {
    ASSERT_TRUE(results[r].ok()) << r << ": " << results[r].status().ToString();
    ExpectClassifierResult(*graphs[r], *results[r], origins[r] % 5);
  }
  // The big request was shed once nothing could run; no head of it ever ran.
  for (const BatchRecord& b : h.fake.batches) {
    if (b.type != h.model->head_type()) continue;
    for (int32_t o : b.origins) EXPECT_NE(o, 30) << "the failed request reached its head";
  }
}

// A tree with exactly `capacity` leaves takes every slot in the leaf batch, then needs one more.
// When nothing can run, the newest request holding slots is shed; here that is the big one (the
// only one holding any), so it fails alone and the small requests behind it complete.
TEST(TreeExecutorTest, RequestThatFillsThePoolDoesNotStarveOthers) {
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1)), 10);
  std::string big = "30";  // 10 leaves: needs 11 slots at its peak
  for (int i = 11; i <= 19; ++i) big = "(" + big + " " + std::to_string(i) + ")";
  Graphs graphs;
  graphs.push_back(MustBuild(h.model, Tree(big)));
  graphs.push_back(MustBuild(h.model, Tree("(40 3)")));
  graphs.push_back(MustBuild(h.model, Tree("(41 4)")));
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  EXPECT_EQ(results[0].status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(results[1].ok()) << results[1].status().ToString();
  EXPECT_TRUE(results[2].ok()) << results[2].status().ToString();
}

TEST(TreeExecutorTest, PoolExactlyBigEnough) {
  // "(1 (2 3))": both leaves of (2 3) plus leaf 1 = 3 slots, then the inner node while
  // its children are held = 4. A pool of 4 must do.
  Harness h(MakeModel(SmallSpec(ModelKind::kTreeLstm, 1)), 4);
  Graphs graphs;
  graphs.push_back(MustBuild(h.model, Tree("(1 (2 3))")));
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  ExpectClassifierResult(*graphs[0], *results[0], (1 + 0) % 5);
}

// ---- seq2seq ----

class Seq2SeqExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = SmallSpec(ModelKind::kSeq2Seq, 2, /*max_batch=*/2);
    spec_.max_decode_len = 6;
  }
  // Request with origin o emits 3, 4, 5, ... for steps_[o] steps, then EOS (2).
  void InstallPolicy(Harness* h) {
    h->fake.head_argmax = [this](int32_t origin, int step, const CellType& t) {
      EXPECT_EQ(t.op, CellOp::kHeadArgmax);
      return step < steps_.at(origin) ? 3 + step : static_cast<int32_t>(spec_.eos_id);
    };
  }
  // The tokens the policy makes request `origin` produce under a decode limit.
  std::vector<int32_t> Expected(int32_t origin, int64_t limit) {
    std::vector<int32_t> out;
    for (int step = 0; step < limit; ++step) {
      if (step < steps_.at(origin)) {
        out.push_back(3 + step);
      } else {
        out.push_back(static_cast<int32_t>(spec_.eos_id));
        break;
      }
    }
    return out;
  }
  void ExpectScores(const RequestGraph& g, const RequestResult& res) {
    const std::vector<uint64_t> heads = HeadFingerprints(g);
    ASSERT_EQ(heads.size(), res.tokens.size());
    ASSERT_EQ(res.scores.size(), res.tokens.size());
    for (size_t i = 0; i < heads.size(); ++i)
      EXPECT_EQ(res.scores[i], static_cast<float>(heads[i] & 0xFFFF)) << "step " << i;
  }
  ModelSpec spec_;
  std::map<int32_t, int> steps_;
};

TEST_F(Seq2SeqExecutorTest, SequencesOfDifferentLengths) {
  Harness h(MakeModel(spec_), 64);
  InstallPolicy(&h);
  steps_ = {{10, 2}, {11, 0}, {12, 100}, {13, 100}, {14, 4}, {15, 5}, {16, 3}};
  const std::vector<int64_t> limits = {0, 0, 0, 3, 0, 1000, 2};  // 0 = the model's 6
  Graphs graphs;
  for (int r = 0; r < 7; ++r) {
    std::vector<int32_t> src = {10 + r};
    for (int t = 0; t < r % 4; ++t) src.push_back(20 + t);
    graphs.push_back(MustBuild(h.model, Tokens(src, limits[r])));
  }
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  const std::vector<std::vector<int32_t>> want = {
      {3, 4, 2}, {2}, {3, 4, 5, 6, 7, 8}, {3, 4, 5}, {3, 4, 5, 6, 2}, {3, 4, 5, 6, 7, 2}, {3, 4}};
  for (int r = 0; r < 7; ++r) {
    ASSERT_TRUE(results[r].ok()) << r << ": " << results[r].status().ToString();
    const int64_t limit = limits[r] == 0 ? 6 : std::min<int64_t>(limits[r], 6);
    EXPECT_EQ(results[r]->tokens, Expected(10 + r, limit)) << "request " << r;
    EXPECT_EQ(results[r]->tokens, want[r]) << "request " << r;
    ExpectScores(*graphs[r], *results[r]);
    EXPECT_TRUE(results[r]->logits.empty());
    // Encoder T*L + one decoder step (L + proj) per produced token.
    const size_t T = 1 + r % 4;
    EXPECT_EQ(graphs[r]->cells().size(), T * 2 + want[r].size() * 3) << "request " << r;
  }
}

TEST_F(Seq2SeqExecutorTest, BackendErrorMidDecodeFailsOnlyThatBatch) {
  Harness h(MakeModel(spec_), 64);
  InstallPolicy(&h);
  steps_ = {{10, 5}, {11, 5}, {12, 5}, {13, 5}, {14, 1}};
  std::set<int32_t> failed_origins;
  int proj_batches = 0;
  h.fake.fail_batch = [&](size_t, const BatchRecord& b) {
    if (b.type != h.model->head_type() || ++proj_batches != 3) return false;
    failed_origins.insert(b.origins.begin(), b.origins.end());
    return true;
  };
  Graphs graphs;
  for (int r = 0; r < 5; ++r) graphs.push_back(MustBuild(h.model, Tokens({10 + r, 7})));
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  ASSERT_FALSE(failed_origins.empty());
  ASSERT_LT(failed_origins.size(), 5u);
  for (int r = 0; r < 5; ++r) {
    if (failed_origins.count(10 + r)) {
      EXPECT_EQ(results[r].status().code(), StatusCode::kInternal) << r;
    } else {
      ASSERT_TRUE(results[r].ok()) << r << ": " << results[r].status().ToString();
      EXPECT_EQ(results[r]->tokens, Expected(10 + r, 6)) << r;
      ExpectScores(*graphs[r], *results[r]);
    }
  }
}

TEST_F(Seq2SeqExecutorTest, TightPoolStillCompletes) {
  // With L=2 a request holds at most a few slots at a time, whatever its length: the encoder
  // and decoder free each step's state after the next step read it.
  Harness h(MakeModel(spec_), 6);
  InstallPolicy(&h);
  steps_ = {{10, 100}};
  Graphs graphs;
  std::vector<int32_t> src(30, 9);
  src[0] = 10;
  graphs.push_back(MustBuild(h.model, Tokens(src)));
  Results results = h.Run(graphs);
  ExpectCleanRun(h, graphs, results);
  ASSERT_TRUE(results[0].ok()) << results[0].status().ToString();
  EXPECT_EQ(results[0]->tokens, Expected(10, 6));
}

}  // namespace
}  // namespace cellserve
