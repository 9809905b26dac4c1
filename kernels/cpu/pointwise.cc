#include "kernels/cpu/pointwise.h"

#include "kernels/cpu/activations.h"
#include "kernels/cpu/packed_gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CELLSERVE_X86 1
#endif

namespace cellserve::cpu {

namespace {

// One column j of each cell op, scalar. `Gate` reads gate q (bias added) at column j.
struct ScalarOps {
  static void Lstm(int64_t H, int64_t j, const float* g, const float* b, const float* cp, float* h, float* c) {
    const float i = Sigmoid(g[j] + b[j]);
    const float f = Sigmoid(g[H + j] + b[H + j]);
    const float u = Tanh(g[2 * H + j] + b[2 * H + j]);
    const float o = Sigmoid(g[3 * H + j] + b[3 * H + j]);
    const float cn = f * cp[j] + i * u;
    c[j] = cn;
    h[j] = o * Tanh(cn);
  }
  static void Leaf(int64_t H, int64_t j, const float* g, const float* b, float* h, float* c) {
    const float i = Sigmoid(g[j] + b[j]);
    const float o = Sigmoid(g[H + j] + b[H + j]);
    const float u = Tanh(g[2 * H + j] + b[2 * H + j]);
    const float cn = i * u;
    c[j] = cn;
    h[j] = o * Tanh(cn);
  }
  static void Internal(int64_t H, int64_t j, const float* g, const float* b, const float* cl,
                       const float* cr, float* h, float* c) {
    const float i = Sigmoid(g[j] + b[j]);
    const float fl = Sigmoid(g[H + j] + b[H + j]);
    const float fr = Sigmoid(g[2 * H + j] + b[2 * H + j]);
    const float o = Sigmoid(g[3 * H + j] + b[3 * H + j]);
    const float u = Tanh(g[4 * H + j] + b[4 * H + j]);
    const float cn = i * u + fl * cl[j] + fr * cr[j];
    c[j] = cn;
    h[j] = o * Tanh(cn);
  }
};

#ifdef CELLSERVE_X86
#define CS_AVX2 __attribute__((target("avx2")))

// ExpApprox of activations.h on 8 lanes, the same operations in the same order (no FMA).
CS_AVX2 inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 shifter = _mm256_set1_ps(12582912.0f);
  __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), shifter), shifter);
  __m256 r = _mm256_add_ps(_mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f))),
                           _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), _mm256_set1_ps(1.0f));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}
CS_AVX2 inline __m256 Sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
CS_AVX2 inline __m256 Tanh8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = Exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), x));
  return _mm256_sub_ps(_mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, e)), one);
}
CS_AVX2 inline __m256 Gate8(const float* g, const float* b, int64_t off) {
  return _mm256_add_ps(_mm256_loadu_ps(g + off), _mm256_loadu_ps(b + off));
}

CS_AVX2 void LstmAvx2(int64_t H, const float* g, const float* b, const float* cp, float* h, float* c) {
  int64_t j = 0;
  for (; j + 8 <= H; j += 8) {
    const __m256 i = Sigmoid8(Gate8(g, b, j));
    const __m256 f = Sigmoid8(Gate8(g, b, H + j));
    const __m256 u = Tanh8(Gate8(g, b, 2 * H + j));
    const __m256 o = Sigmoid8(Gate8(g, b, 3 * H + j));
    const __m256 cn = _mm256_add_ps(_mm256_mul_ps(f, _mm256_loadu_ps(cp + j)), _mm256_mul_ps(i, u));
    _mm256_storeu_ps(c + j, cn);
    _mm256_storeu_ps(h + j, _mm256_mul_ps(o, Tanh8(cn)));
  }
  for (; j < H; ++j) ScalarOps::Lstm(H, j, g, b, cp, h, c);
}

