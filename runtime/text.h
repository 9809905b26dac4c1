// Text to model input, for the benchmark workload and the CLI: sentence splitting, a hashing
// word tokenizer (no vocabulary file needed, stable across runs and machines) and the
// deterministic bracketing that turns a sentence into a binary tree for Tree-LSTM.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tree.h"

namespace cellserve {

// Reserved token ids of every vocabulary.
constexpr int32_t kPadId = 0;
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
constexpr int32_t kUnkId = 3;
constexpr int32_t kFirstWordId = 4;

// Splits running text into sentences: a sentence ends at '.', '!', '?' or '…' (or a run of them,
// "?!", "...", with any closing quotes/brackets after it) followed by whitespace and an upper-case
// letter, a digit, or an opening quote or bracket. A blank line always ends a sentence. A single
// '.' does not end one after a known abbreviation:
//   - titles and the like: "Mr.", "Mrs.", "Dr.", "St.", "Gen.", "Hon.", "Messrs.", "viz.", ...
//   - a single capital initial other than "I": "Ulysses S. Grant", "U. S. Army";
//   - dotted letter groups: "U.S.", "D.C.", "p.m.", "e.g.";
//   - before a number only: "No. 5", "vol. 6, p. 3995", "Dec. 1", "Sec. 4";
//   - a list enumerator opening the sentence or after ':' or ';': "2. The first", "IV. Finance",
//     "as follows: 1. The".
// A '.' not followed by whitespace never splits ("3.5", "U.S.A."). Whitespace runs collapse to
// one space; empty pieces are dropped. Invalid UTF-8 passes through unchanged.
std::vector<std::string> SplitSentences(std::string_view text);

// Lower-cases, splits into words (letters/digits/apostrophes) and punctuation marks, and maps each
// to kFirstWordId + FNV-1a(word) % (vocab_size - kFirstWordId), FNV-1a being the 32-bit hash of
// the piece's lower-cased UTF-8 bytes. vocab_size must be > kFirstWordId (smaller is taken as
// kFirstWordId + 1). Details of Words():
//   - a word is a run of letters, digits and other non-punctuation characters (any script); an
//     apostrophe between two of them belongs to the word ("don't"; a curly ’ is stored as '), and
//     so does a '.' or ',' between two digits ("3.5", "3,000,000");
//   - every other punctuation mark or symbol (ASCII punctuation, Latin-1 symbols, dashes, curly
//     quotes, '…') is a piece of its own, one per character;
//   - the soft hyphen (U+00AD, invisible) is dropped, inside a word too ("infor\u00ADmation" is
//     "information"; before 2026-12-08 it split the word and was a piece of its own);
//   - only ASCII and Latin-1 letters are lower-cased (as UTF-8: text is taken as UTF-8, and bytes
//     that are not, such as Latin-1 text, are word characters kept as they are, not lower-cased).
// No BOS/EOS is added.
class HashTokenizer {
 public:
  explicit HashTokenizer(int64_t vocab_size);
  std::vector<int32_t> Encode(std::string_view sentence) const;
  std::vector<std::string> Words(std::string_view sentence) const;  // the pieces Encode hashes

 private:
  int64_t vocab_size_;
};

// The documented bracketing for Tree-LSTM inputs: a balanced binary tree over the tokens in order
// (split at the middle, left half gets the extra token), so a sentence of n tokens gives n leaves,
// n - 1 internal nodes and depth ceil(log2 n). Precondition: tokens is not empty.
TreeInput BracketBalanced(const std::vector<int32_t>& tokens);

}  // namespace cellserve
