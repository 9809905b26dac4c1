// "unfused": the baseline step of bench_cuda_lstm, to show what fusion buys: X gathered by two
// copy kernels, four GEMMs (one per gate, [H, 2H] each) and ten element-wise kernels (bias add x4,
// sigmoid x3, tanh, c update, h update). Same math, weights and state layout as OursStep.
// Contract: as OursStep (ours_step.cuh): Init once, Enqueue(d) = one step in direction d as plain
// launches on ctx.stream (capturable); weights and pool must outlive it.
#pragma once

#include "bench/cuda/context.cuh"
#include "bench/cuda/lstm_problem.cuh"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

class UnfusedStep {
 public:
  Status Init(Context& ctx, const LstmWeights& w, StatePool& pool);
  Status Enqueue(int d) const;

 private:
  float* Gate(int gate) const;  // gate's [B, H] block of g_
  Context* ctx_ = nullptr;
  const LstmWeights* w_ = nullptr;
  StatePool* pool_ = nullptr;
  FloatBuffer x_, g_;
};

}  // namespace cellserve::lstm_bench
