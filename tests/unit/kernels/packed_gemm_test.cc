// GemmPacked: correct against a double reference for awkward shapes (tails in M, N and K), and
// bitwise independent of the batch: a row gives the same bits alone, at any position, in any M.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu/packed_gemm.h"

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


}  // namespace
}  // namespace cellserve::cpu
