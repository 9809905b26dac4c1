#include "kernels/cpu/amx_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "runtime/tensor.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define CELLSERVE_AMX 1
#endif

namespace cellserve::cpu {

namespace {

constexpr int64_t kTileRows = 16;
constexpr int64_t kBlockCols = AmxPanels::kBlockCols;
constexpr int64_t kChunkK = AmxPanels::kChunkK;
constexpr int64_t kTileU16 = kTileRows * kChunkK;  // one 16 x 64-byte tile, in bf16 values

int64_t RoundUp(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

#ifdef CELLSERVE_AMX
constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtileData = 18;

struct TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows x 64 bytes: 0-3 accumulate C (2 x 2 tiles of 16 x 16 fp32), 4-5 hold X's
// rows (16 x 32 bf16), 6-7 W's columns (16 k pairs x 16 columns).
TileConfig FullTiles() {
  TileConfig t;
  for (int i = 0; i < 8; ++i) {
    t.rows[i] = kTileRows;
    t.colsb[i] = 64;
  }
  return t;
}

// GCC 12 warns that its own AVX-512 shift and narrowing intrinsics read an uninitialized value
// (their unused merge operand).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// Rounds X's rows [0, m) to bf16 into xb [mp, kp] (row stride kp); padding rows and columns are zero.
__attribute__((target("avx512f,avx512bw"))) void ConvertRows(int64_t m, const float* x, int64_t ldx, int64_t k,
                                                             int64_t mp, int64_t kp, uint16_t* xb) {
  const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
  for (int64_t i = 0; i < m; ++i) {
    const float* row = x + i * ldx;
    uint16_t* out = xb + i * kp;
    int64_t j = 0;
    for (; j + 16 <= k; j += 16) {
      const __m512i v = _mm512_castps_si512(_mm512_loadu_ps(row + j));
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(v, 16), one);
      const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(v, _mm512_add_epi32(half, lsb)), 16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), _mm512_cvtepi32_epi16(r));
    }
    for (; j < k; ++j) out[j] = FloatToBFloat16(row[j]);  // the lanes' rounding, for every finite value
    std::memset(out + k, 0, static_cast<size_t>(kp - k) * sizeof(uint16_t));
  }
  std::memset(xb + m * kp, 0, static_cast<size_t>((mp - m) * kp) * sizeof(uint16_t));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// C tiles for R row tiles (1 or 2) of xb starting at `a`, and column block `w`: chunk by chunk
// of 32 k, every element in the same order whatever R is. Stores into out [R*16, 32] (row
// stride 32 floats).
template <int R>
__attribute__((target("amx-tile,amx-bf16"))) void TileBlock(const uint16_t* a, int64_t kp, const uint16_t* w,
                                                             float* out) {
  _tile_zero(0);
  _tile_zero(1);
  if (R == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const int64_t a_stride = kp * 2;  // bytes
  for (int64_t q = 0; q < kp / kChunkK; ++q) {
    const uint16_t* wq = w + q * 2 * kTileU16;
    _tile_loadd(6, wq, 64);
    _tile_loadd(7, wq + kTileU16, 64);
    _tile_loadd(4, a + q * kChunkK, a_stride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (R == 2) {
      _tile_loadd(5, a + kTileRows * kp + q * kChunkK, a_stride);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  constexpr int64_t stride = kBlockCols * sizeof(float);
  _tile_stored(0, out, stride);
  _tile_stored(1, out + 16, stride);
  if (R == 2) {
    _tile_stored(2, out + kTileRows * kBlockCols, stride);
    _tile_stored(3, out + kTileRows * kBlockCols + 16, stride);
  }
}

__attribute__((target("amx-tile"))) void LoadTiles(const TileConfig& config) { _tile_loadconfig(&config); }
__attribute__((target("amx-tile"))) void ReleaseTiles() { _tile_release(); }
#endif

}  // namespace

const std::string& AmxBf16Missing() {
#ifdef CELLSERVE_AMX
  static const std::string reason = [] () -> std::string {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) || !(edx & (1u << 22)))
      return "this CPU has no AMX-BF16 (Intel Xeon 4th generation, Sapphire Rapids, or later has)";
    // The bf16 conversions use AVX-512 (every AMX CPU has it).
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw"))
      return "this CPU has AMX but not AVX-512BW";
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) != 0)
      return "the kernel does not let this process use AMX tiles (Linux 5.16 or later is needed)";
    return "";
  }();
#else
  static const std::string reason = "AMX needs an x86-64 CPU";
#endif
  return reason;
}

