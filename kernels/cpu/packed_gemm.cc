#include "kernels/cpu/packed_gemm.h"

#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CELLSERVE_X86 1
#endif

namespace cellserve::cpu {

namespace {

constexpr int64_t kP = PackedMatrix::kPanel;
constexpr int64_t kBlockK = 256;  // a 256 x 16 panel block is 16 KB: stays in L1
constexpr int kRows = 6;          // register tile: 6 rows x 16 columns = 12 ymm accumulators

// Loads the C tile into `tile` (only `cols` valid columns) when accumulating, else zeros.
template <int R>
void LoadTile(bool accumulate, const float* c, int64_t ldc, int64_t cols, float tile[R][kP]) {
  for (int r = 0; r < R; ++r) {
    for (int64_t j = 0; j < kP; ++j) tile[r][j] = accumulate && j < cols ? c[r * ldc + j] : 0.0f;
  }
}

template <int R>
void StoreTile(const float tile[R][kP], float* c, int64_t ldc, int64_t cols) {
  for (int r = 0; r < R; ++r) std::memcpy(c + r * ldc, tile[r], static_cast<size_t>(cols) * sizeof(float));
}

// Portable micro-kernel: acc = fma(x, w, acc) for k in order, per element.
template <int R>
void MicroScalar(int64_t kc, const float* xp, const float* w, float* c, int64_t ldc, int64_t cols,
                 bool accumulate) {
  float acc[R][kP];
  LoadTile<R>(accumulate, c, ldc, cols, acc);
  for (int64_t k = 0; k < kc; ++k) {
    const float* wk = w + k * kP;
    for (int r = 0; r < R; ++r) {
      const float xr = xp[k * kRows + r];
      for (int64_t j = 0; j < kP; ++j) acc[r][j] = std::fma(xr, wk[j], acc[r][j]);
    }
  }
  StoreTile<R>(acc, c, ldc, cols);
}

#ifdef CELLSERVE_X86
// The accumulators are named variables, not arrays: GCC keeps arrays of __m256 in memory and
// stores them back every iteration, which halves the speed.
#define CS_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
template <int R>
__attribute__((target("avx2,fma"))) void MicroAvx2(int64_t kc, const float* xp, const float* w,
                                                   float* c, int64_t ldc, int64_t cols,
                                                   bool accumulate) {
  alignas(32) float tile[kRows][kP];
  const bool direct = cols == kP;
  if (!direct) LoadTile<R>(accumulate, c, ldc, cols, tile);
  const float* src = direct ? c : &tile[0][0];
  const int64_t lds = direct ? ldc : kP;
#define CS_DECLARE(i)                                                                   \
  __m256 a##i##0 = _mm256_setzero_ps(), a##i##1 = _mm256_setzero_ps();                  \
  if constexpr (i < R) {                                                                \
    if (accumulate || !direct) {                                                        \
      a##i##0 = _mm256_loadu_ps(src + i * lds);                                         \
      a##i##1 = _mm256_loadu_ps(src + i * lds + 8);                                     \
    }                                                                                   \
  }
  CS_ROWS(CS_DECLARE)
#undef CS_DECLARE
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_loadu_ps(w + k * kP);
    const __m256 w1 = _mm256_loadu_ps(w + k * kP + 8);
#define CS_STEP(i)                                          \
  if constexpr (i < R) {                                    \
    const __m256 xv = _mm256_broadcast_ss(xp + k * kRows + i); \
    a##i##0 = _mm256_fmadd_ps(xv, w0, a##i##0);             \
    a##i##1 = _mm256_fmadd_ps(xv, w1, a##i##1);             \
  }
    CS_ROWS(CS_STEP)
#undef CS_STEP
  }
  float* dst = direct ? c : &tile[0][0];
#define CS_STORE(i)                                \
  if constexpr (i < R) {                           \
    _mm256_storeu_ps(dst + i * lds, a##i##0);      \
    _mm256_storeu_ps(dst + i * lds + 8, a##i##1);  \
  }
  CS_ROWS(CS_STORE)
#undef CS_STORE
  if (!direct) StoreTile<R>(tile, c, ldc, cols);
}
#undef CS_ROWS

bool DetectAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

// (kc, packed X panel [kc][6], packed W panel block [kc][16], C, ldc, valid columns, accumulate)
using MicroFn = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, bool);

struct Kernels {
  MicroFn by_rows[kRows + 1];
  bool avx2;
};

Kernels SelectKernels() {
#ifdef CELLSERVE_X86
  if (DetectAvx2())
    return {{nullptr, MicroAvx2<1>, MicroAvx2<2>, MicroAvx2<3>, MicroAvx2<4>, MicroAvx2<5>, MicroAvx2<6>}, true};
#endif
  return {{nullptr, MicroScalar<1>, MicroScalar<2>, MicroScalar<3>, MicroScalar<4>, MicroScalar<5>,
           MicroScalar<6>},
          false};
}

const Kernels& Selected() {
  static const Kernels kernels = SelectKernels();
  return kernels;
}

}  // namespace

PackedMatrix::PackedMatrix(const float* w, int64_t n, int64_t k) : n_(n), k_(k) {
  data_.assign(static_cast<size_t>(panels() * k * kP), 0.0f);
  for (int64_t p = 0; p < panels(); ++p) {
    float* dst = data_.data() + p * k * kP;
    for (int64_t j = 0; j < kP && p * kP + j < n; ++j) {
      const float* row = w + (p * kP + j) * k;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kP + j] = row[kk];
    }
  }
}

void GemmPacked(int64_t m, const float* x, int64_t ldx, const PackedMatrix& w, float* c, int64_t ldc) {
  const Kernels& kernels = Selected();
  const int64_t n = w.n(), k = w.k();
  const int64_t blocks = (m + kRows - 1) / kRows;
  // X block packed as [row block][k][6 rows], rows past m zero: one contiguous stream per tile.
  thread_local std::vector<float> xpack;
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    const int64_t kc = k - k0 < kBlockK ? k - k0 : kBlockK;
    const bool accumulate = k0 > 0;
    xpack.resize(static_cast<size_t>(blocks * kc * kRows));
    for (int64_t b = 0; b < blocks; ++b) {
      float* dst = xpack.data() + b * kc * kRows;
      for (int i = 0; i < kRows; ++i) {
        const int64_t r = b * kRows + i;
        const float* src = x + r * ldx + k0;
        for (int64_t kk = 0; kk < kc; ++kk) dst[kk * kRows + i] = r < m ? src[kk] : 0.0f;
      }
    }
    for (int64_t p = 0; p < w.panels(); ++p) {
      const float* wp = w.panel(p) + k0 * kP;
      const int64_t cols = n - p * kP < kP ? n - p * kP : kP;
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t r0 = b * kRows;
        const int rows = static_cast<int>(m - r0 < kRows ? m - r0 : kRows);
        kernels.by_rows[rows](kc, xpack.data() + b * kc * kRows, wp, c + r0 * ldc + p * kP, ldc, cols,
                              accumulate);
      }
    }
  }
}

bool GemmPackedUsesAvx2() { return Selected().avx2; }

}  // namespace cellserve::cpu
