// Binary trees as Tree-LSTM input. A TreeInput is a list of nodes; a leaf has a token and no
// children, an internal node has exactly two children (left, right) and no token. Trees arrive
// from clients, so ValidateTree checks everything (one root, no cycles, no shared children, child
// indices in range, binary, tokens in the vocabulary, size limits) and names the first problem.
// ParseTreeSexpr reads the text form "((4 5) 6)": a leaf is a token id, an internal node is
// "(" left right ")". Parsing is iterative (no recursion), so deep nesting cannot overflow the
// stack. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/status.h"

namespace cellserve {

struct TreeNode {
  int32_t token = -1;              // leaf: token id; internal: -1
  std::vector<int32_t> children;   // leaf: empty; internal: {left, right}
};

struct TreeInput {
  std::vector<TreeNode> nodes;
};

struct TreeLimits {
  int64_t vocab_size = 0;     // tokens must be in [0, vocab_size)
  int64_t max_leaves = 1024;  // more leaves is INVALID_ARGUMENT
};

// Returns the root's index, or INVALID_ARGUMENT: empty tree, child index out of range, a node
// with 1 or more than 2 children ("not binary"), a node with two parents, no root or two roots,
// a cycle, a leaf without a valid token, an internal node with a token, too many leaves.
StatusOr<int32_t> ValidateTree(const TreeInput& tree, const TreeLimits& limits);

// Parses the text form. Nodes come out in post-order (children before parents; root last).
// INVALID_ARGUMENT on unbalanced brackets, a bracket with other than two subtrees, a token that is
// not a non-negative integer, trailing input, or more than `max_nodes` nodes.
StatusOr<TreeInput> ParseTreeSexpr(std::string_view text, int64_t max_nodes = 1 << 20);

// The text form of a valid tree (inverse of ParseTreeSexpr). Precondition: ValidateTree is OK.
std::string TreeToSexpr(const TreeInput& tree);

}  // namespace cellserve
