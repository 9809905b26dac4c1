// DiffAnswers (what counts as a changed answer, and how far the numbers moved) and
// SummarizeByLength (bucket edges, counts, means).
#include "runtime/answer_diff.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace cellserve {
namespace {

RequestResult Classified(int32_t label, std::vector<float> logits) {
  RequestResult r;
  r.label = label;
  r.logits = std::move(logits);
  return r;
}

RequestResult Decoded(std::vector<int32_t> tokens, std::vector<float> scores) {
  RequestResult r;
  r.tokens = std::move(tokens);
  r.scores = std::move(scores);
  return r;
}

TEST(DiffAnswers, SameClassMovedLogitsIsNotAChange) {
  const AnswerDiff d = DiffAnswers(Classified(1, {0.25f, 0.5f}), Classified(1, {0.25f, 0.75f}));
  EXPECT_FALSE(d.changed);
  EXPECT_DOUBLE_EQ(d.max_abs, 0.25);
}

// A NaN against a number is as far as can be; equal infinities and two NaNs are not apart.
TEST(DiffAnswers, NaNAgainstANumberIsInfinitelyFar) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(DiffAnswers(Classified(1, {0.25f, nan}), Classified(1, {0.25f, 0.5f})).max_abs,
            std::numeric_limits<double>::infinity());
  EXPECT_EQ(DiffAnswers(Classified(1, {nan, 0.5f}), Classified(1, {nan, 0.5f})).max_abs, 0.0);
  EXPECT_EQ(DiffAnswers(Classified(1, {inf, -inf}), Classified(1, {inf, -inf})).max_abs, 0.0);
  EXPECT_EQ(DiffAnswers(Classified(1, {inf}), Classified(1, {-inf})).max_abs, std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(DiffAnswers(Decoded({4}, {nan, 1.0f}), Decoded({4}, {nan, 1.5f})).max_abs, 0.5);
}

TEST(DiffAnswers, AnotherClassIsAChange) {
  const AnswerDiff d = DiffAnswers(Classified(1, {0.25f, 0.5f}), Classified(0, {0.5f, 0.25f}));
  EXPECT_TRUE(d.changed);
  EXPECT_DOUBLE_EQ(d.max_abs, 0.25);
}

TEST(DiffAnswers, OtherTokensAreAChangeAndScoresCompareWhereBothHaveThem) {
  const AnswerDiff d = DiffAnswers(Decoded({4, 5, 6}, {1.0f, 2.0f, 3.0f}), Decoded({4, 7}, {1.5f, 2.0f}));
  EXPECT_TRUE(d.changed);
  EXPECT_DOUBLE_EQ(d.max_abs, 0.5);
  EXPECT_FALSE(DiffAnswers(Decoded({4, 5}, {1.0f, 2.0f}), Decoded({4, 5}, {1.0f, 2.0f})).changed);
}

TEST(DiffAnswers, OneFailureIsAChangeTwoAreNot) {
  const StatusOr<RequestResult> failed(InvalidArgument("empty input"));
  const AnswerDiff one = DiffAnswers(failed, Classified(0, {1.0f}));
  EXPECT_TRUE(one.changed);
  EXPECT_TRUE(std::isinf(one.max_abs));
  const AnswerDiff both = DiffAnswers(failed, failed);
  EXPECT_FALSE(both.changed);
  EXPECT_EQ(both.max_abs, 0.0);
}

TEST(SummarizeByLength, BucketsAtTheEdges) {
  const std::vector<int64_t> words = {1, 19, 20, 39, 40, 500};
  std::vector<AnswerDiff> diffs(6);
  for (size_t i = 0; i < diffs.size(); ++i) diffs[i].max_abs = 0.1 * static_cast<double>(i + 1);
  diffs[3].changed = true;
  const auto b = SummarizeByLength(words, diffs, {20, 40, 80});
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].min_words, 0);
  EXPECT_EQ(b[0].max_words, 19);
  EXPECT_EQ(b[0].answers, 2);
  EXPECT_NEAR(b[0].mean_abs, 0.15, 1e-12);
  EXPECT_NEAR(b[0].max_abs, 0.2, 1e-12);
  EXPECT_EQ(b[1].answers, 2);
  EXPECT_EQ(b[1].changed, 1);
  EXPECT_EQ(b[2].min_words, 40);
  EXPECT_EQ(b[2].max_words, 79);
  EXPECT_EQ(b[2].answers, 1);
  EXPECT_EQ(b[3].min_words, 80);
  EXPECT_EQ(b[3].max_words, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(b[3].answers, 1);
  EXPECT_NEAR(b[3].max_abs, 0.6, 1e-12);
}

TEST(SummarizeByLength, EmptyBucketsAreKept) {
  const auto b = SummarizeByLength({}, {}, {10});
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].answers, 0);
  EXPECT_EQ(b[0].mean_abs, 0.0);
}

}  // namespace
}  // namespace cellserve
