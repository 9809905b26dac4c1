// CpuBackend: the CPU backend (DESIGN.md §5). Per batch: gather the rows' inputs by slot index
// into one [B, K] matrix, ONE GEMM against the cell type's concatenated gate weights ([gates*H, K],
// packed at registration; see packed_gemm.h for why this is our batch-invariant GEMM and not
// OpenBLAS's sgemm), then one fused element-wise pass (bias, sigmoid/tanh, c and h update) writing
// straight into the output slots. Heads: one GEMM + bias + argmax.
// State storage: per registered model, `slots` rows of [h | c] (2H floats each), zero-initialised.
// Owns its scratch buffers, so one thread at a time may call it; several CpuBackends may run on
// several threads. OpenBLAS's thread count is process-wide and set from the options.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "kernels/cpu/packed_gemm.h"
#include "runtime/backend.h"

namespace cellserve::cpu {

struct CpuBackendOptions {
  // OpenBLAS threads for this process (openblas_set_num_threads; OpenBLAS serves the baselines
  // and benchmarks). 0 leaves it unchanged. Default 1: one device per core.
  int blas_threads = 1;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(CpuBackendOptions options = {});

  Status RegisterModel(const Model& model, int32_t slots) override;
  StatusOr<BatchOutput> Run(const CellBatch& batch) override;
  StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot) override;

 private:
  struct ModelState {
    int32_t slots = 0;
    int64_t hidden = 0;
    std::vector<float> storage;  // [slots, 2H]: h then c
    std::vector<PackedMatrix> packed;  // per cell type: its weight, packed for GemmPacked
  };
  Status CheckBatch(const CellBatch& batch, const ModelState& state) const;
  void RunLstm(const CellType& type, const CellBatch& batch, ModelState& state);
  void RunTreeLeaf(const CellType& type, const CellBatch& batch, ModelState& state);
  void RunTreeInternal(const CellType& type, const CellBatch& batch, ModelState& state);
  BatchOutput RunHead(const CellType& type, const CellBatch& batch, const ModelState& state);

  std::map<const Model*, ModelState> models_;
  std::vector<float> x_;      // gathered inputs [B, K]
  std::vector<float> gates_;  // GEMM output [B, outputs]
  std::vector<float> zeros_;  // H zeros: the state of a cell with no predecessor
};

}  // namespace cellserve::cpu
