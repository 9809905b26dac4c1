#include "kernels/cpu/packed_gemm.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

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

// AVX-512: two adjacent full panels (32 columns) at once, 12 zmm accumulators, so each k step is
// 2 panel loads and R broadcasts for 2R FMAs. Per element it is the same fma chain over k as the
// 16-column kernels, so every ISA gives the same bits.
template <int R>
__attribute__((target("avx512f"))) void MicroAvx512Pair(int64_t kc, const float* xp, const float* w0,
                                                        const float* w1, float* c, int64_t ldc,
                                                        bool accumulate) {
#define CS_DECLARE(i)                                                  \
  __m512 a##i##0 = _mm512_setzero_ps(), a##i##1 = _mm512_setzero_ps(); \
  if constexpr (i < R) {                                               \
    if (accumulate) {                                                  \
      a##i##0 = _mm512_loadu_ps(c + i * ldc);                          \
      a##i##1 = _mm512_loadu_ps(c + i * ldc + kP);                     \
    }                                                                  \
  }
  CS_ROWS(CS_DECLARE)
#undef CS_DECLARE
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 v0 = _mm512_load_ps(w0 + k * kP);
    const __m512 v1 = _mm512_load_ps(w1 + k * kP);
#define CS_STEP(i)                                          \
  if constexpr (i < R) {                                    \
    const __m512 xv = _mm512_set1_ps(xp[k * kRows + i]);    \
    a##i##0 = _mm512_fmadd_ps(xv, v0, a##i##0);             \
    a##i##1 = _mm512_fmadd_ps(xv, v1, a##i##1);             \
  }
    CS_ROWS(CS_STEP)
#undef CS_STEP
  }
#define CS_STORE(i)                               \
  if constexpr (i < R) {                          \
    _mm512_storeu_ps(c + i * ldc, a##i##0);       \
    _mm512_storeu_ps(c + i * ldc + kP, a##i##1);  \
  }
  CS_ROWS(CS_STORE)
#undef CS_STORE
}
#undef CS_ROWS

bool DetectAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool DetectAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}
#endif

// (kc, packed X panel [kc][6], packed W panel block [kc][16], C, ldc, valid columns, accumulate)
using MicroFn = void (*)(int64_t, const float*, const float*, float*, int64_t, int64_t, bool);
// (kc, packed X panel, two full W panel blocks, C, ldc, accumulate): 32 columns at once.
using PairFn = void (*)(int64_t, const float*, const float*, const float*, float*, int64_t, bool);

struct Kernels {
  std::array<MicroFn, kRows + 1> by_rows;
  std::array<PairFn, kRows + 1> pair_by_rows;  // all null unless the ISA has a two-panel kernel
};

Kernels KernelsFor(GemmIsa isa) {
  Kernels k = {{nullptr, MicroScalar<1>, MicroScalar<2>, MicroScalar<3>, MicroScalar<4>, MicroScalar<5>,
                MicroScalar<6>},
               {}};
#ifdef CELLSERVE_X86
  // AVX-512 runs the AVX2 kernels for the columns its pair kernel leaves over.
  if (isa == GemmIsa::kAvx2 || isa == GemmIsa::kAvx512)
    k.by_rows = {nullptr, MicroAvx2<1>, MicroAvx2<2>, MicroAvx2<3>, MicroAvx2<4>, MicroAvx2<5>, MicroAvx2<6>};
  if (isa == GemmIsa::kAvx512)
    k.pair_by_rows = {nullptr,           MicroAvx512Pair<1>, MicroAvx512Pair<2>, MicroAvx512Pair<3>,
                      MicroAvx512Pair<4>, MicroAvx512Pair<5>, MicroAvx512Pair<6>};
#else
  (void)isa;
#endif
  return k;
}

GemmIsa SelectIsa() {
  GemmIsa best = GemmIsaSupported(GemmIsa::kAvx512) ? GemmIsa::kAvx512
                 : GemmIsaSupported(GemmIsa::kAvx2) ? GemmIsa::kAvx2
                                                    : GemmIsa::kScalar;
  if (const char* cap = std::getenv("CELLSERVE_GEMM_ISA")) {
    for (GemmIsa isa : {GemmIsa::kScalar, GemmIsa::kAvx2, GemmIsa::kAvx512})
      if (std::strcmp(cap, GemmIsaName(isa)) == 0 && isa < best) best = isa;
  }
  return best;
}

void Run(const Kernels& kernels, int64_t m, const float* x, int64_t ldx, const PackedMatrix& w,
         float* c, int64_t ldc) {
  const int64_t n = w.n(), k = w.k();
  const int64_t blocks = (m + kRows - 1) / kRows;
  const bool pairs = kernels.pair_by_rows[1] != nullptr;
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
    int64_t p = 0;
    // Two full panels at a time where the ISA has a pair kernel; the rest one panel at a time.
    for (; pairs && (p + 2) * kP <= n; p += 2) {
      const float* wp0 = w.panel(p) + k0 * kP;
      const float* wp1 = w.panel(p + 1) + k0 * kP;
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t r0 = b * kRows;
        const int rows = static_cast<int>(m - r0 < kRows ? m - r0 : kRows);
        kernels.pair_by_rows[rows](kc, xpack.data() + b * kc * kRows, wp0, wp1, c + r0 * ldc + p * kP,
                                   ldc, accumulate);
      }
    }
    for (; p < w.panels(); ++p) {
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

}  // namespace

PackedMatrix::PackedMatrix(const float* w, int64_t n, int64_t k) : PackedMatrix(w, n, k, k) {}

PackedMatrix::PackedMatrix(const float* w, int64_t n, int64_t k, int64_t ldw) : n_(n), k_(k) {
  // 64-byte aligned so a panel row (16 floats) is one cache line and one aligned zmm load.
  const size_t count = static_cast<size_t>(panels() * k * kP);
  const size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  float* data = static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64));
  if (data == nullptr) throw std::bad_alloc();
  data_ = std::shared_ptr<float>(data, Free());
  std::memset(data, 0, bytes);
  for (int64_t p = 0; p < panels(); ++p) {
    float* dst = data + p * k * kP;
    for (int64_t j = 0; j < kP && p * kP + j < n; ++j) {
      const float* row = w + (p * kP + j) * ldw;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kP + j] = row[kk];
    }
  }
}

const char* GemmIsaName(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::kScalar: return "scalar";
    case GemmIsa::kAvx2: return "avx2";
    case GemmIsa::kAvx512: return "avx512";
  }
  return "unknown";
}

bool GemmIsaSupported(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::kScalar: return true;
#ifdef CELLSERVE_X86
    case GemmIsa::kAvx2: return DetectAvx2();
    case GemmIsa::kAvx512: return DetectAvx2() && DetectAvx512();
#endif
    default: return false;
  }
}

GemmIsa GemmPackedIsa() {
  static const GemmIsa isa = SelectIsa();
  return isa;
}

void GemmPacked(int64_t m, const float* x, int64_t ldx, const PackedMatrix& w, float* c, int64_t ldc) {
  static const Kernels kernels = KernelsFor(GemmPackedIsa());
  Run(kernels, m, x, ldx, w, c, ldc);
}

void GemmPackedWith(GemmIsa isa, int64_t m, const float* x, int64_t ldx, const PackedMatrix& w,
                    float* c, int64_t ldc) {
  Run(KernelsFor(isa), m, x, ldx, w, c, ldc);
}

}  // namespace cellserve::cpu
