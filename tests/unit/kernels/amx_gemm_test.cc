// GemmAmx (--cpu-precision bf16): the product of the bf16-rounded operands, accumulated in fp32,
// for shapes that pad rows, columns and k; and batch invariance: a row's results are the same
// bits alone and at any position of batches of any size. Skipped where the CPU or kernel has no
// AMX-BF16 (the reason is printed).
#include "kernels/cpu/amx_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace cellserve::cpu {
namespace {

#define REQUIRE_AMX()                                                \
  do {                                                               \
    const std::string& why = AmxBf16Missing();                       \
    if (!why.empty()) GTEST_SKIP() << "no AMX-BF16: " << why;        \
  } while (0)

std::vector<float> Random(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

float Bf16(float f) { return BFloat16ToFloat(FloatToBFloat16(f)); }

// Each element against the exact (double) product of the rounded operands: fp32 accumulation of
// K exact products errs by at most about K * 2^-24 of the sum of their magnitudes.
TEST(GemmAmx, ComputesTheRoundedOperandsProduct) {
  REQUIRE_AMX();
  struct Shape {
    int64_t m, n, k, ldw_extra;
  };
  for (const Shape s : {Shape{1, 2048, 512, 0}, Shape{16, 64, 64, 0}, Shape{17, 48, 40, 3}, Shape{33, 100, 1024, 0},
                        Shape{70, 2560, 1024, 0}, Shape{5, 16, 1, 0}, Shape{300, 32, 96, 7}}) {
    SCOPED_TRACE("m " + std::to_string(s.m) + " n " + std::to_string(s.n) + " k " + std::to_string(s.k));
    const int64_t ldw = s.k + s.ldw_extra, ldx = s.k + 5, ldc = s.n + 2;
    const auto w = Random(static_cast<size_t>(s.n * ldw), 1, 0.1f);
    const auto x = Random(static_cast<size_t>(s.m * ldx), 2, 1.0f);
    const AmxPanels packed(w.data(), s.n, s.k, ldw);
    std::vector<float> c(static_cast<size_t>(s.m * ldc), -7.0f);
    GemmAmx(s.m, x.data(), ldx, packed, c.data(), ldc);
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        double want = 0, mag = 0;
        for (int64_t kk = 0; kk < s.k; ++kk) {
          const double p = double(Bf16(x[i * ldx + kk])) * Bf16(w[j * ldw + kk]);
          want += p;
          mag += std::fabs(p);
        }
        ASSERT_NEAR(c[i * ldc + j], want, mag * s.k * 6e-8 + 1e-30) << "row " << i << " col " << j;
      }
      if (ldc > s.n) {
        ASSERT_EQ(c[i * ldc + s.n], -7.0f) << "wrote past column n";
      }
    }
  }
}

// The same row alone, and at the first, a middle and the last position of batches of 2 to 100
// rows (one and two row tiles, partial tiles), gives the same bits.
TEST(GemmAmx, RowDoesNotDependOnBatchMates) {
  REQUIRE_AMX();
  const int64_t n = 2048, k = 512;
  const auto w = Random(static_cast<size_t>(n * k), 3, 0.05f);
  const AmxPanels packed(w.data(), n, k, k);
  const auto probe = Random(static_cast<size_t>(k), 4, 1.0f);
  std::vector<float> alone(static_cast<size_t>(n));
  GemmAmx(1, probe.data(), k, packed, alone.data(), n);
  for (int64_t m : {2, 15, 16, 17, 31, 32, 33, 64, 100}) {
    auto x = Random(static_cast<size_t>(m * k), static_cast<uint32_t>(m), 1.0f);
    for (int64_t at : {int64_t{0}, m / 2, m - 1}) {
      auto batch = x;
      std::memcpy(batch.data() + at * k, probe.data(), k * sizeof(float));
      std::vector<float> c(static_cast<size_t>(m * n));
      GemmAmx(m, batch.data(), k, packed, c.data(), n);
      ASSERT_EQ(std::memcmp(c.data() + at * n, alone.data(), n * sizeof(float)), 0)
          << "row at " << at << " of " << m << " differs from the row alone";
    }
  }
}

TEST(GemmAmx, EmptyProductsWriteNothing) {
  REQUIRE_AMX();
  const auto w = Random(64 * 32, 5, 1.0f);
  const AmxPanels packed(w.data(), 64, 32, 32);
  std::vector<float> c(64, 3.0f);
  GemmAmx(0, nullptr, 32, packed, c.data(), 64);
  for (float v : c) ASSERT_EQ(v, 3.0f);
}

TEST(AmxPanels, PadsKAndCountsBlocks) {
  const auto w = Random(50 * 40, 6, 1.0f);
  const AmxPanels packed(w.data(), 50, 40, 40);
  EXPECT_EQ(packed.n(), 50);
  EXPECT_EQ(packed.k(), 40);
  EXPECT_EQ(packed.padded_k(), 64);
  EXPECT_EQ(packed.blocks(), 2);
  EXPECT_EQ(packed.bytes(), 2 * 64 * 32 * 2);
}

}  // namespace
}  // namespace cellserve::cpu
