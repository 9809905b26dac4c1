#include "runtime/tree.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TreeNode Leaf(int32_t token) {
  TreeNode n;
  n.token = token;
  return n;
}
TreeNode Internal(std::vector<int32_t> children) {
  TreeNode n;
  n.children = std::move(children);
  return n;
}

TreeLimits Vocab(int64_t v, int64_t max_leaves = 1024) {
  TreeLimits l;
  l.vocab_size = v;
  l.max_leaves = max_leaves;
  return l;
}

void ExpectInvalid(const TreeInput& t, const TreeLimits& limits, const std::string& needle) {
  StatusOr<int32_t> r = ValidateTree(t, limits);
  ASSERT_FALSE(r.ok()) << "validated unexpectedly; expected '" << needle << "'";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << "message '" << r.status().message() << "' lacks '" << needle << "'";
}

void ExpectParseError(const std::string& text, const std::string& needle,
                      int64_t max_nodes = 1 << 20) {
  StatusOr<TreeInput> r = ParseTreeSexpr(text, max_nodes);
  ASSERT_FALSE(r.ok()) << "parsed unexpectedly: '" << text << "'";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << "for '" << text << "': message '" << r.status().message() << "' lacks '" << needle << "'";
}

// ---- ParseTreeSexpr / TreeToSexpr ----

