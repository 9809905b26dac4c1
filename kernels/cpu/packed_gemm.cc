#include "kernels/cpu/packed_gemm.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "runtime/tensor.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
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

// Weight i of a panel block stored in format F, widened to fp32 (exactly).
template <DType F>
float WeightAt(const void* w, int64_t i) {
  if constexpr (F == DType::kF32) return static_cast<const float*>(w)[i];
  if constexpr (F == DType::kBF16) return BFloat16ToFloat(static_cast<const uint16_t*>(w)[i]);
  return HalfToFloat(static_cast<const uint16_t*>(w)[i]);
}

// Portable micro-kernel: acc = fma(x, w, acc) for k in order, per element.
template <int R, DType F>
void MicroScalar(int64_t kc, const float* xp, const void* w, float* c, int64_t ldc, int64_t cols,
                 bool accumulate) {
  float acc[R][kP];
  LoadTile<R>(accumulate, c, ldc, cols, acc);
  for (int64_t k = 0; k < kc; ++k) {
    float wk[kP];
    for (int64_t j = 0; j < kP; ++j) wk[j] = WeightAt<F>(w, k * kP + j);
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
// Weights i..i+7 of a panel block in format F as 8 floats (16-bit ones widened exactly).
template <DType F>
__attribute__((target("avx2,fma,f16c"), always_inline)) inline __m256 Load8(const void* w, int64_t i) {
  if constexpr (F == DType::kF32) return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
  if constexpr (F == DType::kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

template <int R, DType F>
__attribute__((target("avx2,fma,f16c"))) void MicroAvx2(int64_t kc, const float* xp, const void* w,
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
    const __m256 w0 = Load8<F>(w, k * kP);
    const __m256 w1 = Load8<F>(w, k * kP + 8);
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
// Weights i..i+15 of a panel block in format F as 16 floats (16-bit ones widened exactly).
// GCC 12 warns that the intrinsics' own _mm512_undefined_epi32() "may be used uninitialized".
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <DType F>
__attribute__((target("avx512f"), always_inline)) inline __m512 Load16(const void* w, int64_t i) {
  if constexpr (F == DType::kF32) return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
  if constexpr (F == DType::kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

template <int R, DType F>
__attribute__((target("avx512f"))) void MicroAvx512Pair(int64_t kc, const float* xp, const void* w0,
                                                        const void* w1, float* c, int64_t ldc,
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
    const __m512 v0 = Load16<F>(w0, k * kP);
    const __m512 v1 = Load16<F>(w1, k * kP);
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
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef CS_ROWS

bool DetectAvx2() {
  __builtin_cpu_init();
  // F16C (fp16 panels) came with AVX2 on every x86 that has it; checked all the same (CPUID.1:ECX
  // bit 29; clang's __builtin_cpu_supports does not know "f16c").
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

bool DetectAvx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
}
#endif

// (kc, packed X panel [kc][6], packed W panel block [kc][16], C, ldc, valid columns, accumulate)
using MicroFn = void (*)(int64_t, const float*, const void*, float*, int64_t, int64_t, bool);
// (kc, packed X panel, two full W panel blocks, C, ldc, accumulate): 32 columns at once.
using PairFn = void (*)(int64_t, const float*, const void*, const void*, float*, int64_t, bool);

struct Kernels {
  std::array<MicroFn, kRows + 1> by_rows;
  std::array<PairFn, kRows + 1> pair_by_rows;  // all null unless the ISA has a two-panel kernel
};

template <DType F>
Kernels KernelsOf(GemmIsa isa) {
  Kernels k = {{nullptr, MicroScalar<1, F>, MicroScalar<2, F>, MicroScalar<3, F>, MicroScalar<4, F>,
                MicroScalar<5, F>, MicroScalar<6, F>},
               {}};
#ifdef CELLSERVE_X86
  // AVX-512 runs the AVX2 kernels for the columns its pair kernel leaves over.
  if (isa == GemmIsa::kAvx2 || isa == GemmIsa::kAvx512)
    k.by_rows = {nullptr,         MicroAvx2<1, F>, MicroAvx2<2, F>, MicroAvx2<3, F>,
                 MicroAvx2<4, F>, MicroAvx2<5, F>, MicroAvx2<6, F>};
  if (isa == GemmIsa::kAvx512)
    k.pair_by_rows = {nullptr,               MicroAvx512Pair<1, F>, MicroAvx512Pair<2, F>, MicroAvx512Pair<3, F>,
                      MicroAvx512Pair<4, F>, MicroAvx512Pair<5, F>, MicroAvx512Pair<6, F>};
#else
  (void)isa;
#endif
  return k;
}

// The micro-kernels of `isa`, one set per panel format.
struct KernelSet {
  Kernels f32, bf16, f16;
  explicit KernelSet(GemmIsa isa)
      : f32(KernelsOf<DType::kF32>(isa)), bf16(KernelsOf<DType::kBF16>(isa)),
        f16(KernelsOf<DType::kF16>(isa)) {}
  const Kernels& For(DType format) const {
    switch (format) {
      case DType::kBF16: return bf16;
      case DType::kF16: return f16;
      case DType::kF32: break;
    }
    return f32;
  }
};

GemmIsa SelectIsa() {
  GemmIsa best = GemmIsaSupported(GemmIsa::kAvx512) ? GemmIsa::kAvx512
                 : GemmIsaSupported(GemmIsa::kAvx2) ? GemmIsa::kAvx2
                                                    : GemmIsa::kScalar;
  if (const char* cap = std::getenv("CELLSERVE_GEMM_ISA")) {
    bool known = false;
    for (GemmIsa isa : {GemmIsa::kScalar, GemmIsa::kAvx2, GemmIsa::kAvx512}) {
      if (std::strcmp(cap, GemmIsaName(isa)) != 0) continue;
      known = true;
      if (isa < best) best = isa;
    }
    // Chosen once per process: a comparison run with a misspelt value would time the default.
    if (!known)
      std::fprintf(stderr, "cellserve: CELLSERVE_GEMM_ISA=%s is not scalar, avx2 or avx512: ignored (using %s)\n",
                   cap, GemmIsaName(best));
  }
  return best;
}

void Run(const KernelSet& set, int64_t m, const float* x, int64_t ldx, const PackedMatrix& w,
         float* c, int64_t ldc) {
  // Few rows: the step is memory-bound, so the 16-bit panels (half the bytes) when there are.
  const bool narrow = w.narrow_dtype() != DType::kF32 && m <= kNarrowMaxRows;
  const Kernels& kernels = set.For(narrow ? w.narrow_dtype() : DType::kF32);
  auto panel = [&](int64_t p, int64_t k0) -> const void* {
    return narrow ? static_cast<const void*>(w.narrow_panel(p) + k0 * kP) : w.panel(p) + k0 * kP;
  };
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
      const void* wp0 = panel(p, k0);
      const void* wp1 = panel(p + 1, k0);
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t r0 = b * kRows;
        const int rows = static_cast<int>(m - r0 < kRows ? m - r0 : kRows);
        kernels.pair_by_rows[rows](kc, xpack.data() + b * kc * kRows, wp0, wp1, c + r0 * ldc + p * kP,
                                   ldc, accumulate);
      }
    }
    for (; p < w.panels(); ++p) {
      const void* wp = panel(p, k0);
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

bool IsBFloat16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return (bits & 0xffffu) == 0;
}

bool IsHalf(float v) {
  const float back = HalfToFloat(FloatToHalf(v));
  return std::memcmp(&back, &v, sizeof(v)) == 0;
}

}  // namespace

DType ExactDType(const float* w, int64_t n, int64_t k, int64_t ldw) {
  bool bf16 = true, f16 = true;
  for (int64_t j = 0; j < n && (bf16 || f16); ++j)
    for (int64_t kk = 0; kk < k && (bf16 || f16); ++kk) {
      const float v = w[j * ldw + kk];
      bf16 = bf16 && IsBFloat16(v);
      f16 = f16 && IsHalf(v);
    }
  return bf16 ? DType::kBF16 : f16 ? DType::kF16 : DType::kF32;
}

PackedMatrix::PackedMatrix(const float* w, int64_t n, int64_t k) : PackedMatrix(w, n, k, k) {}

PackedMatrix::PackedMatrix(const float* w, int64_t n, int64_t k, int64_t ldw)
    : PackedMatrix(w, n, k, ldw, ExactDType(w, n, k, ldw)) {}

PackedMatrix::PackedMatrix(const float* w, int64_t n, int64_t k, int64_t ldw, DType narrow)
    : n_(n), k_(k), narrow_dtype_(narrow) {
  // 64-byte aligned so a panel row (16 floats) is one cache line.
  const size_t count = static_cast<size_t>(panels() * k * kP);
  const size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  float* data = static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64));
  if (data == nullptr) throw std::bad_alloc();
  data_ = std::shared_ptr<float>(data, Free<float>());
  std::memset(data, 0, bytes);
  for (int64_t p = 0; p < panels(); ++p) {
    float* dst = data + p * k * kP;
    for (int64_t j = 0; j < kP && p * kP + j < n; ++j) {
      const float* row = w + (p * kP + j) * ldw;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kP + j] = row[kk];
    }
  }
  if (narrow == DType::kF32) return;
  // The same layout, 2 bytes a weight; zero padding is zero in both 16-bit formats.
  const size_t narrow_bytes = (count * sizeof(uint16_t) + 63) / 64 * 64;
  uint16_t* half = static_cast<uint16_t*>(std::aligned_alloc(64, narrow_bytes > 0 ? narrow_bytes : 64));
  if (half == nullptr) throw std::bad_alloc();
  narrow_ = std::shared_ptr<uint16_t>(half, Free<uint16_t>());
  for (size_t i = 0; i < count; ++i)
    half[i] = narrow == DType::kBF16 ? FloatToBFloat16(data[i]) : FloatToHalf(data[i]);
}

PackedMatrix PackedMatrix::Bf16Compute(const float* w, int64_t n, int64_t k, int64_t ldw) {
  PackedMatrix m;
  m.n_ = n;
  m.k_ = k;
  m.amx_ = std::make_shared<const AmxPanels>(w, n, k, ldw);
  return m;
}

int64_t PackedMatrix::bytes() const {
  if (amx_) return amx_->bytes();
  const int64_t count = panels() * k_ * kPanel;
  return count * static_cast<int64_t>(sizeof(float)) +
         (narrow_dtype_ == DType::kF32 ? 0 : count * static_cast<int64_t>(sizeof(uint16_t)));
}

int64_t PackedMatrix::BytesFor(int64_t n, int64_t k, bool narrow, bool bf16_compute) {
  if (bf16_compute) {  // as AmxPanels: 32-column blocks, k padded to whole 32-value chunks
    constexpr int64_t kCols = AmxPanels::kBlockCols, kChunk = AmxPanels::kChunkK;
    return (n + kCols - 1) / kCols * kCols * ((std::max<int64_t>(k, 1) + kChunk - 1) / kChunk * kChunk) * 2;
  }
  const int64_t count = (n + kPanel - 1) / kPanel * kPanel * k;
  return count * static_cast<int64_t>(sizeof(float)) + (narrow ? count * static_cast<int64_t>(sizeof(uint16_t)) : 0);
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
  if (w.amx()) return GemmAmx(m, x, ldx, *w.amx(), c, ldc);
  static const KernelSet kernels(GemmPackedIsa());
  Run(kernels, m, x, ldx, w, c, ldc);
}

void GemmPackedWith(GemmIsa isa, int64_t m, const float* x, int64_t ldx, const PackedMatrix& w,
                    float* c, int64_t ldc) {
  if (w.amx()) return GemmAmx(m, x, ldx, *w.amx(), c, ldc);
  Run(KernelSet(isa), m, x, ldx, w, c, ldc);
}

}  // namespace cellserve::cpu
