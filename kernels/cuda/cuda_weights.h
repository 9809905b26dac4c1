// A model's weights in GPU memory, and the store that loads them once per process: the first GPU
// gets them from host memory, the node's other GPUs by an NCCL broadcast from it (the GPU issue's
// "weights loaded once and broadcast").
// Per cell type: the gate (or head) weight [rows, K] in the GEMM dtype (fp32, or fp16/bf16
// converted on the GPU), the bias in fp32, and the embedding table in fp32 when the type is fed by
// tokens (an embedding shared by several types is uploaded once).
// Ownership: ModelWeights are shared (std::shared_ptr) by the CudaDevices that use them and freed
// on their GPU when the last one lets go; the Model must outlive them. Threads: CudaWeightStore is
// thread-safe; Prepare blocks until the weights are on every GPU.
// Errors: CUDA/NCCL failures as Status naming the call (cuda_check.h).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/cuda/cell_kernels.h"
#include "kernels/cuda/device_buffer.h"
#include "runtime/model.h"

namespace cellserve::cuda {

struct CellTypeWeights {
  const void* weight = nullptr;      // [rows, K] of the store's dtype
  const float* bias = nullptr;       // [rows]
  const float* embedding = nullptr;  // [vocab, input_dim] or null
};

struct ModelWeights {
  int gpu = 0;
  GemmDtype dtype = GemmDtype::kF32;
  std::vector<CellTypeWeights> types;  // in Model::cell_types() order
  std::vector<DeviceBuffer<char>> buffers;  // owns what `types` points into
};

// Copies (and converts) every tensor of `model` to GPU `gpu`. Synchronous.
StatusOr<std::shared_ptr<const ModelWeights>> UploadModelWeights(const Model& model, int gpu, GemmDtype dtype);

class CudaWeightStore {
 public:
  explicit CudaWeightStore(GemmDtype dtype) : dtype_(dtype) {}
  // Loads each model onto gpus[0] from the host and broadcasts it to gpus[1..] with NCCL (one
  // communicator for these GPUs). Models already prepared are skipped.
  Status Prepare(const std::vector<const Model*>& models, const std::vector<int>& gpus);
  // The weights of `model` on `gpu`, or null if Prepare did not put them there.
  std::shared_ptr<const ModelWeights> Get(const Model& model, int gpu) const;
  GemmDtype dtype() const { return dtype_; }

 private:
  const GemmDtype dtype_;
  mutable std::mutex mu_;
  std::map<std::pair<const Model*, int>, std::shared_ptr<const ModelWeights>> weights_;  // guarded by mu_
};

}  // namespace cellserve::cuda
