#include "runtime/cell_graph.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/tree.h"
#include "tests/unit/runtime/fake_backend.h"

namespace cellserve {
namespace {

using runtime_testing::MakeModel;
using runtime_testing::MustBuild;
using runtime_testing::SmallSpec;
using runtime_testing::Tokens;

// How many cells read each cell's output (as x_from or a state_from).
std::vector<int32_t> ReferenceCounts(const RequestGraph& g) {
  std::vector<int32_t> refs(g.cells().size(), 0);
  for (const Cell& c : g.cells()) {
    if (c.x_from >= 0) ++refs[c.x_from];
    for (CellId s : c.state_from)
      if (s >= 0) ++refs[s];
  }
  return refs;
}

// Every input refers to an earlier cell.
void ExpectTopological(const RequestGraph& g) {
  const auto& cells = g.cells();
  for (size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = cells[i];
    for (CellId in : {c.x_from, c.state_from[0], c.state_from[1]}) {
      EXPECT_GE(in, -1) << "cell " << i;
      EXPECT_LT(in, static_cast<CellId>(i)) << "cell " << i << " reads a later cell";
    }
    EXPECT_GE(c.type, 0) << "cell " << i;
    EXPECT_LT(c.type, static_cast<int32_t>(g.model().cell_types().size())) << "cell " << i;
  }
}

std::vector<int> HeadIds(const RequestGraph& g) {
  std::vector<int> heads;
  for (size_t i = 0; i < g.cells().size(); ++i)
    if (g.cells()[i].type == g.model().head_type()) heads.push_back(static_cast<int>(i));
  return heads;
}

void ExpectInvalid(std::shared_ptr<const Model> m, const RequestInput& in, const std::string& needle) {
  StatusOr<std::unique_ptr<RequestGraph>> g = BuildRequestGraph(std::move(m), in);
  ASSERT_FALSE(g.ok()) << "built unexpectedly; expected '" << needle << "'";
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument) << g.status().ToString();
  EXPECT_NE(g.status().message().find(needle), std::string::npos)
      << "message '" << g.status().message() << "' lacks '" << needle << "'";
}

HeadOutput Argmax(int32_t token, float value = 0.5f) {
  HeadOutput o;
  o.argmax = token;
  o.max_value = value;
  return o;
}

// ---- lstm ----

TEST(LstmGraphTest, ShapeOrderAndConsumers) {
  for (int64_t L : {1, 2, 3}) {
    for (int T : {1, 2, 5}) {
      SCOPED_TRACE("L=" + std::to_string(L) + " T=" + std::to_string(T));
      auto model = MakeModel(SmallSpec(ModelKind::kLstm, L));
      std::vector<int32_t> tokens;
      for (int t = 0; t < T; ++t) tokens.push_back(10 + 3 * t);
      auto g = MustBuild(model, Tokens(tokens));
      const auto& cells = g->cells();
      ASSERT_EQ(cells.size(), static_cast<size_t>(T * L + 1));
      ExpectTopological(*g);
      for (int t = 0; t < T; ++t) {
        for (int l = 0; l < L; ++l) {
          const Cell& c = cells[t * L + l];
          EXPECT_EQ(c.type, model->layer_type(l));
          EXPECT_EQ(c.token, l == 0 ? tokens[t] : -1);
          EXPECT_EQ(c.x_from, l == 0 ? -1 : t * L + l - 1);
          EXPECT_EQ(c.state_from[0], t == 0 ? -1 : (t - 1) * L + l);
          EXPECT_EQ(c.state_from[1], -1);
          EXPECT_FALSE(c.is_head());
        }
      }
      const Cell& head = cells.back();
      EXPECT_EQ(head.type, model->head_type());
      EXPECT_EQ(head.x_from, T * L - 1);  // top layer, last step
      EXPECT_EQ(head.token, -1);
      EXPECT_EQ(head.state_from[0], -1);
      EXPECT_TRUE(head.is_head());
      const std::vector<int32_t> refs = ReferenceCounts(*g);
      for (size_t i = 0; i < cells.size(); ++i)
        EXPECT_EQ(cells[i].consumers, refs[i]) << "cell " << i;
      EXPECT_EQ(HeadIds(*g), std::vector<int>{T * static_cast<int>(L)});
      EXPECT_EQ(g->input_length(), T);  // what the bucketed policy buckets by
      EXPECT_FALSE(g->finished());
    }
  }
}

TEST(LstmGraphTest, HeadOutputFinishesWithLogits) {
  auto model = MakeModel(SmallSpec(ModelKind::kLstm, 2));
  auto g = MustBuild(model, Tokens({4, 5, 6}));
  const size_t n = g->cells().size();
  const std::vector<float> logits = {0.1f, -2.0f, 3.5f, 0.0f, 1.0f};
  HeadOutput o;
  o.argmax = 2;
  o.max_value = 3.5f;
  o.logits = logits.data();
  o.count = 5;
  g->OnHeadOutput(static_cast<CellId>(n - 1), o);
  EXPECT_TRUE(g->finished());
  EXPECT_EQ(g->cells().size(), n);  // nothing appended
  EXPECT_EQ(g->result().label, 2);
  EXPECT_EQ(g->result().logits, logits);
  EXPECT_TRUE(g->result().tokens.empty());
}

TEST(LstmGraphTest, BoundaryTokensAccepted) {
  ModelSpec spec = SmallSpec(ModelKind::kLstm, 1);
  auto model = MakeModel(spec);
  std::vector<int32_t> tokens(static_cast<size_t>(spec.max_input_tokens), 0);
  tokens.back() = static_cast<int32_t>(spec.vocab_size - 1);
  auto g = MustBuild(model, Tokens(tokens));
  EXPECT_EQ(g->cells().size(), tokens.size() + 1);
  EXPECT_EQ(g->cells()[tokens.size() - 1].token, spec.vocab_size - 1);
}

// ---- treelstm ----

void CheckTree(const std::string& sexpr, const std::vector<int32_t>& leaf_tokens_in_order) {
  SCOPED_TRACE(sexpr);
  auto model = MakeModel(SmallSpec(ModelKind::kTreeLstm));
  StatusOr<TreeInput> tree = ParseTreeSexpr(sexpr);
  ASSERT_TRUE(tree.ok()) << tree.status().ToString();
  RequestInput in;
  in.tree = *tree;
  in.has_tree = true;
  auto g = MustBuild(model, in);
  const auto& cells = g->cells();
  const size_t n = leaf_tokens_in_order.size();
  ASSERT_EQ(cells.size(), 2 * n - 1 + 1);
  EXPECT_EQ(g->input_length(), static_cast<int64_t>(n));  // a tree's length is its leaves
  ExpectTopological(*g);
  std::vector<int32_t> leaf_tokens;
  size_t internal = 0;
  for (size_t i = 0; i + 1 < cells.size(); ++i) {
    const Cell& c = cells[i];
    EXPECT_EQ(c.consumers, 1) << "cell " << i;
    EXPECT_EQ(c.x_from, -1);
    if (c.type == model->leaf_type()) {
      EXPECT_GE(c.token, 0);
      EXPECT_EQ(c.state_from[0], -1);
      EXPECT_EQ(c.state_from[1], -1);
      leaf_tokens.push_back(c.token);
    } else {
      ASSERT_EQ(c.type, model->internal_type()) << "cell " << i;
      EXPECT_EQ(c.token, -1);
      EXPECT_GE(c.state_from[0], 0);
      EXPECT_GE(c.state_from[1], 0);
      EXPECT_NE(c.state_from[0], c.state_from[1]);
      ++internal;
    }
  }
  EXPECT_EQ(internal, n - 1);
  EXPECT_EQ(leaf_tokens, leaf_tokens_in_order);  // left to right
  const Cell& head = cells.back();
  EXPECT_EQ(head.type, model->head_type());
  EXPECT_EQ(head.x_from, static_cast<CellId>(cells.size()) - 2);  // the root
  EXPECT_TRUE(head.is_head());
  const std::vector<int32_t> refs = ReferenceCounts(*g);
  for (size_t i = 0; i < cells.size(); ++i) EXPECT_EQ(cells[i].consumers, refs[i]) << "cell " << i;
}

TEST(TreeGraphTest, ShapesAndConsumers) {
  CheckTree("7", {7});
  CheckTree("(3 4)", {3, 4});
  CheckTree("((4 5) 6)", {4, 5, 6});
  CheckTree("(4 (5 6))", {4, 5, 6});
  CheckTree("((1 2) ((3 4) (5 (6 7))))", {1, 2, 3, 4, 5, 6, 7});
}

TEST(TreeGraphTest, LeftAndRightChildrenKeptApart) {
  auto model = MakeModel(SmallSpec(ModelKind::kTreeLstm));
  // Root first in the node list (not post-order): the graph must still be topological.
  RequestInput in;
  in.has_tree = true;
  in.tree.nodes.resize(3);
  in.tree.nodes[0].children = {2, 1};  // left = node 2 (token 9), right = node 1 (token 8)
  in.tree.nodes[1].token = 8;
  in.tree.nodes[2].token = 9;
  auto g = MustBuild(model, in);
  const auto& cells = g->cells();
  ASSERT_EQ(cells.size(), 4u);
  ExpectTopological(*g);
  const Cell& root = cells[2];
  ASSERT_EQ(root.type, model->internal_type());
  EXPECT_EQ(cells[root.state_from[0]].token, 9);  // left
  EXPECT_EQ(cells[root.state_from[1]].token, 8);  // right
}

TEST(TreeGraphTest, HeadOutputFinishes) {
  auto model = MakeModel(SmallSpec(ModelKind::kTreeLstm));
  RequestInput in;
  in.has_tree = true;
  in.tree = *ParseTreeSexpr("(1 2)");
  auto g = MustBuild(model, in);
  const std::vector<float> logits = {1, 2, 3, 9, 4};
  HeadOutput o;
  o.argmax = 3;
  o.max_value = 9;
  o.logits = logits.data();
  o.count = 5;
  g->OnHeadOutput(3, o);
  EXPECT_TRUE(g->finished());
  EXPECT_EQ(g->result().label, 3);
  EXPECT_EQ(g->result().logits, logits);
}

// ---- seq2seq ----

class Seq2SeqGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = SmallSpec(ModelKind::kSeq2Seq, 2);
    spec_.max_decode_len = 5;
    model_ = MakeModel(spec_);
  }
  // Consumers equal references, except the last decoder step's cells: they count the next step
  // that is not (or never will be) appended, so exactly one more.
  void ExpectConsumers(const RequestGraph& g) {
    const auto& cells = g.cells();
    const std::vector<int32_t> refs = ReferenceCounts(g);
    const int L = static_cast<int>(spec_.layers);
    const size_t last_step_begin = cells.size() - 1 - L;
    for (size_t i = 0; i < cells.size(); ++i) {
      const int extra = i >= last_step_begin && i + 1 < cells.size() ? 1 : 0;
      EXPECT_EQ(cells[i].consumers, refs[i] + extra) << "cell " << i;
    }
    EXPECT_EQ(cells.back().consumers, 0);
  }
  ModelSpec spec_;
  std::shared_ptr<const Model> model_;
};

