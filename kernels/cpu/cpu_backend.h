// CpuBackend: the CPU backend (DESIGN.md §5). Per batch: gather the rows' inputs by slot index
// into one [B, K] matrix, ONE GEMM against the cell type's concatenated gate weights ([gates*H, K],
// packed at registration; see packed_gemm.h for why this is our batch-invariant GEMM and not
// OpenBLAS's sgemm), then one fused element-wise pass (bias, sigmoid/tanh, c and h update) writing
// straight into the output slots. Heads: one GEMM + bias + argmax.
// Token-fed cell types whose table fits options.fold_max_bytes have their input projection folded
// (cell_weights.h): the GEMM then covers only h, and the token's precomputed row stands in for
// W_x x + bias (a folded leaf needs no GEMM at all).
// State storage: per registered model, `slots` rows of [h | c] (2H floats each), zero-initialised
// (runtime/zero_floats.h: the memory of a slot is taken when it is first used).
// Owns its scratch buffers, so one thread at a time may call it; several CpuBackends may run on
// several threads.
// Prepared weights are immutable, so CPU devices of one process share them through a
// PackedWeightCache (one copy of the weights and folded tables in memory and in the shared cache,
// not one per device); without a cache each backend prepares its own.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cpu/cell_weights.h"
#include "kernels/cpu/packed_gemm.h"
#include "runtime/backend.h"
#include "runtime/zero_floats.h"

namespace cellserve::cpu {

// The prepared gate/head weights of each model, shared by the backends that hold the cache.
// Thread-safe. An entry lives while some backend holds it (the cache keeps weak references).
// Keyed by the Model's address, which is stable while the model is registered anywhere (the
// Backend contract: a registered model outlives its registration), the fold cap and the compute
// precision.
class PackedWeightCache {
 public:
  using Weights = std::vector<CpuCellWeights>;  // one per cell type, in Model::cell_types() order
  std::shared_ptr<const Weights> Get(const Model& model, const CellWeightOptions& options);
  // Whether Get would find them prepared already (some backend holds them).
  bool Holds(const Model& model, const CellWeightOptions& options) const;
  // Models packed so far (for tests: shared devices pack once).
  int64_t packs() const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<const Model*, int64_t, bool>, std::weak_ptr<const Weights>> entries_;  // guarded by mu_
  int64_t packs_ = 0;  // guarded by mu_
};

struct CpuBackendOptions {
  // Where prepared weights come from; null = this backend prepares its own copy.
  std::shared_ptr<PackedWeightCache> weight_cache;
  // Folding of token inputs (cell_weights.h): the cap per cell type's table, and the threads
  // that compute the tables at registration.
  CellWeightOptions cell_weights;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(CpuBackendOptions options = {});

  // UNAVAILABLE, registering nothing, when options asked for bf16 compute where AmxBf16Missing
  // says why not; RESOURCE_EXHAUSTED, registering nothing, when the state slots and the prepared
  // weights (folded tables included; not counted when a device sharing the cache holds them
  // already) are more than the memory this process may still take (its headroom,
  // runtime/memory_limit.h: what other registrations took counts), or when they cannot be
  // allocated all the same (never an exception).
  Status RegisterModel(const Model& model, int32_t slots) override;
  StatusOr<BatchOutput> Run(const CellBatch& batch) override;
  StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot) override;

  // The bytes of folded tables of a registered model (0 when none is folded or not registered).
  int64_t FoldedBytes(const Model& model) const;

 private:
  struct ModelState {
    int32_t slots = 0;
    int64_t hidden = 0;
    ZeroFloats storage;  // [slots, 2H]: h then c; pages taken as they are first written
    std::shared_ptr<const PackedWeightCache::Weights> weights;  // per cell type
  };
  void RunLstm(const CellType& type, const CellBatch& batch, ModelState& state);
  void RunTreeLeaf(const CellType& type, const CellBatch& batch, ModelState& state);
  void RunTreeInternal(const CellType& type, const CellBatch& batch, ModelState& state);
  BatchOutput RunHead(const CellType& type, const CellBatch& batch, const ModelState& state);

  std::shared_ptr<PackedWeightCache> weight_cache_;
  CellWeightOptions cell_weight_options_;
  std::map<const Model*, ModelState> models_;
  std::vector<float> x_;      // gathered inputs [B, K]
  std::vector<float> gates_;  // GEMM output [B, outputs]
  std::vector<float> zeros_;  // H zeros: the state of a cell with no predecessor
};

}  // namespace cellserve::cpu
