// The fused element-wise passes give the same bits on the AVX2 path as on the scalar one, in the
// vector lanes as in the tail columns: widths with and without tails, gates from saturated to small.
#include "kernels/cpu/pointwise.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace cellserve::cpu {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(Pointwise, Avx2GivesTheScalarBits) {
  std::mt19937 rng(3);
  int compared = 0;
  for (GemmIsa isa : {GemmIsa::kAvx2}) {
    if (!GemmIsaSupported(isa)) continue;
    for (int64_t H : {1, 7, 8, 15, 16, 17, 33, 96, 100, 512}) {
      for (float scale : {0.5f, 4.0f, 60.0f}) {
        SCOPED_TRACE(std::string(GemmIsaName(isa)) + " H " + std::to_string(H) + " scale " + std::to_string(scale));
        auto g = Random(static_cast<size_t>(5 * H), rng, scale);
        const auto b = Random(static_cast<size_t>(5 * H), rng, 1);
        if (scale == 60.0f) {  // gates that overflowed: lanes and tail columns still agree
          const float odd[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity()};
          for (size_t k = 0; k < g.size(); k += 3) g[k] = odd[(k / 3) % 3];
        }
        const auto cl = Random(static_cast<size_t>(H), rng, 2), cr = Random(static_cast<size_t>(H), rng, 2);
        std::vector<float> h0(H), c0(H), h1(H), c1(H);
        LstmPointwiseWith(GemmIsa::kScalar, H, g.data(), b.data(), cl.data(), h0.data(), c0.data());
        LstmPointwiseWith(isa, H, g.data(), b.data(), cl.data(), h1.data(), c1.data());
        EXPECT_TRUE(SameBits(h0, h1) && SameBits(c0, c1)) << "lstm";
        LeafPointwiseWith(GemmIsa::kScalar, H, g.data(), b.data(), h0.data(), c0.data());
        LeafPointwiseWith(isa, H, g.data(), b.data(), h1.data(), c1.data());
        EXPECT_TRUE(SameBits(h0, h1) && SameBits(c0, c1)) << "leaf";
        InternalPointwiseWith(GemmIsa::kScalar, H, g.data(), b.data(), cl.data(), cr.data(), h0.data(), c0.data());
        InternalPointwiseWith(isa, H, g.data(), b.data(), cl.data(), cr.data(), h1.data(), c1.data());
        EXPECT_TRUE(SameBits(h0, h1) && SameBits(c0, c1)) << "internal";
        ++compared;
      }
    }
  }
  if (compared == 0) GTEST_SKIP() << "no vector ISA on this CPU: only the scalar path runs";
}

}  // namespace
}  // namespace cellserve::cpu
