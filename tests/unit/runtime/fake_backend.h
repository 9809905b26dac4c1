// Test helpers for runtime/ tests: small models with random weights, and FakeBackend, a Backend
// that does no math. Instead of h and c, every slot holds a symbolic value: a 64-bit fingerprint of
// the computation that produced it (cell type, token, and the fingerprints of its inputs) and the
// request's "origin" (the token that started its chain: first source token, leftmost leaf).
// GraphFingerprints computes the same fingerprints from a RequestGraph alone, so a test can check
// that an executor wired every slot to the right cell: any wrong, stale or overwritten input
// changes the head's fingerprint. Heads report:
//   kHeadLogits: logits[k] = 16-bit chunk k of the fingerprint (k < 4; -1 beyond), argmax from
//                the test's policy;
//   kHeadArgmax: argmax from the test's policy, max_value = low 16 bits of the fingerprint.
// The fake also checks batch invariants itself and records violations (tests expect none).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cell_graph.h"
#include "runtime/model.h"
#include "runtime/model_repository.h"
#include "tests/unit/common/random_model.h"

namespace cellserve::runtime_testing {

// ---- small models ----

inline ModelSpec SmallSpec(ModelKind kind, int64_t layers = 2, int64_t max_batch = 256) {
  ModelSpec s;
  s.name = "small";
  s.kind = kind;
  s.vocab_size = 50;
  s.embed_dim = 6;  // E != H catches layout mix-ups
  s.hidden = 4;
  s.layers = layers;
  s.classes = kind == ModelKind::kSeq2Seq ? 0 : 5;
  s.target_vocab_size = kind == ModelKind::kSeq2Seq ? 30 : 0;
  s.bos_id = 1;
  s.eos_id = 2;
  s.max_decode_len = 8;
  s.max_input_tokens = 40;
  s.max_batch = max_batch;
  return s;
}

inline std::shared_ptr<const Model> MakeModel(const ModelSpec& spec, uint64_t seed = 1) {
  return testutil::RandomModel(spec, seed);
}

inline std::unique_ptr<RequestGraph> MustBuild(std::shared_ptr<const Model> model,
                                               const RequestInput& in) {
  StatusOr<std::unique_ptr<RequestGraph>> g = BuildRequestGraph(std::move(model), in);
  if (!g.ok()) throw std::runtime_error("BuildRequestGraph: " + g.status().ToString());
  return std::move(g).value();
}

inline RequestInput Tokens(std::vector<int32_t> tokens, int64_t max_decode_len = 0) {
  RequestInput in;
  in.tokens = std::move(tokens);
  in.max_decode_len = max_decode_len;
  return in;
}

// ---- symbolic values ----

inline uint64_t Mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Order-sensitive in its inputs (swapped children give another value). Absent inputs are 0.
inline uint64_t CellFingerprint(int32_t type, int32_t token, uint64_t x, uint64_t s0, uint64_t s1) {
  uint64_t h = Mix64((static_cast<uint64_t>(static_cast<uint32_t>(type)) << 32) |
                     static_cast<uint32_t>(token));
  h = Mix64(h ^ x);
  h = Mix64((h * 3) ^ s0);
  h = Mix64((h * 5) ^ s1);
  return h;
}

// The fingerprint every cell of `g` must produce, from the graph alone.
inline std::vector<uint64_t> GraphFingerprints(const RequestGraph& g) {
  const std::vector<Cell>& cells = g.cells();
  std::vector<uint64_t> fp(cells.size(), 0);
  for (size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = cells[i];
    auto in = [&](CellId id) { return id >= 0 ? fp[id] : uint64_t{0}; };
    fp[i] = CellFingerprint(c.type, c.token, in(c.x_from), in(c.state_from[0]), in(c.state_from[1]));
  }
  return fp;
}

// Decodes the fingerprint bits a kHeadLogits head put in its logits (16 bits per logit, <= 4).
inline uint64_t DecodeLogits(const std::vector<float>& logits) {
  uint64_t v = 0;
  for (size_t k = 0; k < logits.size() && k < 4; ++k)
    v |= static_cast<uint64_t>(static_cast<uint32_t>(logits[k])) << (16 * k);
  return v;
}
inline uint64_t LogitsMask(int64_t outputs) {
  return outputs >= 4 ? ~uint64_t{0} : ((uint64_t{1} << (16 * outputs)) - 1);
}

// ---- the fake backend ----

struct BatchRecord {
  int32_t type = -1;
  std::vector<int32_t> origins;  // per row
  std::vector<uint64_t> fps;     // per row: the fingerprint this row computed
  bool failed = false;           // the fake returned an error for it
  size_t rows() const { return origins.size(); }
};

class FakeBackend final : public Backend {
 public:
  // Argmax a head row reports: (origin, how many heads of this origin ran before, cell type).
  std::function<int32_t(int32_t, int, const CellType&)> head_argmax =
      [](int32_t origin, int step, const CellType& t) {
        return static_cast<int32_t>((origin + step) % t.outputs);
      };
  // Return true to make batch number `index` (0-based, all types) fail with INTERNAL.
  std::function<bool(size_t index, const BatchRecord&)> fail_batch;