Status AmxBf16Available() {
  const std::string& why = AmxBf16Missing();
  if (why.empty()) return OkStatus();
  return Unavailable("bf16 compute (--cpu-precision bf16): " + why + "; use --cpu-precision fp32");
}

AmxPanels::AmxPanels(const float* w, int64_t n, int64_t k, int64_t ldw)
    : n_(n), k_(k), kp_(RoundUp(std::max<int64_t>(k, 1), kChunkK)) {
  const size_t count = static_cast<size_t>(blocks() * kp_ * kBlockCols);
  const size_t bytes = RoundUp(static_cast<int64_t>(std::max<size_t>(count, 1) * sizeof(uint16_t)), 64);
  auto* data = static_cast<uint16_t*>(std::aligned_alloc(64, bytes));
  if (!data) throw std::bad_alloc();
  std::memset(data, 0, bytes);
  // Block b, chunk q, tile t, tile row r (k pair), column j, pair element e.
  for (int64_t col = 0; col < n; ++col) {
    const int64_t b = col / kBlockCols, t = (col % kBlockCols) / 16, j = col % 16;
    uint16_t* block = data + b * kp_ * kBlockCols;
    for (int64_t kk = 0; kk < k; ++kk) {
      const int64_t q = kk / kChunkK, r = (kk % kChunkK) / 2, e = kk % 2;
      block[(q * 2 + t) * kTileU16 + r * kChunkK + 2 * j + e] = FloatToBFloat16(w[col * ldw + kk]);
    }
  }
  data_ = std::shared_ptr<uint16_t>(data, [](uint16_t* p) { std::free(p); });
}

void GemmAmx(int64_t m, const float* x, int64_t ldx, const AmxPanels& w, float* c, int64_t ldc) {
  if (m <= 0 || w.n() == 0) return;
#ifdef CELLSERVE_AMX
  const int64_t kp = w.padded_k(), mp = RoundUp(m, kTileRows), n = w.n();
  thread_local std::vector<uint16_t> xb;
  if (xb.size() < static_cast<size_t>(mp * kp)) xb.resize(static_cast<size_t>(mp * kp));
  ConvertRows(m, x, ldx, w.k(), mp, kp, xb.data());
  alignas(64) float out[2 * kTileRows * kBlockCols];
  static const TileConfig config = FullTiles();
  LoadTiles(config);
  for (int64_t b = 0; b < w.blocks(); ++b) {
    const int64_t col = b * kBlockCols, cols = std::min(kBlockCols, n - col);
    for (int64_t row = 0; row < mp; row += 2 * kTileRows) {
      const bool two = row + 2 * kTileRows <= mp;
      if (two) TileBlock<2>(xb.data() + row * kp, kp, w.block(b), out);
      else TileBlock<1>(xb.data() + row * kp, kp, w.block(b), out);
      const int64_t rows = std::min<int64_t>(two ? 2 * kTileRows : kTileRows, m - row);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(c + (row + r) * ldc + col, out + r * kBlockCols, static_cast<size_t>(cols) * sizeof(float));
    }
  }
  ReleaseTiles();
#else
  (void)x, (void)ldx, (void)c, (void)ldc;
  std::abort();  // AmxBf16Missing said why not
#endif
}

}  // namespace cellserve::cpu