TEST_F(Seq2SeqGraphTest, InitialGraph) {
  const int L = 2, T = 3;
  const std::vector<int32_t> src = {11, 12, 13};
  auto g = MustBuild(model_, Tokens(src));
  const auto& cells = g->cells();
  ASSERT_EQ(cells.size(), static_cast<size_t>(T * L + L + 1));
  EXPECT_EQ(g->input_length(), T);  // the source tokens, whatever is decoded later
  ExpectTopological(*g);
  for (int t = 0; t < T; ++t) {
    for (int l = 0; l < L; ++l) {
      const Cell& c = cells[t * L + l];
      EXPECT_EQ(c.type, model_->layer_type(l));
      EXPECT_EQ(c.token, l == 0 ? src[t] : -1);
      EXPECT_EQ(c.x_from, l == 0 ? -1 : t * L + l - 1);
      EXPECT_EQ(c.state_from[0], t == 0 ? -1 : (t - 1) * L + l);
    }
  }
  for (int l = 0; l < L; ++l) {
    const Cell& d = cells[T * L + l];
    EXPECT_EQ(d.type, model_->decoder_layer_type(l));
    EXPECT_EQ(d.token, l == 0 ? spec_.bos_id : -1);
    EXPECT_EQ(d.x_from, l == 0 ? -1 : T * L + l - 1);
    EXPECT_EQ(d.state_from[0], (T - 1) * L + l);  // the encoder's final state, per layer
  }
  const Cell& proj = cells.back();
  EXPECT_EQ(proj.type, model_->head_type());
  EXPECT_EQ(proj.x_from, T * L + L - 1);
  EXPECT_TRUE(proj.is_head());
  EXPECT_EQ(HeadIds(*g), std::vector<int>{T * L + L});
  ExpectConsumers(*g);
  EXPECT_FALSE(g->finished());
}

