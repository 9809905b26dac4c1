// "ours": the server's LSTM step as bench_cuda_lstm times it: LaunchGather (kLstm, x and h_prev
// from state slots) + ONE cublasGemmEx for all four gates (fp32, CUBLAS_COMPUTE_32F, no TF32) +
// LaunchCellPointwise, all from kernels/cuda/cell_kernels.h.
// Contract: Init once per (weights, pool), both of which must outlive the step; Enqueue(d) makes
// one step in direction d (0: A -> B, 1: B -> A) as plain launches on ctx.stream (capturable).
#pragma once

#include "bench/cuda/context.cuh"
#include "bench/cuda/lstm_problem.cuh"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

class OursStep {
 public:
  Status Init(Context& ctx, const LstmWeights& w, StatePool& pool);
  Status Enqueue(int d) const;

 private:
  Context* ctx_ = nullptr;
  const LstmWeights* w_ = nullptr;
  StatePool* pool_ = nullptr;
  FloatBuffer x_, g_;
};

}  // namespace cellserve::lstm_bench
