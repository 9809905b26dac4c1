// Tests for bench/workload.h: corpus loading and its counts, the median request, the seeded
// shuffle and the open-loop Poisson schedule (rate, exponential gaps, determinism per seed).
#include "bench/workload.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/text.h"

namespace cellserve::bench {
namespace {

WorkloadOptions Lstm(int64_t max_tokens = 1024) {
  WorkloadOptions o;
  o.kind = ModelKind::kLstm;
  o.vocab_size = 1000;
  o.max_input_tokens = max_tokens;
  return o;
}

TEST(WorkloadTest, CountsUsedEmptyAndTooLong) {
  const std::vector<std::string> lines = {
      "Hello world.",                 // 3 tokens
      "",                             // empty
      "   \t ",                       // empty: no tokens
      "one two three four five six",  // 6 tokens: too long for 5
      "A b c",                        // 3 tokens
      "Yes, we can.\r",                // 5 tokens; the \r is ignored
  };
  Workload w = MakeWorkload(lines, Lstm(5));
  EXPECT_EQ(w.stats.lines, 6);
  EXPECT_EQ(w.stats.empty, 2);
  EXPECT_EQ(w.stats.too_long, 1);
  EXPECT_EQ(w.stats.used, 3);
  ASSERT_EQ(w.requests.size(), 3u);
  EXPECT_EQ(w.requests[0].line, 1);
  EXPECT_EQ(w.requests[1].line, 5);
  EXPECT_EQ(w.requests[2].line, 6);
  HashTokenizer tok(1000);
  EXPECT_EQ(w.requests[0].input.tokens, tok.Encode("Hello world."));
  EXPECT_EQ(w.requests[2].input.tokens, tok.Encode("Yes, we can."));
  EXPECT_FALSE(w.requests[0].input.has_tree);
  for (const auto& r : w.requests) EXPECT_EQ(r.length, static_cast<int64_t>(r.input.tokens.size()));
  EXPECT_EQ(w.stats.max_length, w.requests[2].length);
  double sum = 0;
  for (const auto& r : w.requests) sum += r.length;
  EXPECT_DOUBLE_EQ(w.stats.mean_length, sum / 3);
}

TEST(WorkloadTest, TreeLstmGetsBalancedTrees) {
  WorkloadOptions o = Lstm();
  o.kind = ModelKind::kTreeLstm;
  Workload w = MakeWorkload({"the quick brown fox jumps", "x"}, o);
  ASSERT_EQ(w.requests.size(), 2u);
  for (const auto& r : w.requests) {
    EXPECT_TRUE(r.input.has_tree);
    EXPECT_TRUE(r.input.tokens.empty());
    EXPECT_EQ(static_cast<int64_t>(r.input.tree.nodes.size()), 2 * r.length - 1);
    TreeLimits limits;
    limits.vocab_size = 1000;
    EXPECT_TRUE(ValidateTree(r.input.tree, limits).ok());
  }
  EXPECT_EQ(w.requests[0].length, 5);
  HashTokenizer tok(1000);
  EXPECT_EQ(TreeToSexpr(w.requests[0].input.tree),
            TreeToSexpr(BracketBalanced(tok.Encode("the quick brown fox jumps"))));
}

TEST(WorkloadTest, Seq2SeqCarriesTokens) {
  WorkloadOptions o = Lstm();
  o.kind = ModelKind::kSeq2Seq;
  Workload w = MakeWorkload({"to be or not"}, o);
  ASSERT_EQ(w.requests.size(), 1u);
  EXPECT_EQ(w.requests[0].input.tokens.size(), 4u);
  EXPECT_EQ(w.requests[0].input.max_decode_len, 0);
}

TEST(WorkloadTest, OptionsFromSpec) {
  ModelSpec spec;
  spec.kind = ModelKind::kTreeLstm;
  spec.vocab_size = 777;
  spec.max_input_tokens = 33;
  WorkloadOptions o = WorkloadOptionsFor(spec);
  EXPECT_EQ(o.kind, ModelKind::kTreeLstm);
  EXPECT_EQ(o.vocab_size, 777);
  EXPECT_EQ(o.max_input_tokens, 33);
}

TEST(WorkloadTest, ReadsStreamsAndFiles) {
  std::istringstream in("First line here.\r\n\nSecond.\n");
  auto w = ReadWorkload(in, Lstm());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->stats.lines, 3);
  EXPECT_EQ(w->stats.used, 2);
  EXPECT_EQ(w->stats.empty, 1);