CS_AVX2 void LeafAvx2(int64_t H, const float* g, const float* b, float* h, float* c) {
  int64_t j = 0;
  for (; j + 8 <= H; j += 8) {
    const __m256 i = Sigmoid8(Gate8(g, b, j));
    const __m256 o = Sigmoid8(Gate8(g, b, H + j));
    const __m256 u = Tanh8(Gate8(g, b, 2 * H + j));
    const __m256 cn = _mm256_mul_ps(i, u);
    _mm256_storeu_ps(c + j, cn);
    _mm256_storeu_ps(h + j, _mm256_mul_ps(o, Tanh8(cn)));
  }
  for (; j < H; ++j) ScalarOps::Leaf(H, j, g, b, h, c);
}

CS_AVX2 void InternalAvx2(int64_t H, const float* g, const float* b, const float* cl, const float* cr,
                          float* h, float* c) {
  int64_t j = 0;
  for (; j + 8 <= H; j += 8) {
    const __m256 i = Sigmoid8(Gate8(g, b, j));
    const __m256 fl = Sigmoid8(Gate8(g, b, H + j));
    const __m256 fr = Sigmoid8(Gate8(g, b, 2 * H + j));
    const __m256 o = Sigmoid8(Gate8(g, b, 3 * H + j));
    const __m256 u = Tanh8(Gate8(g, b, 4 * H + j));
    const __m256 cn = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(i, u), _mm256_mul_ps(fl, _mm256_loadu_ps(cl + j))),
                                    _mm256_mul_ps(fr, _mm256_loadu_ps(cr + j)));
    _mm256_storeu_ps(c + j, cn);
    _mm256_storeu_ps(h + j, _mm256_mul_ps(o, Tanh8(cn)));
  }
  for (; j < H; ++j) ScalarOps::Internal(H, j, g, b, cl, cr, h, c);
}

#endif

// AVX2 where the CPU has it (an AVX-512 version measured no faster: 2026-12-06), unless
// CELLSERVE_GEMM_ISA=scalar caps the GEMM's choice.
GemmIsa PointwiseIsa() {
  static const GemmIsa isa = GemmPackedIsa() == GemmIsa::kScalar ? GemmIsa::kScalar : GemmIsa::kAvx2;
  return isa;
}

}  // namespace

void LstmPointwiseWith(GemmIsa isa, int64_t H, const float* g, const float* b, const float* cp, float* h, float* c) {
#ifdef CELLSERVE_X86
  if (isa != GemmIsa::kScalar) return LstmAvx2(H, g, b, cp, h, c);
#endif
  for (int64_t j = 0; j < H; ++j) ScalarOps::Lstm(H, j, g, b, cp, h, c);
}

void LeafPointwiseWith(GemmIsa isa, int64_t H, const float* g, const float* b, float* h, float* c) {
#ifdef CELLSERVE_X86
  if (isa != GemmIsa::kScalar) return LeafAvx2(H, g, b, h, c);
#endif
  for (int64_t j = 0; j < H; ++j) ScalarOps::Leaf(H, j, g, b, h, c);
}

void InternalPointwiseWith(GemmIsa isa, int64_t H, const float* g, const float* b, const float* cl,
                           const float* cr, float* h, float* c) {
#ifdef CELLSERVE_X86
  if (isa != GemmIsa::kScalar) return InternalAvx2(H, g, b, cl, cr, h, c);
#endif
  for (int64_t j = 0; j < H; ++j) ScalarOps::Internal(H, j, g, b, cl, cr, h, c);
}

void LstmPointwise(int64_t H, const float* g, const float* b, const float* cp, float* h, float* c) {
  LstmPointwiseWith(PointwiseIsa(), H, g, b, cp, h, c);
}

void LeafPointwise(int64_t H, const float* g, const float* b, float* h, float* c) {
  LeafPointwiseWith(PointwiseIsa(), H, g, b, h, c);
}

void InternalPointwise(int64_t H, const float* g, const float* b, const float* cl, const float* cr,
                       float* h, float* c) {
  InternalPointwiseWith(PointwiseIsa(), H, g, b, cl, cr, h, c);
}

}  // namespace cellserve::cpu