TEST_F(Seq2SeqGraphTest, DecodesStepByStepUntilEos) {
  const int L = 2;
  auto g = MustBuild(model_, Tokens({5, 6}));
  size_t n = g->cells().size();
  ASSERT_EQ(n, 7u);
  std::vector<CellId> prev_step = {4, 5};
  for (int32_t tok : {7, 9, 7}) {
    const CellId proj = static_cast<CellId>(n - 1);
    g->OnHeadOutput(proj, Argmax(tok, tok * 0.25f));
    ASSERT_FALSE(g->finished());
    ASSERT_EQ(g->cells().size(), n + L + 1) << "after " << tok;
    ExpectTopological(*g);
    const auto& cells = g->cells();
    for (int l = 0; l < L; ++l) {
      const Cell& d = cells[n + l];
      EXPECT_EQ(d.type, model_->decoder_layer_type(l));
      EXPECT_EQ(d.token, l == 0 ? tok : -1);  // the previous step's output feeds layer 0
      EXPECT_EQ(d.state_from[0], prev_step[l]);
      EXPECT_EQ(d.x_from, l == 0 ? -1 : static_cast<CellId>(n + l - 1));
    }
    EXPECT_EQ(cells[n + L].type, model_->head_type());
    EXPECT_EQ(cells[n + L].x_from, static_cast<CellId>(n + L - 1));
    prev_step = {static_cast<CellId>(n), static_cast<CellId>(n + 1)};
    n = cells.size();
    ExpectConsumers(*g);
  }
  g->OnHeadOutput(static_cast<CellId>(n - 1), Argmax(static_cast<int32_t>(spec_.eos_id), 4.0f));
  EXPECT_TRUE(g->finished());
  EXPECT_EQ(g->cells().size(), n);  // EOS appends nothing
  EXPECT_EQ(g->result().tokens, (std::vector<int32_t>{7, 9, 7, 2}));
  EXPECT_EQ(g->result().scores, (std::vector<float>{1.75f, 2.25f, 1.75f, 4.0f}));
  EXPECT_TRUE(g->result().logits.empty());
  EXPECT_EQ(g->result().label, -1);
  ExpectConsumers(*g);
}