  std::istringstream blank("\n \n\n");
  auto none = ReadWorkload(blank, Lstm());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);

  const std::string path = ::testing::TempDir() + "/bench_workload_test_corpus.txt";
  {
    std::ofstream out(path);
    out << "One sentence.\nAnother one, longer than the first.\n";
  }
  auto f = LoadWorkload(path, Lstm());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->stats.used, 2);
  std::remove(path.c_str());

  auto missing = LoadWorkload(path + ".missing", Lstm());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("cellserve.sh corpus"), std::string::npos);
}

TEST(WorkloadTest, MedianRequestIsLowerMedianFirstInCorpusOrder) {
  Workload w;
  for (int64_t len : {5, 1, 3, 3, 9}) {
    BenchRequest r;
    r.length = len;
    w.requests.push_back(r);
  }
  EXPECT_EQ(MedianRequest(w), 2u);  // lengths sorted 1 3 3 5 9: median 3, first at index 2
  w.requests.pop_back();            // 1 3 3 5: lower median 3
  EXPECT_EQ(MedianRequest(w), 2u);
  w.requests.resize(1);
  EXPECT_EQ(MedianRequest(w), 0u);

  Workload made = MakeWorkload({"a b c d e", "a", "a b c", "a b", "a b c d"}, Lstm());
  EXPECT_EQ(made.stats.median_length, 3);
  EXPECT_EQ(made.requests[MedianRequest(made)].line, 3);
}

TEST(WorkloadTest, RequestAtLengthPercentileIsNearestRankFirstInCorpusOrder) {
  Workload w;
  for (int64_t i = 0; i < 200; ++i) {  // lengths 100, 99, ..., 1, then 100, 99, ..., 1 again
    BenchRequest r;
    r.length = 100 - i % 100;
    w.requests.push_back(r);
  }
  // Nearest rank over 200: p99 is the 198th smallest = 99, first at index 1; p100 the longest.
  EXPECT_EQ(w.requests[RequestAtLengthPercentile(w, 99)].length, 99);
  EXPECT_EQ(RequestAtLengthPercentile(w, 99), 1u);
  EXPECT_EQ(RequestAtLengthPercentile(w, 100), 0u);
  EXPECT_EQ(RequestAtLengthPercentile(w, 1), 99u);  // rank 2 of 1, 1, 2, 2, ...: length 1
  EXPECT_EQ(RequestAtLengthPercentile(w, 50), MedianRequest(w));
  EXPECT_EQ(w.requests[MedianRequest(w)].length, 50);

  Workload made = MakeWorkload({"a b c d e", "a", "a b c", "a b", "a b c d"}, Lstm());
  EXPECT_EQ(made.stats.p99_length, 5);
}

