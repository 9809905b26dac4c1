// ZeroFloats: reads as zeros, counts in ReservedBytes while alive (moves keep one count), and
// takes memory only as its pages are written.
#include "runtime/zero_floats.h"

#include <gtest/gtest.h>

#include <cstring>
#include <utility>

#include "runtime/memory_limit.h"

namespace cellserve {
namespace {

constexpr double kMiB = 1 << 20;

TEST(ZeroFloats, ReadsAsZerosAndCountsWhileAlive) {
  const int64_t before = ZeroFloats::ReservedBytes();
  {
    ZeroFloats a(1000);
    ASSERT_NE(a.data(), nullptr);
    EXPECT_EQ(a.size(), 1000u);
    for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a.data()[i], 0.0f) << i;
    a.data()[999] = 2.5f;
    EXPECT_EQ(ZeroFloats::ReservedBytes(), before + 4000);
    ZeroFloats b = std::move(a);  // one array, counted once
    EXPECT_EQ(a.data(), nullptr);
    EXPECT_EQ(b.data()[999], 2.5f);
    EXPECT_EQ(ZeroFloats::ReservedBytes(), before + 4000);
    ZeroFloats c(10);
    c = std::move(b);  // c's own 10 floats are freed
    EXPECT_EQ(ZeroFloats::ReservedBytes(), before + 4000);
    EXPECT_EQ(c.size(), 1000u);
  }
  EXPECT_EQ(ZeroFloats::ReservedBytes(), before);
  ZeroFloats empty(0);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(ZeroFloats::ReservedBytes(), before);
}

// 1 GiB reserved costs next to nothing until written; written pages are taken.
TEST(ZeroFloats, MemoryIsTakenAsItIsWrittenNotAtOnce) {
  const double before = ReadMemoryOfThisProcess().anon_resident;
  ZeroFloats big((size_t{1} << 30) / sizeof(float));
  const double reserved = ReadMemoryOfThisProcess().anon_resident;
  EXPECT_LT(reserved - before, 64 * kMiB) << "RssAnon " << before / kMiB << " -> " << reserved / kMiB << " MiB";
  std::memset(big.data(), 1, size_t{256} << 20);  // a quarter of it
  const double written = ReadMemoryOfThisProcess().anon_resident;
  EXPECT_GE(written - reserved, 128 * kMiB) << "RssAnon " << reserved / kMiB << " -> " << written / kMiB << " MiB";
  EXPECT_EQ(big.data()[big.size() - 1], 0.0f);
}

// UntouchedBytes: what is reserved and not yet written, so that resident + untouched stays put as
// an array fills (the headroom does not move).
TEST(ZeroFloats, UntouchedBytesFallAsPagesAreWritten) {
  const int64_t before = ZeroFloats::UntouchedBytes();
  ZeroFloats a((size_t{64} << 20) / sizeof(float));
  EXPECT_EQ(ZeroFloats::UntouchedBytes() - before, int64_t{64} << 20);
  std::memset(a.data(), 1, size_t{16} << 20);
  const double untouched = static_cast<double>(ZeroFloats::UntouchedBytes() - before);
  // 48 MiB, give or take the huge pages the kernel may have backed it with at either end.
  EXPECT_GE(untouched, 44 * kMiB);
  EXPECT_LE(untouched, 48 * kMiB);
  ZeroFloats b = std::move(a);  // the mapping moves with it
  EXPECT_EQ(static_cast<double>(ZeroFloats::UntouchedBytes() - before), untouched);
  b = ZeroFloats();
  EXPECT_EQ(ZeroFloats::UntouchedBytes(), before);
}

}  // namespace
}  // namespace cellserve