TEST_F(Seq2SeqGraphTest, EosFirstStep) {
  auto g = MustBuild(model_, Tokens({5}));
  const size_t n = g->cells().size();
  g->OnHeadOutput(static_cast<CellId>(n - 1), Argmax(static_cast<int32_t>(spec_.eos_id)));
  EXPECT_TRUE(g->finished());
  EXPECT_EQ(g->cells().size(), n);
  EXPECT_EQ(g->result().tokens, std::vector<int32_t>{2});
}

// Feeds non-EOS tokens until the graph finishes; returns how many steps it took.
int DecodeUntilFinished(RequestGraph* g, int limit = 1000) {
  int steps = 0;
  while (!g->finished() && steps < limit) {
    const size_t before = g->cells().size();
    g->OnHeadOutput(static_cast<CellId>(before - 1), Argmax(7));
    ++steps;
    if (g->finished()) {
      EXPECT_EQ(g->cells().size(), before) << "appended after the last step";
    }
  }
  return steps;
}

TEST_F(Seq2SeqGraphTest, StopsAtMaxDecodeLen) {
  auto g = MustBuild(model_, Tokens({5, 6}));  // request 0: the model's 5
  EXPECT_EQ(DecodeUntilFinished(g.get()), 5);
  EXPECT_EQ(g->result().tokens, std::vector<int32_t>(5, 7));
  EXPECT_EQ(g->cells().size(), 2u * 2 + 5 * 3);

  auto g2 = MustBuild(model_, Tokens({5, 6}, 2));  // shorter on request
  EXPECT_EQ(DecodeUntilFinished(g2.get()), 2);

  auto g3 = MustBuild(model_, Tokens({5, 6}, 1));
  EXPECT_EQ(DecodeUntilFinished(g3.get()), 1);
  EXPECT_EQ(g3->cells().size(), 2u * 2 + 3);

  auto g4 = MustBuild(model_, Tokens({5, 6}, 1000));  // clamped to the model's
  EXPECT_EQ(DecodeUntilFinished(g4.get()), 5);
  EXPECT_EQ(g4->result().tokens.size(), 5u);
}

