// The per-element arithmetic of the CUDA cell kernels (kernels/cuda/cell_kernels.h), as inline
// functions that both nvcc (__host__ __device__, called from the kernels) and the host compiler
// (called from host tests that emulate the kernels on the CPU) compile. No CUDA headers or
// intrinsics here: only <cmath>'s ::expf / ::tanhf, which both sides provide.
// Contract, per round (see kernels/gpu/batch_plan.h for the index array):
//   GatherValue           X[row, col] of the GEMM input, read from embedding rows and state slots.
//   CellPointwiseElement  bias + activations + c/h update of one (row, column j < H), written into
//                         the row's out slot; the same formulas and order as the CPU backend
//                         (kernels/cpu/pointwise.cc), with accurate expf/tanhf instead of the CPU's
//                         approximation, so results agree to ~1e-6 relative, not bitwise. For
//                         finite gates: a NaN gate (weights are finite, Model::Create checks, so
//                         only an overflow to inf - inf makes one) gives NaN here, while the
//                         CPU's clamped exp turns it into a finite value.
//   PartialArgMax +       the head kernel: each lane adds the bias to its columns in place and
//   CombineArgMax         keeps their argmax; a tree of CombineArgMax over the lanes gives exactly
//                         the CPU backend's (argmax, max_value): the first index wins ties.
// State layout: slot s holds h at state[s*2H, s*2H + H) and c right after it. A slot or token of -1
// reads as zeros. Offsets are int64 (slots * 2H may exceed 2^31). Pure functions; thread-safe.
// Concurrency: a row's out slot must not be an input of ANOTHER real row of the same round (the
// StatePool never does that); a row may write its own h_src (each element is read before written).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/gpu/batch_plan.h"
#include "runtime/model.h"

#if defined(__CUDACC__)
#define CS_HD __host__ __device__
#else
#define CS_HD
#endif

