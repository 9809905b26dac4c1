// The CUDA kernels of one round (DESIGN.md §5), as launch functions on a caller's stream:
//   1. LaunchGather: build X [bucket, K] (K per op below) from embedding rows and state slots,
//      addressed by the round's BatchPlan index array (kernels/gpu/batch_plan.h), in the GEMM's
//      input dtype.
//   2. (the caller) one cuBLAS GEMM for all gates: G[bucket, gates*H] = X · Wᵀ, fp32 output.
//   3. LaunchCellPointwise (bias + sigmoid/tanh + c/h update, straight into the out slots) or
//      LaunchHeadArgmax (bias, logits in place, argmax and its value per row).
// Folded token inputs (runtime/token_fold.h, made at registration by kernels/cuda/cuda_weights.h):
// a folded type gathers only h (pass input_dim 0 and no embedding: an lstm's K is H, a leaf has
// nothing to gather and no GEMM), and the pointwise pass adds the token's table row for the bias.
// The per-element arithmetic lives in kernels/gpu/cell_math.h, shared with host tests.
// State storage: fp32 [slots + 1, 2H] per model (h then c; the last slot is the padding scratch).
// Launches are asynchronous; errors (bad launch configuration) are reported by the returned
// Status via cudaGetLastError. Thread-safe as CUDA launches are; the caller owns every pointer.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/model.h"
#include "runtime/status.h"

namespace cellserve::cuda {

// The dtype of X and of the weights in the GEMM; accumulation and G are always fp32.
enum class GemmDtype { kF32, kF16, kBF16 };

// Width K of X per op: kLstm input_dim + H ([x | h_prev]); kTreeLeaf input_dim; kTreeInternal 2H
// ([h_left | h_right]); kHeadLogits/kHeadArgmax H.
int64_t GatherWidth(CellOp op, int64_t input_dim, int64_t hidden);

struct GatherArgs {
  CellOp op = CellOp::kLstm;
  const int32_t* index = nullptr;   // device: BatchPlan::index (4 * bucket ints)
  int32_t bucket = 0;
  const float* embedding = nullptr; // device [vocab, input_dim] when x comes from tokens, else null
  const float* state = nullptr;     // device [slots + 1, 2H]
  int64_t input_dim = 0;            // CellType::input_dim
  int64_t hidden = 0;
  void* x = nullptr;                // device [bucket, K] of `dtype`
  GemmDtype dtype = GemmDtype::kF32;
};
Status LaunchGather(const GatherArgs& args, cudaStream_t stream);

struct PointwiseArgs {
  CellOp op = CellOp::kLstm;        // kLstm, kTreeLeaf or kTreeInternal
  const int32_t* index = nullptr;   // device: BatchPlan::index
  int32_t bucket = 0;
  const float* gates = nullptr;     // device [bucket, gates*H] fp32, before bias; null: none (folded leaf)
  const float* bias = nullptr;      // device [gates*H]
  const float* folded = nullptr;    // device [vocab, gates*H]: the folded table (rows with a token), or null
  float* state = nullptr;           // device [slots + 1, 2H]: reads c of h_src/h2_src, writes out
  int64_t hidden = 0;
};
Status LaunchCellPointwise(const PointwiseArgs& args, cudaStream_t stream);

struct HeadArgs {
  float* logits = nullptr;          // device [bucket, outputs]: before bias; bias added in place
  const float* bias = nullptr;      // device [outputs]
  int32_t rows = 0;                 // rows to reduce (padding rows may be skipped)
  int64_t outputs = 0;
  int32_t* argmax = nullptr;        // device [rows]: first index of the maximum (torch.argmax)
  float* max_value = nullptr;       // device [rows]
};
Status LaunchHeadArgmax(const HeadArgs& args, cudaStream_t stream);

// table[r, j] += bias[j] over a row-major [rows, width] table (a folded table at registration).
Status LaunchAddBias(float* table, const float* bias, int64_t rows, int64_t width, cudaStream_t stream);

// dst[i] = src[i] converted to `dtype` (weights at registration; kF32 is a plain copy).
Status LaunchConvert(const float* src, void* dst, int64_t n, GemmDtype dtype, cudaStream_t stream);

// Bytes per element of `dtype`.
inline int64_t DtypeBytes(GemmDtype d) { return d == GemmDtype::kF32 ? 4 : 2; }

}  // namespace cellserve::cuda