TEST_F(Seq2SeqGraphTest, NegativeMaxDecodeLenRejected) {
  ExpectInvalid(model_, Tokens({5}, -1), "max_decode_len");
}

TEST_F(Seq2SeqGraphTest, SourceTokensCheckedAgainstSourceVocab) {
  // Source vocab 50, target 30: 40 is a valid source token.
  auto g = MustBuild(model_, Tokens({40}));
  EXPECT_EQ(g->cells()[0].token, 40);
  ExpectInvalid(model_, Tokens({50}), "position 0");
}

// ---- bad input ----

// ---- EstimateCells (what the node and the router balance by) ----

// Runs a seq2seq graph's decoder: `steps` tokens that are not EOS, then EOS (or until the graph
// stops at its length limit). Returns the cells the graph ran.
size_t DecodeToEnd(RequestGraph& g, int steps, int32_t eos) {
  for (int i = 0; !g.finished() && i < 1000; ++i)
    g.OnHeadOutput(static_cast<CellId>(g.cells().size() - 1), Argmax(i < steps ? 7 : eos));
  EXPECT_TRUE(g.finished());
  return g.cells().size();
}

TEST(EstimateCellsTest, IsTheCellCountOfTheGraph) {
  for (int64_t L : {1, 2, 3}) {
    auto lstm = MakeModel(SmallSpec(ModelKind::kLstm, L));
    for (int T : {1, 2, 7}) {
      const RequestInput in = Tokens(std::vector<int32_t>(static_cast<size_t>(T), 3));
      EXPECT_EQ(EstimateCells(lstm->spec(), in), static_cast<int64_t>(MustBuild(lstm, in)->cells().size()))
          << "lstm L=" << L << " T=" << T;
    }
  }
  auto tree_model = MakeModel(SmallSpec(ModelKind::kTreeLstm, 1));
  for (const char* sexpr : {"7", "(3 4)", "((1 2) ((3 4) (5 (6 7))))"}) {
    RequestInput in;
    in.has_tree = true;
    in.tree = ParseTreeSexpr(sexpr).value();
    EXPECT_EQ(EstimateCells(tree_model->spec(), in), static_cast<int64_t>(MustBuild(tree_model, in)->cells().size()))
        << sexpr;
  }
}