TEST(ShuffleTest, PermutationDeterministicPerSeed) {
  auto a = SeededShuffle(1000, 7), b = SeededShuffle(1000, 7), c = SeededShuffle(1000, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_TRUE(SeededShuffle(0, 1).empty());
  EXPECT_EQ(SeededShuffle(1, 1), std::vector<uint32_t>{0});
  // It does shuffle: few fixed points (expected 1).
  int fixed = 0;
  for (uint32_t i = 0; i < 1000; ++i) fixed += a[i] == i;
  EXPECT_LT(fixed, 10);
}

TEST(PoissonTest, MeanRateAndExponentialGaps) {
  const double rate = 1000.0, duration = 100.0;  // 100k arrivals expected (sd 316)
  auto s = PoissonSchedule(rate, duration, 500, 42);
  const double n = static_cast<double>(s.size());
  EXPECT_NEAR(n / duration, rate, 0.02 * rate);
  // Ascending, inside [0, duration).
  for (size_t i = 1; i < s.size(); ++i) ASSERT_LE(s[i - 1].at_us, s[i].at_us);
  EXPECT_GE(s.front().at_us, 0);
  EXPECT_LT(s.back().at_us, static_cast<int64_t>(duration * 1e6));
  // Exponential gaps: mean 1/rate, standard deviation equal to the mean, P(gap > mean) = 1/e.
  double sum = 0, sum2 = 0;
  int above = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    const double g = (s[i].at_us - s[i - 1].at_us) * 1e-6;
    sum += g;
    sum2 += g * g;
    above += g > 1.0 / rate;
  }
  const double m = sum / (n - 1), var = sum2 / (n - 1) - m * m;
  EXPECT_NEAR(m, 1.0 / rate, 0.02 / rate);
  EXPECT_NEAR(std::sqrt(var) / m, 1.0, 0.03);
  EXPECT_NEAR(above / (n - 1), std::exp(-1.0), 0.01);
}

// A schedule is held whole: a rate and duration past what one run holds are refused up front
// (they used to end loadgen and bench with bad_alloc), with what to change.
TEST(PoissonTest, ScheduleSizeIsCheckedBeforeItIsMade) {
  EXPECT_TRUE(CheckScheduleSize(1000, 3600).ok());
  EXPECT_TRUE(CheckScheduleSize(kMaxScheduledArrivals, 1).ok());
  const Status big = CheckScheduleSize(1e9, 1);
  EXPECT_EQ(big.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("--rate 1e+09 per s for --duration-s 1 would schedule about 1e+09"),
            std::string::npos) << big.message();
  EXPECT_NE(big.message().find("lower the rate or shorten the run"), std::string::npos) << big.message();
  EXPECT_FALSE(CheckScheduleSize(100, 1e9).ok());
  EXPECT_FALSE(CheckScheduleSize(1e300, 1e300).ok()) << "an infinite product";
}

TEST(PoissonTest, DeterministicPerSeed) {
  auto a = PoissonSchedule(50, 10, 100, 1), b = PoissonSchedule(50, 10, 100, 1);
  auto c = PoissonSchedule(50, 10, 100, 2);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].at_us, b[i].at_us);
    EXPECT_EQ(a[i].request, b[i].request);
  }
  bool differs = a.size() != c.size();
  for (size_t i = 0; !differs && i < a.size(); ++i) differs = a[i].at_us != c[i].at_us;
  EXPECT_TRUE(differs);
}

TEST(PoissonTest, RequestsFollowAShuffleWrappingAround) {
  auto s = PoissonSchedule(1000, 1, 7, 3);
  ASSERT_GT(s.size(), 21u);
  std::set<uint32_t> first(std::set<uint32_t>{});
  for (size_t i = 0; i < 7; ++i) first.insert(s[i].request);
  EXPECT_EQ(first.size(), 7u);  // the first 7 arrivals take every request once
  for (size_t i = 7; i < s.size(); ++i) EXPECT_EQ(s[i].request, s[i - 7].request);
  for (const auto& a : s) EXPECT_LT(a.request, 7u);
}

TEST(PoissonTest, EmptyForNonPositiveInputs) {
  EXPECT_TRUE(PoissonSchedule(0, 10, 5, 1).empty());
  EXPECT_TRUE(PoissonSchedule(-1, 10, 5, 1).empty());
  EXPECT_TRUE(PoissonSchedule(10, 0, 5, 1).empty());
  EXPECT_TRUE(PoissonSchedule(10, 10, 0, 1).empty());
  EXPECT_TRUE(PoissonSchedule(std::nan(""), 10, 5, 1).empty());
}

TEST(PoissonTest, MixSeedSeparatesStreams) {
  EXPECT_EQ(MixSeed(1, 2), MixSeed(1, 2));
  EXPECT_NE(MixSeed(1, 2), MixSeed(1, 3));
  EXPECT_NE(MixSeed(1, 2), MixSeed(2, 2));
}

}  // namespace
}  // namespace cellserve::bench
