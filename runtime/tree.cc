#include "runtime/tree.h"

#include <limits>
#include <utility>

// Everything in this file is iterative: trees come from clients, and a recursive walk over a
// million-deep tree would overflow the stack.

namespace cellserve {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsDelimiter(char c) { return IsSpace(c) || c == '(' || c == ')'; }

// Input text for an error message: at most 32 bytes, non-printable bytes as '?'.
std::string Excerpt(std::string_view s) {
  std::string out(s.substr(0, 32));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  }
  return s.size() > 32 ? out + "..." : out;
}

std::string VocabText(int64_t vocab_size) {
  if (vocab_size <= 0) return "(the vocabulary is empty)";
  return "(0.." + Str(vocab_size - 1) + ")";
}

}  // namespace

StatusOr<int32_t> ValidateTree(const TreeInput& tree, const TreeLimits& limits) {
  const int64_t n = static_cast<int64_t>(tree.nodes.size());
  if (n == 0) return InvalidArgument("empty tree");
  if (n > std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("tree has " + Str(n) + " nodes; node indices must fit int32");
  }

  // Pass 1: per-node shape (binary, tokens, child indices) and unique parents.
  std::vector<int32_t> parent(static_cast<size_t>(n), -1);
  int64_t leaves = 0;
  for (int64_t i = 0; i < n; ++i) {
    const TreeNode& node = tree.nodes[static_cast<size_t>(i)];
    const size_t k = node.children.size();
    if (k == 0) {
      ++leaves;
      if (node.token < 0 || node.token >= limits.vocab_size) {
        return InvalidArgument("leaf " + Str(i) + " has token " + Str(node.token) +
                               " outside the vocabulary " + VocabText(limits.vocab_size));
      }
      continue;
    }
    if (k != 2) {
      return InvalidArgument("node " + Str(i) + " has " + Str(static_cast<int64_t>(k)) +
                             (k == 1 ? " child" : " children") +
                             "; trees must be binary (0 or 2)");
    }
    if (node.token != -1) {
      return InvalidArgument("internal node " + Str(i) + " has token " + Str(node.token) +
                             "; internal nodes must have token -1");
    }
    for (int32_t c : node.children) {
      if (c < 0 || c >= n) {
        return InvalidArgument("child index " + Str(c) + " of node " + Str(i) +
                               " is out of range (" + Str(n) + " nodes)");
      }
    }
    if (node.children[0] == node.children[1]) {
      return InvalidArgument("node " + Str(i) + " has node " + Str(node.children[0]) +
                             " as both children");
    }
    for (int32_t c : node.children) {
      if (c == i) return InvalidArgument("cycle through node " + Str(i) + " (its own child)");
      int32_t& p = parent[static_cast<size_t>(c)];
      if (p != -1) {
        return InvalidArgument("node " + Str(c) + " has two parents (" + Str(p) + " and " +
                               Str(i) + ")");
      }
      p = static_cast<int32_t>(i);
    }
  }

  if (leaves > limits.max_leaves) {
    return InvalidArgument("tree has " + Str(leaves) + " leaves; the limit is " +
                           Str(limits.max_leaves));
  }

  // Pass 2: exactly one node without a parent.
  int32_t root = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (parent[static_cast<size_t>(i)] != -1) continue;
    if (root != -1) {
      return InvalidArgument("two roots: nodes " + Str(root) + " and " + Str(i));
    }
    root = static_cast<int32_t>(i);
  }
  if (root == -1) return InvalidArgument("no root: the tree has a cycle");

  // Pass 3: everything reachable from the root. With unique parents, an unreachable node can only
  // sit on (or hang below) a cycle.
  std::vector<char> seen(static_cast<size_t>(n), 0);
  std::vector<int32_t> stack{root};
  int64_t reached = 0;
  while (!stack.empty()) {
    int32_t v = stack.back();
    stack.pop_back();
    if (seen[static_cast<size_t>(v)]) continue;  // unreachable with unique parents; defensive
    seen[static_cast<size_t>(v)] = 1;
    ++reached;
    for (int32_t c : tree.nodes[static_cast<size_t>(v)].children) stack.push_back(c);
  }
  if (reached != n) {
    // Walk parent links up from an unreached node: every unreached node's parent is unreached,
    // and each has a parent (the root is reached), so the walk must revisit a node on a cycle.
    int64_t start = 0;
    while (seen[static_cast<size_t>(start)]) ++start;
    std::vector<char> on_walk(static_cast<size_t>(n), 0);
    int32_t v = static_cast<int32_t>(start);
    while (!on_walk[static_cast<size_t>(v)]) {
      on_walk[static_cast<size_t>(v)] = 1;
      v = parent[static_cast<size_t>(v)];
    }
    return InvalidArgument("cycle through node " + Str(v) + " (" + Str(n - reached) +
                           " nodes unreachable from root " + Str(root) + ")");
  }
  return root;
}

