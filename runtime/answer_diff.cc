#include "runtime/answer_diff.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cellserve {

namespace {

// Equal values (infinities, and NaN against NaN) differ by 0; a NaN against a number by infinity
// (std::max would drop a NaN difference, and the answers would look equal).
double MaxAbs(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double x = a[i], y = b[i];
    if (x == y || (std::isnan(x) && std::isnan(y))) continue;
    const double e = std::fabs(x - y);
    d = std::max(d, std::isnan(e) ? std::numeric_limits<double>::infinity() : e);
  }
  return d;
}

}  // namespace

AnswerDiff DiffAnswers(const StatusOr<RequestResult>& a, const StatusOr<RequestResult>& b) {
  AnswerDiff d;
  if (a.ok() != b.ok()) {
    d.changed = true;
    d.max_abs = std::numeric_limits<double>::infinity();
    return d;
  }
  if (!a.ok()) return d;
  d.changed = a->label != b->label || a->tokens != b->tokens;
  if (a->logits.size() != b->logits.size()) {
    d.changed = true;
    d.max_abs = std::numeric_limits<double>::infinity();
    return d;
  }
  d.max_abs = std::max(MaxAbs(a->logits, b->logits), MaxAbs(a->scores, b->scores));
  return d;
}

std::vector<AnswerDiffBucket> SummarizeByLength(const std::vector<int64_t>& words, const std::vector<AnswerDiff>& diffs,
                                                const std::vector<int64_t>& edges) {
  std::vector<AnswerDiffBucket> buckets(edges.size() + 1);
  for (size_t b = 0; b < buckets.size(); ++b) {
    buckets[b].min_words = b == 0 ? 0 : edges[b - 1];
    buckets[b].max_words = b < edges.size() ? edges[b] - 1 : std::numeric_limits<int64_t>::max();
  }
  for (size_t i = 0; i < std::min(words.size(), diffs.size()); ++i) {
    const size_t b = static_cast<size_t>(std::upper_bound(edges.begin(), edges.end(), words[i]) - edges.begin());
    AnswerDiffBucket& bucket = buckets[b];
    ++bucket.answers;
    if (diffs[i].changed) ++bucket.changed;
    bucket.mean_abs += diffs[i].max_abs;  // a sum until the end
    bucket.max_abs = std::max(bucket.max_abs, diffs[i].max_abs);
  }
  for (AnswerDiffBucket& bucket : buckets)
    if (bucket.answers > 0) bucket.mean_abs /= static_cast<double>(bucket.answers);
  return buckets;
}

}  // namespace cellserve