  std::vector<BatchRecord> batches;
  std::vector<std::string> violations;
  int32_t registered_slots = -1;
  // Rows writing this slot are padding (the scheduler's padded policies): only their input is
  // checked; not recorded, never read by real rows.
  SlotId pad_slot = -2;
  int64_t padding_rows = 0;

  Status RegisterModel(const Model& model, int32_t slots) override {
    model_ = &model;
    registered_slots = slots;
    slots_.assign(static_cast<size_t>(slots), Sym{});
    return OkStatus();
  }

  StatusOr<BatchOutput> Run(const CellBatch& batch) override {
    const size_t index = batches.size();
    auto bad = [&](const std::string& what) {
      violations.push_back("batch " + std::to_string(index) + ": " + what);
      return InvalidArgument("fake backend: " + what);
    };
    if (model_ == nullptr || batch.model != model_) return bad("model not registered");
    if (batch.type < 0 || batch.type >= static_cast<int32_t>(model_->cell_types().size()))
      return bad("unknown cell type " + std::to_string(batch.type));
    const CellType& type = model_->cell_type(batch.type);
    if (batch.rows.empty()) return bad("empty batch");
    if (static_cast<int64_t>(batch.rows.size()) > type.max_batch)
      return bad(std::to_string(batch.rows.size()) + " rows > max_batch " +
                 std::to_string(type.max_batch));
    const bool head = type.op == CellOp::kHeadLogits || type.op == CellOp::kHeadArgmax;

    BatchRecord rec;
    rec.type = batch.type;
    std::vector<SlotId> outs, ins;
    CellBatch real;  // the batch without its padding rows
    for (const CellRow& r : batch.rows) {
      if (r.out_slot == pad_slot && !head) {
        // A padding row is computed like any other: its input must be one the backend can read
        // (a token in the vocabulary for a token-fed type; absent slots read as zeros).
        if (type.embedding != nullptr ? r.token < 0 || r.token >= type.embedding->dim(0) : r.token != -1)
          return bad(type.name + " padding row with token " + std::to_string(r.token));
        for (SlotId in : {r.x_slot, r.state_slot[0], r.state_slot[1]})
          if (in < -1 || in >= registered_slots)
            return bad(type.name + " padding row reads slot " + std::to_string(in));
        ++padding_rows;
        continue;
      }
      real.rows.push_back(r);
    }
    if (real.rows.empty()) return bad("batch of padding rows only");
    for (size_t i = 0; i < real.rows.size(); ++i) {
      const CellRow& r = real.rows[i];
      const std::string row = type.name + " row " + std::to_string(i) + ": ";
      // Shape of the row for its cell type.
      switch (type.op) {
        case CellOp::kLstm:
          if (type.embedding != nullptr) {
            if (r.token < 0 || r.token >= type.embedding->dim(0) || r.x_slot != -1)
              return bad(row + "first-layer lstm cell needs a token and no x slot");
          } else if (r.token != -1 || r.x_slot < 0) {
            return bad(row + "upper lstm cell needs an x slot and no token");
          }
          if (r.state_slot[1] != -1) return bad(row + "lstm cell with a second state");
          break;
        case CellOp::kTreeLeaf:
          if (r.token < 0 || r.token >= type.embedding->dim(0) || r.x_slot != -1 ||
              r.state_slot[0] != -1 || r.state_slot[1] != -1)
            return bad(row + "leaf needs a token and no input slots");
          break;
        case CellOp::kTreeInternal:
          if (r.token != -1 || r.x_slot != -1 || r.state_slot[0] < 0 || r.state_slot[1] < 0 ||
              r.state_slot[0] == r.state_slot[1])
            return bad(row + "internal cell needs two distinct child slots only");
          break;
        case CellOp::kHeadLogits:
        case CellOp::kHeadArgmax:
          if (r.token != -1 || r.x_slot < 0 || r.state_slot[0] != -1 || r.state_slot[1] != -1)
            return bad(row + "head needs an x slot only");
          break;
      }
      if (head != (r.out_slot < 0)) return bad(row + (head ? "head with an out slot" : "no out slot"));
      for (SlotId s : {r.x_slot, r.state_slot[0], r.state_slot[1]}) {
        if (s < 0) continue;
        if (s >= registered_slots) return bad(row + "input slot out of range");
        if (!slots_[s].valid) return bad(row + "input slot " + std::to_string(s) + " never written");
        ins.push_back(s);
      }
      if (r.out_slot >= 0) {
        if (r.out_slot >= registered_slots) return bad(row + "out slot out of range");
        for (SlotId o : outs)
          if (o == r.out_slot) return bad(row + "out slot " + std::to_string(o) + " used twice");
        outs.push_back(r.out_slot);
      }
      auto fp = [&](SlotId s) { return s >= 0 ? slots_[s].fp : uint64_t{0}; };
      rec.fps.push_back(CellFingerprint(batch.type, r.token, fp(r.x_slot), fp(r.state_slot[0]),
                                        fp(r.state_slot[1])));
      int32_t origin = r.token;
      if (r.state_slot[0] >= 0) origin = slots_[r.state_slot[0]].origin;
      else if (r.x_slot >= 0) origin = slots_[r.x_slot].origin;
      rec.origins.push_back(origin);
    }
    for (SlotId o : outs)
      for (SlotId s : ins)
        if (o == s) return bad("slot " + std::to_string(o) + " is read and written by one batch");

    if (fail_batch && fail_batch(index, rec)) {
      rec.failed = true;
      batches.push_back(rec);
      return Internal("injected backend failure in batch " + std::to_string(index));
    }
    BatchOutput out;
    for (size_t i = 0; i < real.rows.size(); ++i) {
      const CellRow& r = real.rows[i];
      if (!head) {
        slots_[r.out_slot] = Sym{rec.fps[i], rec.origins[i], true};
        continue;
      }
      const int step = head_calls_[rec.origins[i]]++;
      out.argmax.push_back(head_argmax(rec.origins[i], step, type));
      out.max_value.push_back(static_cast<float>(rec.fps[i] & 0xFFFF));
      if (type.op == CellOp::kHeadLogits) {
        for (int64_t k = 0; k < type.outputs; ++k)
          out.logits.push_back(k < 4 ? static_cast<float>((rec.fps[i] >> (16 * k)) & 0xFFFF) : -1.0f);
      }
    }
    batches.push_back(std::move(rec));
    return out;
  }

  StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot) override {
    if (&model != model_ || slot < 0 || slot >= registered_slots)
      return InvalidArgument("fake backend: bad ReadSlot");
    std::vector<float> v(static_cast<size_t>(2 * model.spec().hidden), 0.0f);
    for (size_t k = 0; k < 4 && k < v.size(); ++k)
      v[k] = static_cast<float>((slots_[slot].fp >> (16 * k)) & 0xFFFF);
    return v;
  }

  // Every row the fake ran successfully, as fingerprints (for "each cell ran exactly once").
  std::multiset<uint64_t> ExecutedFingerprints() const {
    std::multiset<uint64_t> all;
    for (const BatchRecord& b : batches)
      if (!b.failed) all.insert(b.fps.begin(), b.fps.end());
    return all;
  }

  std::string Violations() const {
    std::string s;
    for (const auto& v : violations) s += v + "\n";
    return s;
  }

 private:
  struct Sym {
    uint64_t fp = 0;
    int32_t origin = -1;
    bool valid = false;
  };
  const Model* model_ = nullptr;
  std::vector<Sym> slots_;
  std::map<int32_t, int> head_calls_;
};

}  // namespace cellserve::runtime_testing
