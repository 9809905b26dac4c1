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
// 16-bit panels: when every weight is exactly a bf16 (or an fp16) value, as the weights of a model
// stored as BF16 (F16) are, PackedMatrix also keeps 16-bit panels, and products of up to
// kNarrowMaxRows rows run on them: the micro-kernels widen each weight, exactly, as they load it,
// so they stream half the bytes (about 2x at batch 1, where the step is memory-bound) and give the
// same bits as the fp32 panels. Larger products use the fp32 panels: there the step is
// compute-bound, and widening cost up to 1.2x (measured at batch 256). The price is the 16-bit
// copy: 1.5x the packed bytes, for those matrices only.
// bf16 compute (--cpu-precision bf16, amx_gemm.h): a matrix made by PackedMatrix::Bf16Compute holds
// AMX tiles instead of panels, and GemmPacked runs every product of it on them (X rounded to bf16,
// fp32 accumulation): not the fp32 results, still independent of batch-mates.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

#include "kernels/cpu/amx_gemm.h"
#include "runtime/tensor.h"

namespace cellserve::cpu {

// The narrowest dtype (runtime/tensor.h) that holds every weight of W [n, k] (row stride ldw)
// exactly: kBF16 if all are bf16 values, else kF16 if all are fp16 values, else kF32.
DType ExactDType(const float* w, int64_t n, int64_t k, int64_t ldw);

// Products of at most this many rows use a matrix's 16-bit panels when it has them.
inline constexpr int64_t kNarrowMaxRows = 24;

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Packs W [rows = N, cols = K], row-major; adds 16-bit panels in ExactDType when that is
  // not kF32. Padding columns are zero.
  PackedMatrix(const float* w, int64_t n, int64_t k);
  // The same from a block of a wider matrix: row j starts at w + j * ldw (ldw >= k).
  PackedMatrix(const float* w, int64_t n, int64_t k, int64_t ldw);
  // The same with 16-bit panels in `narrow` (kF32: none), which must hold every weight exactly.
  PackedMatrix(const float* w, int64_t n, int64_t k, int64_t ldw, DType narrow);

  // W [n, k] (row stride ldw) for bf16 compute: AMX tiles only, no panels. Only where
  // AmxBf16Missing is empty.
  static PackedMatrix Bf16Compute(const float* w, int64_t n, int64_t k, int64_t ldw);

  int64_t n() const { return n_; }
  // The AMX tiles of a Bf16Compute matrix, else null (then the panels below exist).
  const AmxPanels* amx() const { return amx_.get(); }
  int64_t k() const { return k_; }
  int64_t panels() const { return (n_ + kPanel - 1) / kPanel; }
  // Panel p: k() rows of kPanel floats: W[p*16 + j][kk] at panel(p)[kk * 16 + j].
  const float* panel(int64_t p) const { return data_.get() + p * k_ * kPanel; }
  // The 16-bit panels' format, kF32 when there are none; panel p laid out as panel(p), 2 bytes a weight.
  DType narrow_dtype() const { return narrow_dtype_; }
  const uint16_t* narrow_panel(int64_t p) const { return narrow_.get() + p * k_ * kPanel; }
  // Bytes of every panel kept (fp32 and 16-bit).
  int64_t bytes() const;
  // What bytes() will be, before packing: W [n, k] with 16-bit panels when `narrow`, or as
  // Bf16Compute's tiles when `bf16_compute`.
  static int64_t BytesFor(int64_t n, int64_t k, bool narrow, bool bf16_compute = false);

  static constexpr int64_t kPanel = 16;

 private:
  template <typename T>
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  int64_t n_ = 0, k_ = 0;
  std::shared_ptr<float> data_;  // immutable once packed, so copies share it
  DType narrow_dtype_ = DType::kF32;
  std::shared_ptr<uint16_t> narrow_;  // null unless narrow_dtype_ != kF32
  std::shared_ptr<const AmxPanels> amx_;  // Bf16Compute: the tiles, and no panels
};

enum class GemmIsa { kScalar, kAvx2, kAvx512 };
const char* GemmIsaName(GemmIsa isa);
// Whether this CPU can run `isa`.
bool GemmIsaSupported(GemmIsa isa);

// C[M, N] = X[M, K] * W^T. ldx, ldc: row strides of X and C in floats. M may be 0. A Bf16Compute
// matrix runs on its AMX tiles (GemmPackedWith too, whatever `isa`).
void GemmPacked(int64_t m, const float* x, int64_t ldx, const PackedMatrix& w, float* c, int64_t ldc);

// The same with a given micro-kernel (tests and benchmarks); `isa` must be supported.
void GemmPackedWith(GemmIsa isa, int64_t m, const float* x, int64_t ldx, const PackedMatrix& w,
                    float* c, int64_t ldc);

// The micro-kernel GemmPacked uses: the widest supported, capped by CELLSERVE_GEMM_ISA.
GemmIsa GemmPackedIsa();

}  // namespace cellserve::cpu
