#include "kernels/sim/sim_profile.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace cellserve::sim {

namespace {

// A cost per row or per batch above this (10 s) is not a device anyone models; it also keeps
// a batch's time far from int64 and the timer's nanosecond waits.
constexpr double kMaxCostUs = 1e7;
// A batch's time at most (rows up to 2^16 at kMaxCostUs each stay below it).
constexpr double kMaxBatchUs = 1e12;

StatusOr<SimCost> ParseCost(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) return InvalidArgument(where + " must be an object {\"a_us\": ..., \"c_us\": ...}");
  SimCost cost;
  for (const char* key : {"a_us", "c_us"}) {
    if (!j.contains(key) || !j[key].is_number())
      return InvalidArgument(where + "." + key + " must be a number (microseconds)");
    const double v = j[key].get<double>();
    if (!std::isfinite(v) || v < 0 || v > kMaxCostUs)
      return InvalidArgument(where + "." + key + " must be in [0, 1e7] microseconds (10 s), got " + j[key].dump());
    (std::string(key) == "a_us" ? cost.a_us : cost.c_us) = v;
  }
  return cost;
}

}  // namespace

const char* SimKindName(CellOp op) {
  switch (op) {
    case CellOp::kLstm: return "lstm";
    case CellOp::kTreeLeaf: return "tree_leaf";
    case CellOp::kTreeInternal: return "tree_internal";
    case CellOp::kHeadLogits:
    case CellOp::kHeadArgmax: return "head";
  }
  return "unknown";
}

int64_t SimProfile::CostMicros(CellOp op, int64_t rows) const {
  auto it = costs.find(SimKindName(op));
  const SimCost& c = it == costs.end() ? fallback : it->second;
  const double us = std::min(c.a_us * static_cast<double>(std::max<int64_t>(rows, 0)) + c.c_us, kMaxBatchUs);
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(us)));
}

StatusOr<SimProfile> SimProfile::Parse(const std::string& json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("a sim profile must be a JSON object");
  SimProfile p;
  if (j.contains("name") && j["name"].is_string()) p.name = j["name"].get<std::string>();
  if (j.contains("description") && j["description"].is_string()) p.description = j["description"].get<std::string>();
  if (!j.contains("default")) return InvalidArgument("a sim profile needs \"default\": {\"a_us\": ..., \"c_us\": ...}");
  ASSIGN_OR_RETURN(p.fallback, ParseCost(j["default"], "default"));
  if (j.contains("costs")) {
    if (!j["costs"].is_object()) return InvalidArgument("\"costs\" must be an object keyed by cell kind");
    for (auto& [kind, cost] : j["costs"].items()) {
      if (kind != "lstm" && kind != "tree_leaf" && kind != "tree_internal" && kind != "head")
        return InvalidArgument("unknown cell kind '" + kind + "' in costs (lstm, tree_leaf, tree_internal, head)");
      ASSIGN_OR_RETURN(p.costs[kind], ParseCost(cost, "costs." + kind));
    }
  }
  return p;
}

StatusOr<SimProfile> SimProfile::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read sim profile " + path);
  std::stringstream text;
  text << in.rdbuf();
  auto p = Parse(text.str());
  if (!p.ok()) return p.status().WithContext(path);
  return p;
}

}  // namespace cellserve::sim