// seq2seq: the decoder's length is unknown until it runs, so the estimate guesses one step more
// than the source is long, within the length limit (the request's, else the model's: 8 here).
TEST(EstimateCellsTest, Seq2SeqGuessesADecodeAsLongAsTheSourcePlusOne) {
  const ModelSpec spec = SmallSpec(ModelKind::kSeq2Seq, 2);
  auto model = MakeModel(spec);
  const int32_t eos = static_cast<int32_t>(spec.eos_id);
  // 3 source tokens, no limit of its own: the guess is 4 decoder steps (the 4th emits EOS).
  RequestInput in = Tokens({5, 6, 9});
  EXPECT_EQ(EstimateCells(spec, in), static_cast<int64_t>(DecodeToEnd(*MustBuild(model, in), 3, eos)));
  // The request's limit of 2 steps is shorter than the guess: the graph stops there.
  in.max_decode_len = 2;
  EXPECT_EQ(EstimateCells(spec, in), static_cast<int64_t>(DecodeToEnd(*MustBuild(model, in), 100, eos)));
  // The model's limit (8) binds for a long source.
  RequestInput long_source = Tokens(std::vector<int32_t>(20, 5));
  EXPECT_EQ(EstimateCells(spec, long_source),
            static_cast<int64_t>(DecodeToEnd(*MustBuild(model, long_source), 100, eos)));
}

TEST(BuildRequestGraphTest, BadTokens) {
  for (ModelKind kind : {ModelKind::kLstm, ModelKind::kSeq2Seq}) {
    SCOPED_TRACE(ModelKindName(kind));
    ModelSpec spec = SmallSpec(kind);
    auto m = MakeModel(spec);
    ExpectInvalid(m, Tokens({}), "empty");
    std::vector<int32_t> many(static_cast<size_t>(spec.max_input_tokens + 1), 1);
    ExpectInvalid(m, Tokens(many), std::to_string(spec.max_input_tokens + 1));
    ExpectInvalid(m, Tokens(many), "at most " + std::to_string(spec.max_input_tokens));
    ExpectInvalid(m, Tokens({1, 2, -1, 3}), "position 2");
    ExpectInvalid(m, Tokens({1, 2, -1, 3}), "-1");
    ExpectInvalid(m, Tokens({1, static_cast<int32_t>(spec.vocab_size)}), "position 1");
    ExpectInvalid(m, Tokens({1, static_cast<int32_t>(spec.vocab_size)}),
                  std::to_string(spec.vocab_size));
    ExpectInvalid(m, Tokens({1 << 30}), "position 0");
    ExpectInvalid(m, Tokens({1 << 30}), "(0.." + std::to_string(spec.vocab_size - 1) + ")");
    RequestInput tree;
    tree.has_tree = true;
    tree.tree = *ParseTreeSexpr("(1 2)");
    ExpectInvalid(m, tree, "not a tree");
  }
}

TEST(BuildRequestGraphTest, BadTrees) {
  ModelSpec spec = SmallSpec(ModelKind::kTreeLstm);
  spec.max_input_tokens = 4;
  auto m = MakeModel(spec);
  ExpectInvalid(m, Tokens({1, 2, 3}), "tree");  // tokens to a tree model

  RequestInput one_child;
  one_child.has_tree = true;
  one_child.tree.nodes.resize(2);
  one_child.tree.nodes[0].children = {1};
  one_child.tree.nodes[1].token = 3;
  ExpectInvalid(m, one_child, "binary");

  RequestInput empty;
  empty.has_tree = true;
  ExpectInvalid(m, empty, "empty");

  RequestInput cycle;
  cycle.has_tree = true;
  cycle.tree.nodes.resize(3);
  cycle.tree.nodes[0].children = {1, 2};
  cycle.tree.nodes[1].children = {0, 2};
  cycle.tree.nodes[2].token = 1;
  StatusOr<std::unique_ptr<RequestGraph>> g = BuildRequestGraph(m, cycle);
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);

  RequestInput out_of_vocab;
  out_of_vocab.has_tree = true;
  out_of_vocab.tree = *ParseTreeSexpr("(1 50)");
  ExpectInvalid(m, out_of_vocab, "50");

  RequestInput too_many;
  too_many.has_tree = true;
  too_many.tree = *ParseTreeSexpr("((1 2) (3 (4 5)))");  // 5 leaves > 4
  g = BuildRequestGraph(m, too_many);
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);

  RequestInput ok;
  ok.has_tree = true;
  ok.tree = *ParseTreeSexpr("((1 2) (3 4))");  // exactly 4 leaves
  EXPECT_TRUE(BuildRequestGraph(m, ok).ok());
}

}  // namespace
}  // namespace cellserve