StatusOr<TreeInput> ParseTreeSexpr(std::string_view text, int64_t max_nodes) {
  // One frame per open bracket whose ")" has not been seen yet.
  struct Frame {
    size_t offset;        // of the "("
    int32_t children[2];
    int count;
  };
  TreeInput tree;
  std::vector<Frame> stack;
  bool have_root = false;

  // Hands a finished subtree to the innermost open bracket, or makes it the root.
  auto attach = [&](int32_t index, size_t offset) -> Status {
    if (stack.empty()) {
      if (have_root) return InvalidArgument("trailing input at offset " + Str(offset));
      have_root = true;
      return OkStatus();
    }
    Frame& f = stack.back();
    if (f.count == 2) {
      return InvalidArgument("bracket at offset " + Str(f.offset) +
                             " has more than two subtrees (another starts at offset " +
                             Str(offset) + ")");
    }
    f.children[f.count++] = index;
    return OkStatus();
  };
  // Every open bracket will become a node, so counting them bounds memory for "((((((...".
  auto check_size = [&]() -> Status {
    if (static_cast<int64_t>(tree.nodes.size() + stack.size()) > max_nodes) {
      return InvalidArgument("tree has more than " + Str(max_nodes) + " nodes");
    }
    return OkStatus();
  };

  size_t i = 0;
  const size_t len = text.size();
  while (i < len) {
    const char c = text[i];
    if (IsSpace(c)) {
      ++i;
      continue;
    }
    if (have_root && stack.empty())
      return InvalidArgument(c == ')' ? "unmatched ')' at offset " + Str(i) + " (the tree was complete before it)"
                                      : "trailing input at offset " + Str(i) + " (the tree was complete before it)");
    if (c == '(') {
      if (!stack.empty() && stack.back().count == 2) {
        return InvalidArgument("bracket at offset " + Str(stack.back().offset) +
                               " has more than two subtrees (another starts at offset " + Str(i) +
                               ")");
      }
      stack.push_back(Frame{i, {-1, -1}, 0});
      RETURN_IF_ERROR(check_size());
      ++i;
    } else if (c == ')') {
      if (stack.empty()) {
        return InvalidArgument("unbalanced brackets: unexpected ')' at offset " + Str(i));
      }
      Frame f = stack.back();
      if (f.count != 2) {
        return InvalidArgument("bracket at offset " + Str(f.offset) + " has " + Str(f.count) +
                               (f.count == 1 ? " subtree" : " subtrees") + "; expected 2");
      }
      stack.pop_back();
      TreeNode node;
      node.children = {f.children[0], f.children[1]};
      tree.nodes.push_back(std::move(node));
      RETURN_IF_ERROR(check_size());
      RETURN_IF_ERROR(attach(static_cast<int32_t>(tree.nodes.size() - 1), f.offset));
      ++i;
    } else {
      const size_t start = i;
      while (i < len && !IsDelimiter(text[i])) ++i;
      const std::string_view word = text.substr(start, i - start);
      int64_t value = 0;
      for (char d : word) {
        if (!IsDigit(d)) {
          return InvalidArgument("token '" + Excerpt(word) + "' at offset " +
                                 Str(start) + " is not a non-negative integer");
        }
        value = value * 10 + (d - '0');
        if (value > std::numeric_limits<int32_t>::max()) {
          return InvalidArgument("token at offset " + Str(start) + " is larger than " +
                                 Str(std::numeric_limits<int32_t>::max()));
        }
      }
      TreeNode leaf;
      leaf.token = static_cast<int32_t>(value);
      tree.nodes.push_back(std::move(leaf));
      RETURN_IF_ERROR(check_size());
      RETURN_IF_ERROR(attach(static_cast<int32_t>(tree.nodes.size() - 1), start));
    }
  }
  if (!stack.empty()) {
    return InvalidArgument("unbalanced brackets: " + Str(static_cast<int64_t>(stack.size())) +
                           " unclosed '(' (the innermost at offset " + Str(stack.back().offset) +
                           ")");
  }
  if (!have_root) return InvalidArgument("empty tree text");
  return tree;
}

std::string TreeToSexpr(const TreeInput& tree) {
  const size_t n = tree.nodes.size();
  if (n == 0) return "";
  // The root is the node nobody points to (the last one for parser output).
  std::vector<char> is_child(n, 0);
  for (const TreeNode& node : tree.nodes) {
    for (int32_t c : node.children) {
      if (c >= 0 && static_cast<size_t>(c) < n) is_child[static_cast<size_t>(c)] = 1;
    }
  }
  size_t root = n - 1;
  for (size_t i = 0; i < n; ++i) {
    if (!is_child[i]) {
      root = i;
      break;
    }
  }

  // Work stack: a node index to print, or one of the two markers below. The visit budget keeps a
  // tree that breaks the precondition (a cycle) from looping forever.
  constexpr int64_t kClose = -1;
  constexpr int64_t kSpace = -2;
  std::string out;
  std::vector<int64_t> stack{static_cast<int64_t>(root)};
  size_t visits = 0;
  while (!stack.empty()) {
    const int64_t item = stack.back();
    stack.pop_back();
    if (item == kClose) {
      out += ')';
      continue;
    }
    if (item == kSpace) {
      out += ' ';
      continue;
    }
    if (item < 0 || static_cast<size_t>(item) >= n || ++visits > n) break;  // broken precondition
    const TreeNode& node = tree.nodes[static_cast<size_t>(item)];
    if (node.children.size() != 2) {
      out += std::to_string(node.token);
      continue;
    }
    out += '(';
    stack.push_back(kClose);
    stack.push_back(node.children[1]);
    stack.push_back(kSpace);
    stack.push_back(node.children[0]);
  }
  return out;
}

}  // namespace cellserve
