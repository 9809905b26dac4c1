// GemmPacked: correct against a double reference for awkward shapes (tails in M, N and K),
// bitwise independent of the batch (a row gives the same bits alone, at any position, in any M),
// and bitwise independent of the micro-kernel (scalar, AVX2, AVX-512 where the CPU has them);
// 16-bit panels (weights that are exactly bf16 or fp16 values; used up to kNarrowMaxRows rows) give
// the same bits as fp32 panels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "kernels/cpu/packed_gemm.h"
#include "runtime/tensor.h"

namespace cellserve::cpu {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(PackedGemm, MatchesReferenceOnAwkwardShapes) {
  std::mt19937 rng(1);
  for (int64_t m : {1, 5, 6, 7, 13}) {
    for (int64_t n : {1, 5, 16, 17, 40}) {
      for (int64_t k : {1, 9, 256, 300, 530}) {
        auto x = Random(m * k, rng), w = Random(n * k, rng);
        PackedMatrix packed(w.data(), n, k);
        std::vector<float> c(m * n + 3, 42.0f);  // the guard after C must survive
        GemmPacked(m, x.data(), k, packed, c.data(), n);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double want = 0;
            for (int64_t kk = 0; kk < k; ++kk) want += double(x[i * k + kk]) * w[j * k + kk];
            ASSERT_NEAR(c[i * n + j], want, 1e-5 * std::sqrt(double(k)) + 1e-6)
                << "m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
          }
        EXPECT_EQ(c[m * n], 42.0f);
      }
    }
  }
}

TEST(PackedGemm, RowsAreBitwiseBatchInvariant) {
  std::mt19937 rng(2);
  const int64_t n = 70, k = 600, rows = 40;
  auto x = Random(rows * k, rng), w = Random(n * k, rng);
  PackedMatrix packed(w.data(), n, k);
  std::vector<float> alone(rows * n);
  for (int64_t r = 0; r < rows; ++r) GemmPacked(1, x.data() + r * k, k, packed, alone.data() + r * n, n);
  for (int64_t m = 1; m <= rows; ++m) {
    for (int64_t off = 0; off + m <= rows; off += 7) {
      std::vector<float> c(m * n);
      GemmPacked(m, x.data() + off * k, k, packed, c.data(), n);
      ASSERT_EQ(0, std::memcmp(c.data(), alone.data() + off * n, c.size() * sizeof(float)))
          << "m=" << m << " offset " << off;
    }
  }
}

TEST(PackedGemm, EveryIsaGivesTheSameBitsAsScalar) {
  std::mt19937 rng(3);
  int compared = 0;
  for (GemmIsa isa : {GemmIsa::kAvx2, GemmIsa::kAvx512}) {
    if (!GemmIsaSupported(isa)) {
      std::printf("[   INFO   ] %s: not on this CPU, not compared\n", GemmIsaName(isa));
      continue;
    }
    // n: one partial panel, an odd number of full panels, pairs plus a partial tail, pairs only.
    for (int64_t m : {1, 6, 7, 13, 40}) {
      for (int64_t n : {5, 48, 71, 64}) {
        for (int64_t k : {1, 256, 530}) {
          auto x = Random(m * k, rng), w = Random(n * k, rng);
          PackedMatrix packed(w.data(), n, k);
          std::vector<float> want(m * n + 1, 42.0f), got(m * n + 1, 42.0f);
          GemmPackedWith(GemmIsa::kScalar, m, x.data(), k, packed, want.data(), n);
          GemmPackedWith(isa, m, x.data(), k, packed, got.data(), n);
          ASSERT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * sizeof(float)))
              << GemmIsaName(isa) << " m=" << m << " n=" << n << " k=" << k;
          ++compared;
        }
      }
    }
  }
  if (compared == 0) GTEST_SKIP() << "only the scalar kernel runs on this CPU";
}

// Random weights rounded to bf16 or fp16 values (the weights of a model stored as BF16 / F16).
std::vector<float> RoundedTo(DType format, std::vector<float> w) {
  for (float& v : w) v = format == DType::kBF16 ? BFloat16ToFloat(FloatToBFloat16(v)) : HalfToFloat(FloatToHalf(v));
  return w;
}

