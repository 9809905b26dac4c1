// The fused element-wise passes of the cell kernels (DESIGN.md §5): bias, sigmoid/tanh and the
// c/h update of one row, written straight into the output slot. AVX2 (8 lanes) when the CPU has
// it, chosen once at run time (CELLSERVE_GEMM_ISA=scalar turns it off with the GEMM's); the AVX2
// path does the same arithmetic in the same order as the scalar one (activations.h; no fused
// multiply-adds), so lanes, tail columns and ISAs give the same bits (tested). An AVX-512 version
// was measured no faster (the divisions cost the same per element). Pure functions on
// caller-owned memory; thread-safe.
#pragma once

#include <cstdint>

#include "kernels/cpu/packed_gemm.h"

namespace cellserve::cpu {

// LSTM, gates [4H] in PyTorch order i, f, g, o (before bias): c = f*c_prev + i*g, h = o*tanh(c).
void LstmPointwise(int64_t H, const float* gates, const float* bias, const float* c_prev,
                   float* h_out, float* c_out);

// Tree-LSTM leaf, gates [3H] i, o, u: c = i*u, h = o*tanh(c).
void LeafPointwise(int64_t H, const float* gates, const float* bias, float* h_out, float* c_out);

// Tree-LSTM internal node, gates [5H] i, f_left, f_right, o, u:
// c = i*u + f_left*c_left + f_right*c_right, h = o*tanh(c).
void InternalPointwise(int64_t H, const float* gates, const float* bias, const float* c_left,
                       const float* c_right, float* h_out, float* c_out);

// The same on a given ISA (tests): kScalar, or a vector one (AVX2; the CPU must have it).
void LstmPointwiseWith(GemmIsa isa, int64_t H, const float* gates, const float* bias, const float* c_prev,
                       float* h_out, float* c_out);
void LeafPointwiseWith(GemmIsa isa, int64_t H, const float* gates, const float* bias, float* h_out, float* c_out);
void InternalPointwiseWith(GemmIsa isa, int64_t H, const float* gates, const float* bias, const float* c_left,
                           const float* c_right, float* h_out, float* c_out);

}  // namespace cellserve::cpu
