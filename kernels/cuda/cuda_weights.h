// A model's weights in GPU memory, and the store that loads them once per process: the first GPU
// gets them from host memory, the node's other GPUs by an NCCL broadcast from it (the GPU issue's
// "weights loaded once and broadcast").
// Per cell type: the gate (or head) weight [rows, K] in the GEMM dtype (fp32, or fp16/bf16
// converted on the GPU), the bias in fp32, and the embedding table in fp32 when the type is fed by
// tokens (an embedding shared by several types is uploaded once). A token-fed type whose table fits
// the cap (runtime/token_fold.h) also gets its folded table, [vocab, rows] fp32, made on the GPU at
// upload from the fp32 weights (one cuBLAS GEMM, then the bias), whatever the GEMM dtype. An
// embedding whose consumers all fold is on the GPU only while their tables are made: rounds never
// read it, so ModelWeights does not keep it (its `embedding` is null).
// Ownership: ModelWeights are shared (std::shared_ptr) by the CudaDevices that use them and freed
// on their GPU when the last one lets go; the Model must outlive them. Threads: CudaWeightStore is
// thread-safe; Prepare blocks until the weights are on every GPU.
// Errors: CUDA/NCCL failures as Status naming the call (cuda_check.h).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/cuda/cell_kernels.h"
#include "kernels/cuda/device_buffer.h"
#include "runtime/model.h"
#include "runtime/token_fold.h"

namespace cellserve::cuda {

struct CellTypeWeights {
  const void* weight = nullptr;      // [rows, K] of the store's dtype
  const float* bias = nullptr;       // [rows]
  const float* embedding = nullptr;  // [vocab, input_dim]; null when not token-fed or folded
  // Folded: [vocab, rows], row v = W_x embedding[v] + bias; a round then multiplies only weight's
  // columns [input_dim, K) (none for a leaf). Null when not folded.
  const float* folded = nullptr;
};

struct ModelWeights {
  int gpu = 0;
  GemmDtype dtype = GemmDtype::kF32;
  int64_t fold_max_bytes = 0;  // the cap the tables were made under
  std::vector<CellTypeWeights> types;  // in Model::cell_types() order
  std::vector<DeviceBuffer<char>> buffers;  // owns what `types` points into
};

// Copies (and converts) every tensor of `model` to GPU `gpu` and makes the folded tables that fit
// `fold_max_bytes` (0: none). Synchronous.
StatusOr<std::shared_ptr<const ModelWeights>> UploadModelWeights(const Model& model, int gpu, GemmDtype dtype,
                                                                 int64_t fold_max_bytes);

// How long Prepare waits for an NCCL broadcast. NCCL's kernels wait for every rank, so a GPU link
// that is down or a rank that never joins would hang them, and the node's start, for good: past
// `timeout` plus `per_gib` per GiB copied (10 s/GiB is ~0.1 GB/s, far below any GPU link), or at
// an asynchronous NCCL error, the communicators are aborted and each GPU uploads from the host.
// The aborted kernels get `after_abort` to stop; a copy still written to after that is never freed
// (its memory is leaked), and Prepare fails UNAVAILABLE saying so.
struct BroadcastLimits {
  std::chrono::milliseconds timeout{60000};
  std::chrono::milliseconds per_gib{10000};
  std::chrono::milliseconds after_abort{10000};
};

class CudaWeightStore {
 public:
  CudaWeightStore(GemmDtype dtype, int64_t fold_max_bytes, BroadcastLimits limits = {})
      : dtype_(dtype), fold_max_bytes_(fold_max_bytes), limits_(limits) {}
  // Loads each model onto gpus[0] from the host and broadcasts it to gpus[1..] with NCCL (one
  // communicator for these GPUs); if the broadcast fails (no P2P, a mismatched NCCL), uploads to
  // each GPU from the host instead, and says so on stderr (also when it takes longer than
  // BroadcastLimits allow; UNAVAILABLE if its aborted kernels do not stop). A model counts as
  // prepared only once
  // every GPU has it; models already prepared are skipped.
  Status Prepare(const std::vector<const Model*>& models, const std::vector<int>& gpus);
  // The weights of `model` on `gpu`, or null if Prepare did not put them there.
  std::shared_ptr<const ModelWeights> Get(const Model& model, int gpu) const;
  GemmDtype dtype() const { return dtype_; }
  int64_t fold_max_bytes() const { return fold_max_bytes_; }

 private:
  // Copies `first` (on gpus[0]) to gpus[1..] with NCCL; appends their weights to `out`. Sets
  // `wedged` when an aborted broadcast's kernels did not stop (BroadcastLimits::after_abort): then
  // the GPUs cannot be used (UNAVAILABLE). Defined only in builds with NCCL.
  Status Broadcast(const Model& model, const std::shared_ptr<const ModelWeights>& first, const std::vector<int>& gpus,
                   std::vector<std::shared_ptr<const ModelWeights>>* out, bool* wedged);
  const GemmDtype dtype_;
  const int64_t fold_max_bytes_;
  const BroadcastLimits limits_;
  mutable std::mutex mu_;
  std::map<std::pair<const Model*, int>, std::shared_ptr<const ModelWeights>> weights_;  // guarded by mu_
};

}  // namespace cellserve::cuda
