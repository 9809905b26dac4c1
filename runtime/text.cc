#include "runtime/text.h"

#include <algorithm>
#include <cstddef>
#include <string>

namespace cellserve {
namespace {

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers. Text comes from files and clients, so every helper tolerates invalid bytes:
// a byte that does not start a well-formed sequence is one "code point" of its own.

constexpr char32_t kInvalid = 0xFFFFFFFF;

struct CodePoint {
  char32_t cp;  // kInvalid for a stray byte
  size_t len;   // bytes, >= 1
};

CodePoint Decode(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  size_t len;
  char32_t cp;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2;
    cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3;
    cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return {kInvalid, 1};
  }
  if (i + len > s.size()) return {kInvalid, 1};
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return {kInvalid, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len};
}

void AppendUtf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool IsAsciiUpper(char32_t c) { return c >= 'A' && c <= 'Z'; }
bool IsAsciiLower(char32_t c) { return c >= 'a' && c <= 'z'; }
bool IsAsciiDigit(char32_t c) { return c >= '0' && c <= '9'; }
bool IsAsciiAlpha(char32_t c) { return IsAsciiUpper(c) || IsAsciiLower(c); }

// Whitespace: ASCII white space and other ASCII control characters, no-break space, the Unicode
// spaces U+2000..U+200B, line/paragraph separators, narrow and medium spaces, ideographic space
// and the byte-order mark.
bool IsSpace(char32_t c) {
  if (c == kInvalid) return false;
  if (c <= 0x20 || c == 0x7F) return true;
  return c == 0xA0 || (c >= 0x2000 && c <= 0x200B) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000 || c == 0xFEFF;
}

// Punctuation and symbols that are tokens of their own: ASCII punctuation, the Latin-1 symbols
// (U+00A1..U+00BF, multiplication and division signs), General Punctuation (dashes, curly quotes,
// ellipsis, ...) and CJK punctuation. Every other non-space code point is a word character.
bool IsPunct(char32_t c) {
  if (c == kInvalid) return false;
  if (c < 0x80) return c > 0x20 && c < 0x7F && !IsAsciiAlpha(c) && !IsAsciiDigit(c);
  return (c >= 0xA1 && c <= 0xBF) || c == 0xD7 || c == 0xF7 || (c >= 0x2010 && c <= 0x205E) ||
         (c >= 0x3001 && c <= 0x303F);
}

// The soft hyphen (U+00AD, a word processor's hyphenation point) is invisible: dropped, so
// "infor\u00ADmation" is one word, where it used to split the word and be a token of its own that
// no reader could see. (The zero-width joiners stay word characters: ZWNJ is spelling in Persian,
// ZWJ part of emoji sequences.)
bool IsIgnorable(char32_t c) { return c == 0xAD; }

bool IsWordChar(char32_t c) { return !IsSpace(c) && !IsPunct(c) && !IsIgnorable(c); }
bool IsApostrophe(char32_t c) { return c == '\'' || c == 0x2019; }

// ASCII and Latin-1 upper-case letters to lower case; everything else unchanged.
char32_t ToLower(char32_t c) {
  if (IsAsciiUpper(c)) return c + 0x20;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
  return c;
}

uint32_t Fnv1a32(std::string_view bytes) {
  uint32_t h = 2166136261u;
  for (char ch : bytes) {
    h ^= static_cast<unsigned char>(ch);
    h *= 16777619u;
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Sentence splitting.

// Titles and other abbreviations that are (almost) never the last word of a sentence.
constexpr std::string_view kAlwaysAbbreviations[] = {
    "Mr",  "Mrs",  "Ms",   "Messrs", "Mme",  "Mlle", "Dr",  "St",   "Ste",  "Mt",  "Ft",
    "Gen", "Gens", "Col",  "Lt",     "Lieut", "Capt", "Cmdr", "Comdr", "Maj", "Sgt", "Adm",
    "Brig", "Gov", "Govs", "Sen",    "Sens", "Rep",  "Reps", "Hon",  "Rev",  "Prof", "Pres",
    "Supt", "vs",  "viz",  "cf"};

// Abbreviations that precede a number ("No. 5", "vol. 6, p. 3995", "Dec. 1"): no split when the
// next word starts with a digit.
constexpr std::string_view kNumberAbbreviations[] = {
    "No",  "Nos",  "no",   "nos", "Vol", "Vols", "vol", "vols", "p",    "pp",  "Art",  "art",
    "Sec", "Secs", "sec",  "Ch",  "ch",  "Chap", "chap", "Fig", "fig",  "Stat", "Op",  "Jan",
    "Feb", "Mar",  "Apr",  "Jun", "Jul", "Aug",  "Sep",  "Sept", "Oct", "Nov", "Dec"};

bool InList(std::string_view word, const std::string_view* begin, const std::string_view* end) {
  return std::find(begin, end, word) != end;
}

// "U.S", "D.C", "p.m", "e.g", "Ph.D": letter groups of one or two letters joined by periods.
bool IsDottedAbbreviation(std::string_view w) {
  if (w.find('.') == std::string_view::npos) return false;
  size_t group = 0;
  for (char ch : w) {
    if (ch == '.') {
      if (group == 0) return false;
      group = 0;
    } else if (IsAsciiAlpha(static_cast<unsigned char>(ch))) {
      if (++group > 2) return false;
    } else {
      return false;
    }
  }
  return group > 0;
}

// A list enumerator that may open a sentence: "2.", "12.", "IV.", "b.".
bool IsEnumerator(std::string_view w) {
  if (w.empty() || w.size() > 4) return false;
  auto digit = [](char c) { return IsAsciiDigit(static_cast<unsigned char>(c)); };
  auto roman = [](char c) {
    return std::string_view("IVXLivxl").find(c) != std::string_view::npos;
  };
  if (std::all_of(w.begin(), w.end(), digit)) return w.size() <= 3;
  if (std::all_of(w.begin(), w.end(), roman)) return true;
  return w.size() == 1 && IsAsciiAlpha(static_cast<unsigned char>(w[0]));
}

// Bytes of the closing marks that may follow a terminator: ) ] " ' and the curly closing quotes.
size_t CloserLen(std::string_view s, size_t i) {
  CodePoint c = Decode(s, i);
  if (c.cp == ')' || c.cp == ']' || c.cp == '"' || c.cp == '\'' || c.cp == 0x201D ||
      c.cp == 0x2019 || c.cp == 0xBB)
    return c.len;
  return 0;
}

bool IsOpener(char32_t c) {
  return c == '(' || c == '[' || c == '"' || c == '\'' || c == 0x201C || c == 0x2018 || c == 0xAB;
}

// Bytes of a sentence terminator at i: '.', '!', '?' or the ellipsis character.
size_t TerminatorLen(std::string_view s, size_t i) {
  const char ch = s[i];
  if (ch == '.' || ch == '!' || ch == '?') return 1;
  CodePoint c = Decode(s, i);
  return c.cp == 0x2026 ? c.len : 0;
}

// May a sentence start with the code point at i? An upper-case letter (ASCII or Latin-1), a digit,
// or an opening quote or bracket.
bool StartsSentence(std::string_view s, size_t i) {
  CodePoint c = Decode(s, i);
  if (IsAsciiUpper(c.cp) || IsAsciiDigit(c.cp) || IsOpener(c.cp)) return true;
  return c.cp >= 0xC0 && c.cp <= 0xDE && c.cp != 0xD7;
}

// Does a single '.' after `word` (its opening quotes/brackets stripped) end an abbreviation?
// `sentence_so_far` is the sentence text before the word; `next_is_digit` tells whether the
// following word starts with a digit.
bool IsAbbreviation(std::string_view word, std::string_view sentence_so_far, bool next_is_digit) {
  if (word.empty()) return false;
  // An enumerator stays with the sentence it introduces ("2. The next ...", "as follows: 1. The").
  if (IsEnumerator(word) && (sentence_so_far.empty() || sentence_so_far.back() == ':' ||
                             sentence_so_far.back() == ';'))
    return true;
  // A single capital is an initial ("Ulysses S. Grant", "U. S. Army"), except the pronoun I.
  if (word.size() == 1 && IsAsciiUpper(static_cast<unsigned char>(word[0])) && word[0] != 'I')
    return true;
  if (IsDottedAbbreviation(word)) return true;
  if (InList(word, std::begin(kAlwaysAbbreviations), std::end(kAlwaysAbbreviations))) return true;
  return next_is_digit &&
         InList(word, std::begin(kNumberAbbreviations), std::end(kNumberAbbreviations));
}

// Length of the white-space run at i (0 if none) and how many '\n' it holds.
size_t SpaceRun(std::string_view s, size_t i, int* newlines) {
  size_t j = i;
  while (j < s.size()) {
    CodePoint c = Decode(s, j);
    if (!IsSpace(c.cp)) break;
    if (c.cp == '\n') ++*newlines;
    j += c.len;
  }
  return j - i;
}

}  // namespace

std::vector<std::string> SplitSentences(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  bool pending_space = false;
  auto flush = [&] {
    if (!cur.empty()) out.push_back(std::move(cur));
    cur.clear();
    pending_space = false;
  };
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    int newlines = 0;
    if (size_t sp = SpaceRun(text, i, &newlines)) {
      i += sp;
      if (newlines >= 2) flush();  // a blank line ends a paragraph, and so a sentence
      else if (!cur.empty()) pending_space = true;
      continue;
    }
    if (pending_space) {
      cur += ' ';
      pending_space = false;
    }
    if (TerminatorLen(text, i) == 0) {
      size_t len = Decode(text, i).len;
      cur.append(text.substr(i, len));
      i += len;
      continue;
    }
    // A run of terminators ("?!", "...") and the closing quotes/brackets after it.
    const size_t start = i;
    while (i < n) {
      size_t t = TerminatorLen(text, i);
      if (t == 0) break;
      i += t;
    }
    const bool single_period = (i - start == 1 && text[start] == '.');
    while (i < n) {
      size_t c = CloserLen(text, i);
      if (c == 0) break;
      i += c;
    }
    // The word the terminator ends, cur[word_begin, word_end), and the sentence before it.
    const size_t word_end = cur.size();
    size_t word_begin = word_end;
    while (word_begin > 0 && cur[word_begin - 1] != ' ') --word_begin;
    cur.append(text.substr(start, i - start));
    // Views into cur: valid until cur changes again below.
    const std::string_view sentence_so_far(cur.data(), word_begin == 0 ? 0 : word_begin - 1);
    std::string_view word = std::string_view(cur).substr(word_begin, word_end - word_begin);
    while (!word.empty()) {  // without its opening quotes and brackets
      CodePoint c = Decode(word, 0);
      if (!IsOpener(c.cp)) break;
      word.remove_prefix(c.len);
    }

    // Split only before white space followed by something that can start a sentence.
    int ignored = 0;
    size_t sp = i < n ? SpaceRun(text, i, &ignored) : 0;
    if (sp == 0 || i + sp >= n) continue;  // "3.5", "U.S.A." or the end of the text
    const size_t next = i + sp;
    if (!StartsSentence(text, next)) continue;
    if (single_period &&
        IsAbbreviation(word, sentence_so_far, IsAsciiDigit(static_cast<unsigned char>(text[next]))))
      continue;
    flush();
  }
  flush();
  return out;
}

HashTokenizer::HashTokenizer(int64_t vocab_size)
    : vocab_size_(std::max<int64_t>(vocab_size, kFirstWordId + 1)) {}

std::vector<std::string> HashTokenizer::Words(std::string_view sentence) const {
  std::vector<std::string> words;
  const size_t n = sentence.size();
  size_t i = 0;
  while (i < n) {
    CodePoint c = Decode(sentence, i);
    if (IsSpace(c.cp) || IsIgnorable(c.cp)) {
      i += c.len;
      continue;
    }
    if (IsPunct(c.cp)) {
      words.emplace_back(sentence.substr(i, c.len));
      i += c.len;
      continue;
    }
    // A word: word characters, plus an apostrophe between two word characters ("don't",
    // "nation’s": the curly one is stored as ') and a '.' or ',' between two digits ("3.5",
    // "3,000,000").
    std::string word;
    char32_t prev = kInvalid;
    while (i < n) {
      c = Decode(sentence, i);
      if (IsWordChar(c.cp)) {
        if (c.cp == kInvalid) word += sentence[i];
        else AppendUtf8(word, ToLower(c.cp));
        prev = c.cp;
        i += c.len;
        continue;
      }
      if (IsIgnorable(c.cp)) {  // inside a word: dropped, the word goes on
        i += c.len;
        continue;
      }
      if (i + c.len >= n) break;
      CodePoint next = Decode(sentence, i + c.len);
      if (IsApostrophe(c.cp) && IsWordChar(next.cp)) {
        word += '\'';
      } else if ((c.cp == '.' || c.cp == ',') && IsAsciiDigit(prev) && IsAsciiDigit(next.cp)) {
        word += static_cast<char>(c.cp);
      } else {
        break;
      }
      prev = c.cp;
      i += c.len;
    }
    words.push_back(std::move(word));
  }
  return words;
}

std::vector<int32_t> HashTokenizer::Encode(std::string_view sentence) const {
  std::vector<int32_t> ids;
  const auto buckets = static_cast<uint64_t>(vocab_size_ - kFirstWordId);
  for (const std::string& w : Words(sentence)) {
    ids.push_back(static_cast<int32_t>(kFirstWordId + Fnv1a32(w) % buckets));
  }
  return ids;
}

namespace {

// Appends the subtree over tokens[lo, hi) in post-order; returns its root's index.
int32_t AppendBalanced(const std::vector<int32_t>& tokens, size_t lo, size_t hi, TreeInput& tree) {
  if (hi - lo == 1) {
    tree.nodes.push_back(TreeNode{tokens[lo], {}});
    return static_cast<int32_t>(tree.nodes.size() - 1);
  }
  const size_t mid = lo + (hi - lo + 1) / 2;  // the left half gets the extra token
  const int32_t left = AppendBalanced(tokens, lo, mid, tree);
  const int32_t right = AppendBalanced(tokens, mid, hi, tree);
  tree.nodes.push_back(TreeNode{-1, {left, right}});
  return static_cast<int32_t>(tree.nodes.size() - 1);
}

}  // namespace

TreeInput BracketBalanced(const std::vector<int32_t>& tokens) {
  TreeInput tree;
  if (tokens.empty()) return tree;  // precondition broken: an empty tree (ValidateTree rejects it)
  tree.nodes.reserve(2 * tokens.size() - 1);
  AppendBalanced(tokens, 0, tokens.size(), tree);
  return tree;
}

}  // namespace cellserve