TEST(PackedGemm, PanelsAreSixteenBitOnlyWhenEveryWeightIsExact) {
  std::mt19937 rng(4);
  const int64_t n = 20, k = 30;
  auto w = Random(n * k, rng);
  EXPECT_EQ(ExactDType(w.data(), n, k, k), DType::kF32);
  EXPECT_EQ(ExactDType(RoundedTo(DType::kBF16, w).data(), n, k, k), DType::kBF16);
  // fp16 values in [-1, 1] have more mantissa bits than bf16: not bf16, but fp16.
  EXPECT_EQ(ExactDType(RoundedTo(DType::kF16, w).data(), n, k, k), DType::kF16);
  std::vector<float> zeros(n * k, 0.0f);
  EXPECT_EQ(ExactDType(zeros.data(), n, k, k), DType::kBF16);
  // One inexact weight anywhere keeps the whole matrix in fp32; a block of a wider matrix looks
  // only at its own columns.
  auto mixed = RoundedTo(DType::kBF16, w);
  mixed[n * k - 1] = w[n * k - 1];
  EXPECT_EQ(ExactDType(mixed.data(), n, k, k), DType::kF32);
  EXPECT_EQ(ExactDType(mixed.data(), n, k - 1, k), DType::kBF16);

  const PackedMatrix f32(w.data(), n, k);
  const PackedMatrix bf16(RoundedTo(DType::kBF16, w).data(), n, k);
  EXPECT_EQ(f32.narrow_dtype(), DType::kF32);
  EXPECT_EQ(bf16.narrow_dtype(), DType::kBF16);
  EXPECT_EQ(bf16.bytes() * 2, f32.bytes() * 3);  // the 16-bit copy beside the fp32 panels
}

TEST(PackedGemm, SixteenBitPanelsGiveTheBitsOfFp32PanelsOnEveryIsa) {
  std::mt19937 rng(5);
  int compared = 0;
  for (DType format : {DType::kBF16, DType::kF16}) {
    for (GemmIsa isa : {GemmIsa::kScalar, GemmIsa::kAvx2, GemmIsa::kAvx512}) {
      if (!GemmIsaSupported(isa)) continue;
      // Up to kNarrowMaxRows rows run on the 16-bit panels, more on the fp32 ones.
      for (int64_t m : {int64_t{1}, int64_t{7}, int64_t{13}, kNarrowMaxRows, kNarrowMaxRows + 1}) {
        for (int64_t n : {5, 48, 71}) {
          for (int64_t k : {1, 256, 530}) {
            auto x = Random(m * k, rng);
            auto w = RoundedTo(format, Random(n * k, rng));
            const PackedMatrix narrow(w.data(), n, k);
            ASSERT_EQ(narrow.narrow_dtype(), format) << DTypeName(format);
            const PackedMatrix wide(w.data(), n, k, k, DType::kF32);
            std::vector<float> want(m * n + 1, 42.0f), got(m * n + 1, 42.0f);
            GemmPackedWith(GemmIsa::kScalar, m, x.data(), k, wide, want.data(), n);
            GemmPackedWith(isa, m, x.data(), k, narrow, got.data(), n);
            ASSERT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * sizeof(float)))
                << DTypeName(format) << " on " << GemmIsaName(isa) << " m=" << m << " n=" << n << " k=" << k;
            ++compared;
          }
        }
      }
    }
  }
  EXPECT_GT(compared, 0);
}

TEST(PackedGemm, DefaultIsTheWidestSupportedIsaUnlessCapped) {
  const GemmIsa used = GemmPackedIsa();
  EXPECT_TRUE(GemmIsaSupported(used)) << GemmIsaName(used);
  if (std::getenv("CELLSERVE_GEMM_ISA") == nullptr) {
    for (GemmIsa wider : {GemmIsa::kAvx2, GemmIsa::kAvx512})
      if (wider > used) {
        EXPECT_FALSE(GemmIsaSupported(wider)) << GemmIsaName(wider) << " left unused";
      }
  }
}

}  // namespace
}  // namespace cellserve::cpu
