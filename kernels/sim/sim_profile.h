// SimProfile: the cost model of the sim device (DESIGN.md §5): a batch of `rows` cells of one
// kind takes a_us * rows + c_us microseconds. Profiles are JSON files:
//   {"name": "cpu-lstm512", "description": "measured ... (how, where, when)",
//    "costs": {"lstm": {"a_us": 47.1, "c_us": 118.0}, "head": {"a_us": 0.3, "c_us": 4.0},
//              "tree_leaf": {...}, "tree_internal": {...}},
//    "default": {"a_us": 47.1, "c_us": 118.0}}
// Keys of "costs" are cell kinds (lstm, tree_leaf, tree_internal, head); a kind without an entry
// uses "default" (required). A profile describes one model shape (its hidden size); it is not
// rescaled for others. Pure values; thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "runtime/model.h"
#include "runtime/status.h"

namespace cellserve::sim {

struct SimCost {
  double a_us = 0.0;  // per row
  double c_us = 0.0;  // per batch
};

struct SimProfile {
  std::string name;
  std::string description;
  std::map<std::string, SimCost> costs;  // by cell kind
  SimCost fallback;                      // "default"

  // Microseconds for a batch of `rows` cells of kind `op` (rounded, at least 1).
  int64_t CostMicros(CellOp op, int64_t rows) const;

  // INVALID_ARGUMENT naming the problem: not JSON, no "default", a cost that is not a number in
  // [0, 1e7] microseconds, an unknown cell kind.
  static StatusOr<SimProfile> Parse(const std::string& json_text);
  // NOT_FOUND if the file cannot be read; Parse's errors, with the path.
  static StatusOr<SimProfile> Load(const std::string& path);
};

// "lstm", "tree_leaf", "tree_internal", "head" (both head ops).
const char* SimKindName(CellOp op);

}  // namespace cellserve::sim
