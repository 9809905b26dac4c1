// What one LSTM step of bench_cuda_lstm works on: the weights of one layer (ours: W [4H, 2H]
// row-major, columns [x | h], gates i, f, g, o; PyTorch's init range) and a pool of states with
// the two ping-pong index arrays in BatchPlan layout (kernels/gpu/batch_plan.h).
// Contract: Init fills everything deterministically (fixed seeds) on ctx.stream; the host copies
// (host_w, host_bias, host_index) mirror the device data for the host reference and the checks.
#pragma once

#include <cstdint>
#include <vector>

#include "bench/cuda/context.cuh"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

struct LstmWeights {
  int H = 0;
  FloatBuffer w, bias;
  std::vector<float> host_w, host_bias;  // for the host reference

  // Returns with the stream synchronized.
  Status Init(Context& ctx, int hidden);
  double bytes() const { return 4.0 * H * 2.0 * H * sizeof(float); }
};

struct StatePool {
  int H = 0, B = 0;
  FloatBuffer state;            // [2B + 1, 2H]: set A = slots [0, B), set B = [B, 2B), scratch 2B
  IndexBuffer index[2];         // [0]: A -> B, [1]: B -> A; kPlanArrays * B ints each
  std::vector<int32_t> host_index[2];

  int slots() const { return 2 * B; }
  int64_t floats() const { return int64_t{slots() + 1} * 2 * H; }

  // The index arrays of one step from set `from` to set `to`: x is the h of another slot of the
  // same set, h_prev the slot's own, no second child.
  static std::vector<int32_t> Plan(int B, int from, int to);

  Status Init(Context& ctx, int hidden, int batch);
  // Fills the whole state with uniform [-1, 1) values from `seed` (and B, H).
  Status Randomize(Context& ctx, uint32_t seed);
};

}  // namespace cellserve::lstm_bench