TEST(TreeSexprTest, ParsesPostOrder) {
  StatusOr<TreeInput> r = ParseTreeSexpr("((4 5) 6)");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::vector<TreeNode>& n = r->nodes;
  ASSERT_EQ(n.size(), 5u);
  EXPECT_EQ(n[0].token, 4);
  EXPECT_TRUE(n[0].children.empty());
  EXPECT_EQ(n[1].token, 5);
  EXPECT_EQ(n[2].token, -1);
  EXPECT_EQ(n[2].children, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(n[3].token, 6);
  EXPECT_EQ(n[4].token, -1);
  EXPECT_EQ(n[4].children, (std::vector<int32_t>{2, 3}));
  StatusOr<int32_t> root = ValidateTree(*r, Vocab(10));
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(*root, 4);  // root last
}

TEST(TreeSexprTest, SingleLeaf) {
  StatusOr<TreeInput> r = ParseTreeSexpr("  17\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->nodes.size(), 1u);
  EXPECT_EQ(r->nodes[0].token, 17);
  EXPECT_EQ(*ValidateTree(*r, Vocab(18)), 0);
  EXPECT_EQ(TreeToSexpr(*r), "17");
}

TEST(TreeSexprTest, FlexibleWhitespace) {
  StatusOr<TreeInput> a = ParseTreeSexpr("((4 5) 6)");
  StatusOr<TreeInput> b = ParseTreeSexpr(" \t( (4\n5)6 )\r\n");
  StatusOr<TreeInput> c = ParseTreeSexpr("((4 5)(6 7))");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(TreeToSexpr(*a), TreeToSexpr(*b));
  EXPECT_EQ(TreeToSexpr(*c), "((4 5) (6 7))");
}

TEST(TreeSexprTest, RoundTrip) {
  for (const char* text : {"0", "(1 2)", "((4 5) 6)", "(4 (5 6))", "((1 2) (3 4))",
                           "(((0 1) (2 3)) ((4 5) (6 (7 8))))", "(2147483647 0)"}) {
    StatusOr<TreeInput> r = ParseTreeSexpr(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.status().ToString();
    ASSERT_TRUE(ValidateTree(*r, Vocab(1LL << 31)).ok()) << text;
    EXPECT_EQ(TreeToSexpr(*r), text);
  }
}

TEST(TreeSexprTest, ToSexprOfNonPostOrderTree) {
  // Root first, children in any order: printing starts from the node nobody points to.
  TreeInput t;
  t.nodes = {Internal({2, 1}), Leaf(7), Internal({3, 4}), Leaf(8), Leaf(9)};
  ASSERT_EQ(*ValidateTree(t, Vocab(10)), 0);
  EXPECT_EQ(TreeToSexpr(t), "((8 9) 7)");
}

TEST(TreeSexprTest, UnbalancedBrackets) {
  ExpectParseError("((4 5) 6", "unclosed");
  ExpectParseError("(4 5", "unclosed");
  ExpectParseError("(", "unclosed");
  ExpectParseError("(4 5))", "unmatched ')' at offset 5");  // the root is done; ")" is extra
  ExpectParseError(")", "unexpected ')'");
  ExpectParseError("4 )", "unmatched ')' at offset 2");
}

TEST(TreeSexprTest, WrongNumberOfSubtrees) {
  ExpectParseError("()", "has 0 subtrees; expected 2");
  ExpectParseError("(4)", "has 1 subtree; expected 2");
  ExpectParseError("((4) 5)", "has 1 subtree; expected 2");
  ExpectParseError("(4 5 6)", "more than two subtrees");
  ExpectParseError("(4 5 (6 7))", "more than two subtrees");
}

TEST(TreeSexprTest, BadTokens) {
  ExpectParseError("-3", "not a non-negative integer");
  ExpectParseError("(4 -5)", "not a non-negative integer");
  ExpectParseError("(4 x)", "not a non-negative integer");
  ExpectParseError("(4 5a)", "not a non-negative integer");
  ExpectParseError("(4 +5)", "not a non-negative integer");
  ExpectParseError("(4 5.0)", "not a non-negative integer");
  ExpectParseError("(4 2147483648)", "larger than 2147483647");
  ExpectParseError("99999999999999999999999999", "larger than 2147483647");
}

TEST(TreeSexprTest, TrailingInputAndEmpty) {
  ExpectParseError("(4 5) 6", "trailing input");
  ExpectParseError("(4 5) (6 7)", "trailing input");
  ExpectParseError("4 5", "trailing input");
  ExpectParseError("", "empty");
  ExpectParseError("   \n", "empty");
}

TEST(TreeSexprTest, MaxNodes) {
  EXPECT_TRUE(ParseTreeSexpr("((4 5) 6)", 5).ok());
  ExpectParseError("((4 5) 6)", "more than 4 nodes", 4);
  ExpectParseError(std::string(100, '('), "more than 10 nodes", 10);
}

// A million-deep left-nested tree: "((((0 1) 1) 1) ... 1)". Parsing, validating and printing are
// iterative, so this must not overflow the stack.
TEST(TreeSexprTest, MillionDeepTree) {
  const int depth = 1000000;
  std::string text(depth, '(');
  text += "0";
  for (int i = 0; i < depth; ++i) text += " 1)";

  ExpectParseError(text, "more than 100000 nodes", 100000);

  StatusOr<TreeInput> r = ParseTreeSexpr(text, 3 * depth);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->nodes.size(), static_cast<size_t>(2 * depth + 1));
  StatusOr<int32_t> root = ValidateTree(*r, Vocab(2, 2 * depth));
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(*root, 2 * depth);
  EXPECT_EQ(TreeToSexpr(*r), text);
  // With the default leaf limit it is simply too big.
  ExpectInvalid(*r, Vocab(2), "leaves; the limit is 1024");
}

TEST(TreeSexprTest, MillionDeepUnclosed) {
  ExpectParseError(std::string(1000000, '(') + "1", "unclosed", 3000000);
}

// ---- ValidateTree ----

TEST(TreeValidateTest, EmptyTree) { ExpectInvalid(TreeInput{}, Vocab(10), "empty tree"); }

TEST(TreeValidateTest, NotBinary) {
  TreeInput t;
  t.nodes = {Leaf(1), Leaf(2), Leaf(3), Internal({0, 1, 2})};
  ExpectInvalid(t, Vocab(10), "node 3 has 3 children; trees must be binary (0 or 2)");
  t.nodes = {Leaf(1), Internal({0})};
  ExpectInvalid(t, Vocab(10), "node 1 has 1 child; trees must be binary (0 or 2)");
}

TEST(TreeValidateTest, TwoParents) {
  TreeInput t;
  //        5
  //      1   2      node 4 is a child of both 1 and 2
  t.nodes = {Leaf(0), Internal({3, 4}), Internal({4, 0}), Leaf(1), Leaf(2), Internal({1, 2})};
  ExpectInvalid(t, Vocab(10), "node 4 has two parents (1 and 2)");
}

TEST(TreeValidateTest, SameChildTwice) {
  TreeInput t;
  t.nodes = {Leaf(0), Internal({0, 0})};
  ExpectInvalid(t, Vocab(10), "node 1 has node 0 as both children");
}

TEST(TreeValidateTest, TwoRoots) {
  TreeInput t;
  t.nodes = {Leaf(1), Leaf(2), Internal({0, 1}), Leaf(3), Leaf(4), Internal({3, 4})};
  ExpectInvalid(t, Vocab(10), "two roots: nodes 2 and 5");
  t.nodes = {Leaf(1), Leaf(2)};
  ExpectInvalid(t, Vocab(10), "two roots: nodes 0 and 1");
}

TEST(TreeValidateTest, SelfCycle) {
  TreeInput t;
  t.nodes = {Leaf(1), Internal({0, 1})};
  ExpectInvalid(t, Vocab(10), "cycle through node 1");
}

TEST(TreeValidateTest, CycleWithRootElsewhere) {
  // Root 0 -> (1, 2); nodes 3 and 4 point at each other through internal nodes: 3 -> (4, 5),
  // 4 -> (3, 6). Every parent is unique, there is one root, but 3..6 are unreachable.
  TreeInput t;
  t.nodes = {Internal({1, 2}), Leaf(1), Leaf(2), Internal({4, 5}), Internal({3, 6}), Leaf(3),
             Leaf(4)};
  StatusOr<int32_t> r = ValidateTree(t, Vocab(10));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = r.status().message();
  EXPECT_TRUE(m.find("cycle through node 3") != std::string::npos ||
              m.find("cycle through node 4") != std::string::npos)
      << m;
}

// The first unreachable node (3) hangs below the cycle 4 <-> 5: the message names a node of the
// cycle, found by walking up from it, not the node the walk started at.
TEST(TreeValidateTest, CycleNamedWhenTheFirstUnreachableNodeHangsBelowIt) {
  TreeInput t;
  t.nodes = {Internal({1, 2}), Leaf(1), Leaf(2), Leaf(3), Internal({5, 6}), Internal({4, 3}), Leaf(4)};
  StatusOr<int32_t> r = ValidateTree(t, Vocab(10));
  ASSERT_FALSE(r.ok());
  const std::string& m = r.status().message();
  EXPECT_TRUE(m.find("cycle through node 4 ") != std::string::npos ||
              m.find("cycle through node 5 ") != std::string::npos)
      << m;
  EXPECT_NE(m.find("4 nodes unreachable from root 0"), std::string::npos) << m;
}

TEST(TreeValidateTest, CycleWithoutRoot) {
  // Every node has a parent: 0 -> (1, 2), 1 -> (0, 3)... 2 and 3 are leaves, 0 and 1 form a cycle.
  TreeInput t;
  t.nodes = {Internal({1, 2}), Internal({0, 3}), Leaf(1), Leaf(2)};
  ExpectInvalid(t, Vocab(10), "no root: the tree has a cycle");
}

TEST(TreeValidateTest, ChildOutOfRange) {
  TreeInput t;
  t.nodes = {Leaf(1), Internal({0, 9}), Leaf(2), Leaf(3), Leaf(4), Leaf(5), Leaf(6)};
  ExpectInvalid(t, Vocab(10), "child index 9 of node 1 is out of range (7 nodes)");
  t.nodes = {Leaf(1), Internal({-1, 0})};
  ExpectInvalid(t, Vocab(10), "child index -1 of node 1 is out of range (2 nodes)");
}

TEST(TreeValidateTest, TokenOutsideVocabulary) {
  TreeInput t;
  t.nodes = {Leaf(1), Leaf(2), Internal({0, 1}), Leaf(40000), Internal({2, 3})};
  ExpectInvalid(t, Vocab(32000), "leaf 3 has token 40000 outside the vocabulary (0..31999)");
  t.nodes = {Leaf(-1)};
  ExpectInvalid(t, Vocab(32000), "leaf 0 has token -1 outside the vocabulary");
  t.nodes = {Leaf(0)};
  ExpectInvalid(t, Vocab(0), "vocabulary is empty");
  t.nodes = {Leaf(31999)};
  EXPECT_TRUE(ValidateTree(t, Vocab(32000)).ok());
}

TEST(TreeValidateTest, InternalNodeWithToken) {
  TreeInput t;
  t.nodes = {Leaf(1), Leaf(2), Internal({0, 1})};
  t.nodes[2].token = 5;
  ExpectInvalid(t, Vocab(10), "internal node 2 has token 5");
}

TEST(TreeValidateTest, TooManyLeaves) {
  // A balanced-ish tree with 2000 leaves built as a left comb.
  TreeInput t;
  t.nodes.push_back(Leaf(0));
  int32_t acc = 0;
  for (int i = 1; i < 2000; ++i) {
    t.nodes.push_back(Leaf(1));
    t.nodes.push_back(Internal({acc, static_cast<int32_t>(t.nodes.size() - 1)}));
    acc = static_cast<int32_t>(t.nodes.size() - 1);
  }
  ExpectInvalid(t, Vocab(10), "tree has 2000 leaves; the limit is 1024");
  EXPECT_TRUE(ValidateTree(t, Vocab(10, 2000)).ok());
}

TEST(TreeValidateTest, MillionNodeCycleIsIterative) {
  // A chain of a million internal nodes closing on itself, each with a leaf: no root, no crash.
  const int32_t n = 1000000;
  TreeInput t;
  t.nodes.resize(2 * static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    t.nodes[i] = Internal({(i + 1) % n, n + i});
    t.nodes[n + i] = Leaf(0);
  }
  ExpectInvalid(t, Vocab(1, 2 * n), "no root: the tree has a cycle");
  // Add a separate root: the cycle is now unreachable.
  t.nodes.push_back(Leaf(0));
  t.nodes.push_back(Leaf(0));
  t.nodes.push_back(Internal({2 * n, 2 * n + 1}));
  ExpectInvalid(t, Vocab(1, 2 * n + 2), "cycle through node");
}

TEST(TreeValidateTest, ParserOutputAlwaysValidates) {
  for (const char* text : {"1", "(1 2)", "((1 2) 3)", "(1 (2 (3 (4 5))))"}) {
    StatusOr<TreeInput> r = ParseTreeSexpr(text);
    ASSERT_TRUE(r.ok());
    StatusOr<int32_t> root = ValidateTree(*r, Vocab(6));
    ASSERT_TRUE(root.ok()) << text << ": " << root.status().ToString();
    EXPECT_EQ(*root, static_cast<int32_t>(r->nodes.size() - 1));
  }
}

}  // namespace
}  // namespace cellserve