namespace cellserve::gpu {

// Gate blocks per cell: lstm [i, f, g, o], leaf [i, o, u], internal [i, f_left, f_right, o, u].
// Heads have no gates (their GEMM output is the logits): 0.
CS_HD inline int64_t GateCount(CellOp op) {
  switch (op) {
    case CellOp::kLstm: return 4;
    case CellOp::kTreeLeaf: return 3;
    case CellOp::kTreeInternal: return 5;
    case CellOp::kHeadLogits:
    case CellOp::kHeadArgmax: return 0;
  }
  return 0;
}

// Width K of X: lstm [x | h_prev] input_dim + H; leaf input_dim; internal [h_left | h_right] 2H;
// heads H.
CS_HD inline int64_t GatherWidthOf(CellOp op, int64_t input_dim, int64_t hidden) {
  switch (op) {
    case CellOp::kLstm: return input_dim + hidden;
    case CellOp::kTreeLeaf: return input_dim;
    case CellOp::kTreeInternal: return 2 * hidden;
    case CellOp::kHeadLogits:
    case CellOp::kHeadArgmax: return hidden;
  }
  return 0;
}

// Entry `row` of plan array `array` (x_src, h_src, h2_src, out).
CS_HD inline int32_t PlanEntry(const int32_t* index, int32_t bucket, PlanArray array, int32_t row) {
  return index[static_cast<int64_t>(array) * bucket + row];
}

// h[j] / c[j] of `slot`; 0 for slot -1.
CS_HD inline float SlotH(const float* state, int32_t slot, int64_t hidden, int64_t j) {
  return slot < 0 ? 0.0f : state[static_cast<int64_t>(slot) * 2 * hidden + j];
}
CS_HD inline float SlotC(const float* state, int32_t slot, int64_t hidden, int64_t j) {
  return slot < 0 ? 0.0f : state[static_cast<int64_t>(slot) * 2 * hidden + hidden + j];
}

// x[col] of a row whose x_src is `source`: embedding row `source` if the cell type has an
// embedding, else h of slot `source`; 0 for -1.
CS_HD inline float InputValue(const float* embedding, const float* state, int32_t source,
                              int64_t input_dim, int64_t hidden, int64_t col) {
  if (source < 0) return 0.0f;
  if (embedding != nullptr) return embedding[static_cast<int64_t>(source) * input_dim + col];
  return SlotH(state, source, hidden, col);
}

// X[row, col] of the round, 0 <= col < GatherWidthOf(op, input_dim, hidden).
CS_HD inline float GatherValue(CellOp op, const int32_t* index, int32_t bucket, int32_t row, int64_t col,
                               const float* embedding, const float* state, int64_t input_dim,
                               int64_t hidden) {
  switch (op) {
    case CellOp::kLstm:
      if (col < input_dim)
        return InputValue(embedding, state, PlanEntry(index, bucket, kXSrc, row), input_dim, hidden, col);
      return SlotH(state, PlanEntry(index, bucket, kHSrc, row), hidden, col - input_dim);
    case CellOp::kTreeLeaf:
      return InputValue(embedding, state, PlanEntry(index, bucket, kXSrc, row), input_dim, hidden, col);
    case CellOp::kTreeInternal:
      if (col < hidden) return SlotH(state, PlanEntry(index, bucket, kHSrc, row), hidden, col);
      return SlotH(state, PlanEntry(index, bucket, kH2Src, row), hidden, col - hidden);
    case CellOp::kHeadLogits:
    case CellOp::kHeadArgmax:
      return SlotH(state, PlanEntry(index, bucket, kXSrc, row), hidden, col);
  }
  return 0.0f;
}

// Accurate activations (the CPU's Sigmoid/Tanh formulas use a ~2 ulp exp approximation instead).
CS_HD inline float CellSigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
CS_HD inline float CellTanh(float x) { return ::tanhf(x); }

// One element (row, j < H) of the fused pass: gates of the row ([bucket, GateCount(op) * H], before
// bias) + bias, activations, c/h update into the row's out slot. kLstm reads c_prev of h_src,
// kTreeInternal c of h_src (left) and h2_src (right); absent inputs are zeros. A row with out -1
// writes nothing; heads are no-ops.
// Folded token inputs (runtime/token_fold.h): `folded` is then the cell type's table
// [vocab, GateCount(op) * H], and a row with a token (x_src >= 0) adds its token's row instead of
// `bias`; `gates` holds only the recurrent part (W_h h), or is null when there is none (a leaf).
// `folded` null: not folded. The sum is gates + table row, the CPU backend's order.
CS_HD inline void CellPointwiseElement(CellOp op, const int32_t* index, int32_t bucket, int32_t row,
                                       int64_t j, const float* gates, const float* bias, const float* folded,
                                       float* state, int64_t hidden) {
  const int32_t out = PlanEntry(index, bucket, kOut, row);
  if (out < 0) return;
  const int64_t H = hidden;
  const int64_t width = GateCount(op) * H;
  const float* g = gates == nullptr ? nullptr : gates + static_cast<int64_t>(row) * width;
  const int32_t token = PlanEntry(index, bucket, kXSrc, row);
  const float* b = folded != nullptr && token >= 0 ? folded + static_cast<int64_t>(token) * width : bias;
  // Gate block k's pre-activation at column j.
  auto pre = [&](int64_t k) { return (g == nullptr ? 0.0f : g[k * H + j]) + b[k * H + j]; };
  const int32_t first = PlanEntry(index, bucket, kHSrc, row);
  float c_new = 0.0f;
  float o = 0.0f;
  switch (op) {
    case CellOp::kLstm: {
      const float i = CellSigmoid(pre(0));
      const float f = CellSigmoid(pre(1));
      const float u = CellTanh(pre(2));
      o = CellSigmoid(pre(3));
      c_new = f * SlotC(state, first, H, j) + i * u;
      break;
    }
    case CellOp::kTreeLeaf: {
      const float i = CellSigmoid(pre(0));
      o = CellSigmoid(pre(1));
      const float u = CellTanh(pre(2));
      c_new = i * u;
      break;
    }
    case CellOp::kTreeInternal: {
      const int32_t second = PlanEntry(index, bucket, kH2Src, row);
      const float i = CellSigmoid(pre(0));
      const float fl = CellSigmoid(pre(1));
      const float fr = CellSigmoid(pre(2));
      o = CellSigmoid(pre(3));
      const float u = CellTanh(pre(4));
      c_new = i * u + fl * SlotC(state, first, H, j) + fr * SlotC(state, second, H, j);
      break;
    }
    case CellOp::kHeadLogits:
    case CellOp::kHeadArgmax:
      return;
  }
  float* out_h = state + static_cast<int64_t>(out) * 2 * H;
  out_h[H + j] = c_new;
  out_h[j] = o * CellTanh(c_new);
}

// One element of a folded table's bias pass (registration): row r, column j of table [rows, width]
// gets bias[j] added, completing W_x embedding[r] + b.
CS_HD inline void AddBiasElement(float* table, const float* bias, int64_t width, int64_t i) {
  table[i] += bias[i % width];
}

// A candidate of the head's argmax: a logit and its column.
struct ArgMax {
  float value;
  int32_t index;
};

// The identity of CombineArgMax (no column has index INT32_MAX): loses to every candidate.
CS_HD inline ArgMax ArgMaxIdentity() { return ArgMax{-INFINITY, INT32_MAX}; }

// Rank classes that reproduce the CPU's sequential loop (`if (v > best) best = v`, best starting
// at column 0) for NaN logits too: a NaN in column 0 is never beaten, a NaN elsewhere beats only
// the identity.
CS_HD inline int ArgMaxClass(ArgMax a) {
  if (a.index == INT32_MAX) return -1;  // the identity
  if (a.value == a.value) return 1;     // an ordinary value, +-inf included
  return a.index == 0 ? 2 : 0;
}

// The better of two candidates: the larger value; on equal values the smaller index (torch.argmax's
// first-index-wins). Commutative and associative, so any reduction tree gives the CPU's answer.
CS_HD inline ArgMax CombineArgMax(ArgMax a, ArgMax b) {
  const int class_a = ArgMaxClass(a), class_b = ArgMaxClass(b);
  if (class_a != class_b) return class_b > class_a ? b : a;
  if (b.value > a.value) return b;
  if (a.value > b.value) return a;
  return b.index < a.index ? b : a;  // equal values (or two NaNs)
}

// One lane of the head reduction: for columns lane, lane + lanes, ... < outputs, adds bias[col]
// (bias may be null: none) to logits_row[col] in place, and returns the argmax of those columns
// (ArgMaxIdentity() when the lane has none).
CS_HD inline ArgMax PartialArgMax(float* logits_row, const float* bias, int64_t outputs, int32_t lane,
                                  int32_t lanes) {
  ArgMax best = ArgMaxIdentity();
  for (int64_t col = lane; col < outputs; col += lanes) {
    float v = logits_row[col];
    if (bias != nullptr) {
      v += bias[col];
      logits_row[col] = v;
    }
    best = CombineArgMax(best, ArgMax{v, static_cast<int32_t>(col)});
  }
  return best;
}

}  // namespace cellserve::gpu
