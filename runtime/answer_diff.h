// How far two runs' answers to the same requests are apart: the same model under fp32 and under
// bf16 compute (`cellserve run --compare-precision`), or any two settings that should answer
// alike. An answer "changed" when what a user sees differs: the class (lstm, treelstm) or the
// output tokens (seq2seq), or one run failed where the other did not. Beside that, the largest
// |difference| of the logits or step scores measures how close unchanged answers came.
// Pure functions on values; no threads.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/cell_graph.h"
#include "runtime/status.h"

namespace cellserve {

struct AnswerDiff {
  bool changed = false;
  // Largest |a - b| over the logits, or over the step scores both answers have (seq2seq); 0 when
  // both failed; infinity where one is NaN and the other is not.
  double max_abs = 0.0;
};

AnswerDiff DiffAnswers(const StatusOr<RequestResult>& a, const StatusOr<RequestResult>& b);

// Answers of requests of [min_words, max_words] words.
struct AnswerDiffBucket {
  int64_t min_words = 0;
  int64_t max_words = 0;  // INT64_MAX in the last bucket
  int64_t answers = 0;
  int64_t changed = 0;
  double mean_abs = 0.0;  // mean of the answers' max_abs
  double max_abs = 0.0;
};

// Buckets diffs[i] by words[i] at `edges` (ascending, > 0): [0, e0 - 1], [e0, e1 - 1], ...,
// [e_last, INT64_MAX]; every bucket is returned, empty ones too. words and diffs have one entry
// per request.
std::vector<AnswerDiffBucket> SummarizeByLength(const std::vector<int64_t>& words, const std::vector<AnswerDiff>& diffs,
                                                const std::vector<int64_t>& edges);

}  // namespace cellserve
