// Batch-invariant GEMM for the CPU backend: C[M, N] = X[M, K] * W[N, K]^T with W packed once (at
// model registration) into 16-column panels. Every output element is accumulated in the same
// fixed order (k = 0..K-1, one fused multiply-add per k, whatever M is and wherever its row sits
// in the batch), so a request's result is bitwise independent of its batch-mates. OpenBLAS's
// sgemm is not: its edge micro-kernels round differently by row position (measured: 1-ulp gate
// differences that grow to 1e-6 in logits and can flip a greedy decoder's argmax).
// Micro-kernels, the widest the CPU has (checked once at run time): AVX-512, 6 rows x 32 columns
// (two panels); AVX2+FMA, 6 rows x 16 columns; scalar fmaf. All run the same fma chain per
// element, so they give the same bits: results do not depend on the machine's ISA either.
// CELLSERVE_GEMM_ISA=scalar|avx2|avx512 caps the choice (to compare them). K is blocked by 256 so
// a panel block stays in L1. PackedMatrix is immutable after packing (panels 64-byte aligned);
// GemmPacked is thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

namespace cellserve::cpu {

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Packs W [rows = N, cols = K], row-major. Padding columns are zero.
  PackedMatrix(const float* w, int64_t n, int64_t k);
  // The same from a block of a wider matrix: row j starts at w + j * ldw (ldw >= k).
  PackedMatrix(const float* w, int64_t n, int64_t k, int64_t ldw);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t panels() const { return (n_ + kPanel - 1) / kPanel; }
  // Panel p: k() rows of kPanel floats: W[p*16 + j][kk] at panel(p)[kk * 16 + j].
  const float* panel(int64_t p) const { return data_.get() + p * k_ * kPanel; }

  static constexpr int64_t kPanel = 16;

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  int64_t n_ = 0, k_ = 0;
  std::shared_ptr<float> data_;  // immutable once packed, so copies share it
};

enum class GemmIsa { kScalar, kAvx2, kAvx512 };
const char* GemmIsaName(GemmIsa isa);
// Whether this CPU can run `isa`.
bool GemmIsaSupported(GemmIsa isa);

// C[M, N] = X[M, K] * W^T. ldx, ldc: row strides of X and C in floats. M may be 0.
void GemmPacked(int64_t m, const float* x, int64_t ldx, const PackedMatrix& w, float* c, int64_t ldc);

// The same with a given micro-kernel (tests and benchmarks); `isa` must be supported.
void GemmPackedWith(GemmIsa isa, int64_t m, const float* x, int64_t ldx, const PackedMatrix& w,
                    float* c, int64_t ldc);

// The micro-kernel GemmPacked uses: the widest supported, capped by CELLSERVE_GEMM_ISA.
GemmIsa GemmPackedIsa();

}  // namespace cellserve::cpu
