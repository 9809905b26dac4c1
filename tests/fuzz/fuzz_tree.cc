// libFuzzer target for tree input: the bytes as sexpr text (parse, validate, print, re-parse) and
// the same bytes as a raw node list for ValidateTree. Nothing may crash or recurse deeply.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "runtime/tree.h"

namespace {

using cellserve::StatusOr;
using cellserve::TreeInput;

bool SameTree(const TreeInput& a, const TreeInput& b) {
  if (a.nodes.size() != b.nodes.size()) return false;
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    if (a.nodes[i].token != b.nodes[i].token || a.nodes[i].children != b.nodes[i].children) {
      return false;
    }
  }
  return true;
}

void FuzzText(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  StatusOr<TreeInput> tree = cellserve::ParseTreeSexpr(text, 100000);
  if (!tree.ok()) return;
  cellserve::TreeLimits limits;
  limits.vocab_size = 1000;
  limits.max_leaves = 100000;
  // Parser output is always a well-formed tree; only tokens may fall outside the vocabulary.
  StatusOr<int32_t> root = cellserve::ValidateTree(*tree, limits);
  limits.vocab_size = int64_t{1} << 31;
  StatusOr<int32_t> root_any_token = cellserve::ValidateTree(*tree, limits);
  if (!root_any_token.ok()) __builtin_trap();
  if (*root_any_token != static_cast<int32_t>(tree->nodes.size() - 1)) __builtin_trap();
  if (!root.ok()) return;
  std::string printed = cellserve::TreeToSexpr(*tree);
  StatusOr<TreeInput> again = cellserve::ParseTreeSexpr(printed, 100000);
  if (!again.ok() || !SameTree(*tree, *again)) __builtin_trap();
}

// Groups of three int16 in host byte order (token, left, right); -1 means no child.
void FuzzNodeList(const uint8_t* data, size_t size) {
  TreeInput tree;
  for (size_t off = 0; off + 6 <= size; off += 6) {
    int16_t v[3];
    std::memcpy(v, data + off, 6);
    cellserve::TreeNode node;
    node.token = v[0];
    if (v[1] != -1) node.children.push_back(v[1]);
    if (v[2] != -1) node.children.push_back(v[2]);
    tree.nodes.push_back(std::move(node));
  }
  cellserve::TreeLimits limits;
  limits.vocab_size = 1000;
  limits.max_leaves = 1024;
  StatusOr<int32_t> root = cellserve::ValidateTree(tree, limits);
  if (!root.ok()) return;
  if (*root < 0 || static_cast<size_t>(*root) >= tree.nodes.size()) __builtin_trap();
  // A valid tree prints, and its text parses back to a tree of the same size that prints the same.
  std::string printed = cellserve::TreeToSexpr(tree);
  StatusOr<TreeInput> again = cellserve::ParseTreeSexpr(printed, 100000);
  if (!again.ok() || again->nodes.size() != tree.nodes.size()) __builtin_trap();
  if (!cellserve::ValidateTree(*again, limits).ok()) __builtin_trap();
  if (cellserve::TreeToSexpr(*again) != printed) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzText(data, size);
  FuzzNodeList(data, size);
  return 0;
}
