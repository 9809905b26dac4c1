// The CPU backend's bf16 compute (--cpu-precision bf16): C[M, N] = X[M, K] * W[N, K]^T with W
// and X rounded to bf16 (nearest even) and fp32 accumulation, on Intel AMX tiles (Sapphire Rapids
// and later). An opt-in trade of accuracy for speed, like the CUDA backend's --gpu-precision:
// each product errs by up to about 2^-9 relative, and a recurrence carries that forward, so
// answers differ from fp32's (docs/ARCHITECTURE.md has how far); they still do not depend on
// batch-mates, since every product of every size runs the same tile kernel, and a row's results
// in a tile do not depend on the tile's other rows (tested: a row alone and at any position of a
// batch give the same bits).
// Layout: W is packed once into 32-column blocks of 16 x 16 bf16-pair tiles (VNNI: a tile row is
// 16 columns x 2 consecutive k), K padded to 32 and N to 32 with zeros.
// Threads: AmxPanels is immutable once packed (shareable). GemmAmx keeps its scratch and the
// tile state per thread: each call loads the tile configuration and releases the tiles at its end.
// Errors: AmxBf16Missing says why AMX cannot be used (CPU, OS or kernel permission); GemmAmx
// must only be called once it said yes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/status.h"

namespace cellserve::cpu {

// Why this CPU and kernel do not run AMX-BF16 tiles for this process; empty where they do (asks
// the kernel for the tile state once: arch_prctl(ARCH_REQ_XCOMP_PERM)).
const std::string& AmxBf16Missing();

// OK where AmxBf16Missing is empty, else UNAVAILABLE with its reason and what to use instead:
// the one error every caller of bf16 compute returns (flag, device factory, backend).
Status AmxBf16Available();

class AmxPanels {
 public:
  AmxPanels() = default;
  // Packs W [n, k] (row j at w + j * ldw), each weight rounded to bf16.
  AmxPanels(const float* w, int64_t n, int64_t k, int64_t ldw);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t padded_k() const { return kp_; }
  int64_t blocks() const { return (n_ + kBlockCols - 1) / kBlockCols; }
  // Column block b: padded_k() / 32 chunks, each two 1 KiB tiles (columns b*32 .. +15, +16 .. +31).
  const uint16_t* block(int64_t b) const { return data_.get() + b * kp_ * kBlockCols; }
  int64_t bytes() const { return blocks() * kp_ * kBlockCols * 2; }

  static constexpr int64_t kBlockCols = 32;  // two 16-column tiles
  static constexpr int64_t kChunkK = 32;     // bf16 values per tile row (64 bytes)

 private:
  int64_t n_ = 0, k_ = 0, kp_ = 0;
  std::shared_ptr<uint16_t> data_;  // immutable once packed, so copies share it
};

// C[M, N] = bf16(X)[M, K] * bf16(W)^T, fp32 accumulation. ldx, ldc: row strides in floats. M may be 0.
void GemmAmx(int64_t m, const float* x, int64_t ldx, const AmxPanels& w, float* c, int64_t ldc);

}  // namespace cellserve::cpu
