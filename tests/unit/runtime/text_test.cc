// Tests for runtime/text.h: sentence splitting on real-world prose, the hashing tokenizer's
// stable ids and the balanced bracketing used for Tree-LSTM inputs.
#include "runtime/text.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "runtime/tree.h"

namespace cellserve {
namespace {

using Sentences = std::vector<std::string>;

// ---------------------------------------------------------------------------------------------
// SplitSentences

TEST(SplitSentencesTest, EndsAtTerminatorsBeforeCapitals) {
  EXPECT_EQ(SplitSentences("One is here. Two is there! Is three? Four"),
            (Sentences{"One is here.", "Two is there!", "Is three?", "Four"}));
}

TEST(SplitSentencesTest, EmptyAndBlankInput) {
  EXPECT_TRUE(SplitSentences("").empty());
  EXPECT_TRUE(SplitSentences(" \t\n\r\n  ").empty());
  EXPECT_EQ(SplitSentences("no terminator at all"), (Sentences{"no terminator at all"}));
}

TEST(SplitSentencesTest, CollapsesWhitespace) {
  EXPECT_EQ(SplitSentences("  A   b\tc.\n  Next\r\n line.  "),
            (Sentences{"A b c.", "Next line."}));
}

TEST(SplitSentencesTest, BlankLineEndsSentence) {
  EXPECT_EQ(SplitSentences("ANNUAL MESSAGE\n\nFellow-Citizens: I greet you."),
            (Sentences{"ANNUAL MESSAGE", "Fellow-Citizens: I greet you."}));
}

TEST(SplitSentencesTest, NoSplitBeforeLowerCase) {
  EXPECT_EQ(SplitSentences("We bought ships, guns, etc. and more. Done."),
            (Sentences{"We bought ships, guns, etc. and more.", "Done."}));
}

TEST(SplitSentencesTest, Titles) {
  EXPECT_EQ(SplitSentences("Mr. Smith met Mrs. Jones and Dr. Brown in St. Louis. They talked. "
                           "Gen. Grant and Hon. John W. Foster agreed with Messrs. Hay and Col. "
                           "Kane. Lt. Greely returned."),
            (Sentences{"Mr. Smith met Mrs. Jones and Dr. Brown in St. Louis.", "They talked.",
                       "Gen. Grant and Hon. John W. Foster agreed with Messrs. Hay and Col. Kane.",
                       "Lt. Greely returned."}));
}

TEST(SplitSentencesTest, UnitedStatesAbbreviations) {
  EXPECT_EQ(SplitSentences("The U.S. Congress met. The U. S. Army marched. Washington, D.C. "
                           "Police watched. Then it ended."),
            (Sentences{"The U.S. Congress met.", "The U. S. Army marched.",
                       "Washington, D.C. Police watched.", "Then it ended."}));
}

TEST(SplitSentencesTest, InitialsButNotThePronounI) {
  EXPECT_EQ(SplitSentences("Ulysses S. Grant and A. K. Cutting were there. The government is you "
                           "and I. Not some force. After World War I. Then peace."),
            (Sentences{"Ulysses S. Grant and A. K. Cutting were there.",
                       "The government is you and I.", "Not some force.", "After World War I.",
                       "Then peace."}));
}

TEST(SplitSentencesTest, AbbreviationsBeforeNumbers) {
  EXPECT_EQ(SplitSentences("See No. 5 and vol. 6, p. 3995 of the record. It was signed Dec. 1, "
                           "1858, in A. D. 1858. No. The answer was final."),
            (Sentences{"See No. 5 and vol. 6, p. 3995 of the record.",
                       "It was signed Dec. 1, 1858, in A. D. 1858.", "No.",
                       "The answer was final."}));
}

TEST(SplitSentencesTest, NumbersEndSentences) {
  EXPECT_EQ(SplitSentences("Growth was 3.5 percent. Prices rose 2.25 points in 1858. 1859 was "
                           "calmer. Debt fell to $3.5. Good."),
            (Sentences{"Growth was 3.5 percent.", "Prices rose 2.25 points in 1858.",
                       "1859 was calmer.", "Debt fell to $3.5.", "Good."}));
}

TEST(SplitSentencesTest, Enumerators) {
  EXPECT_EQ(SplitSentences("The terms are as follows: 1. The first term. 2. The second term. "
                           "I. FOREIGN AFFAIRS The year was quiet."),
            (Sentences{"The terms are as follows: 1. The first term.", "2. The second term.",
                       "I. FOREIGN AFFAIRS The year was quiet."}));
}

// The edges of the rules: a 3-digit enumerator stays, a 4-digit number ends the sentence; roman
// numerals of more than one letter are enumerators; dotted groups of two letters ("Ph.D.") are
// abbreviations; a Latin-1 capital (U+00C0..U+00DE but not the sign U+00D7) starts a sentence, and
// the lower-case U+00DF does not.
TEST(SplitSentencesTest, EdgesOfTheEnumeratorAbbreviationAndCapitalRules) {
  EXPECT_EQ(SplitSentences("Listed: 123. The end. Listed: 1234. The end."),
            (Sentences{"Listed: 123. The end.", "Listed: 1234.", "The end."}));
  EXPECT_EQ(SplitSentences("As follows: IV. The fourth. As follows: XL. The fortieth."),
            (Sentences{"As follows: IV. The fourth.", "As follows: XL. The fortieth."}));
  EXPECT_EQ(SplitSentences("She earned a Ph.D. She taught. It was 5 p.m. Then dinner."),
            (Sentences{"She earned a Ph.D. She taught.", "It was 5 p.m. Then dinner."}));
  EXPECT_EQ(SplitSentences("It ended. \xC3\x80 la carte. It ended. \xC3\x9Eorn came. It ended. \xC3\x97 marks. "
                           "It ended. \xC3\x9F is lower."),
            (Sentences{"It ended.", "\xC3\x80 la carte.", "It ended.", "\xC3\x9Eorn came.",
                       "It ended. \xC3\x97 marks.", "It ended. \xC3\x9F is lower."}));
}

TEST(SplitSentencesTest, Ellipses) {
  EXPECT_EQ(SplitSentences("He paused... Then he spoke. And so ... on. Wait\xE2\x80\xA6 Now. "
                           "Dots . . . Here."),
            (Sentences{"He paused...", "Then he spoke.", "And so ... on.",
                       "Wait\xE2\x80\xA6", "Now.", "Dots . . .", "Here."}));
}

TEST(SplitSentencesTest, QuotesAndBrackets) {
  EXPECT_EQ(SplitSentences("He said \"Stop.\" Then he left. (A remark.) \"Quoted,\" she said. "
                           "Really?! Yes. It is \xE2\x80\x9C" "done.\xE2\x80\x9D"
                           " \xE2\x80\x9CGood,\xE2\x80\x9D he said."),
            (Sentences{"He said \"Stop.\"", "Then he left.", "(A remark.)",
                       "\"Quoted,\" she said.", "Really?!", "Yes.",
                       "It is \xE2\x80\x9C" "done.\xE2\x80\x9D",
                       "\xE2\x80\x9CGood,\xE2\x80\x9D he said."}));
}

TEST(SplitSentencesTest, NineteenthCenturyProse) {
  // From the 1888 and 1885 annual messages (State of the Union), lightly shortened.
  const char* text =
      "Fellow-Citizens of the Senate and House of Representatives: The assault made by David S. "
      "Terry upon the person of Mr. Justice Field was a most wanton one. Hon. John F. Hartranft, "
      "of Pennsylvania, and Mr. A. B. Shepperson, of the U. S. Navy, reported on Dec. 3. The "
      "loan of 3,000,000 florins was completed in Holland. Lieutenant A. W. Greely, United States "
      "Army, returned in 1884. Is it not time? It is!";
  EXPECT_EQ(SplitSentences(text),
            (Sentences{
                "Fellow-Citizens of the Senate and House of Representatives: The assault made by "
                "David S. Terry upon the person of Mr. Justice Field was a most wanton one.",
                "Hon. John F. Hartranft, of Pennsylvania, and Mr. A. B. Shepperson, of the U. S. "
                "Navy, reported on Dec. 3.",
                "The loan of 3,000,000 florins was completed in Holland.",
                "Lieutenant A. W. Greely, United States Army, returned in 1884.",
                "Is it not time?", "It is!"}));
}

TEST(SplitSentencesTest, SurvivesInvalidUtf8AndControlBytes) {
  const std::string text("Bad \xFF\xC3 bytes. \xE2\x80 More\x01text. End");
  Sentences s = SplitSentences(text);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0], "Bad \xFF\xC3 bytes. \xE2\x80 More text.");
  EXPECT_EQ(s[1], "End");
  // Every sentence is non-empty, has no leading/trailing space and no newline.
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string junk;
    for (int k = 0; k < 200; ++k) junk += static_cast<char>(rng() % 256);
    for (const std::string& sentence : SplitSentences(junk)) {
      ASSERT_FALSE(sentence.empty());
      EXPECT_NE(sentence.front(), ' ');
      EXPECT_NE(sentence.back(), ' ');
      EXPECT_EQ(sentence.find('\n'), std::string::npos);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HashTokenizer

// The reference: 32-bit FNV-1a, written out here independently of the implementation.
uint32_t ReferenceFnv1a(const std::string& bytes) {
  uint32_t h = 0x811C9DC5u;
  for (unsigned char b : bytes) {
    h ^= b;
    h *= 0x01000193u;
  }
  return h;
}

int32_t ReferenceId(const std::string& word, int64_t vocab) {
  return static_cast<int32_t>(kFirstWordId +
                              ReferenceFnv1a(word) % static_cast<uint32_t>(vocab - kFirstWordId));
}

TEST(HashTokenizerTest, ReferenceFnvMatchesPublishedVectors) {
  EXPECT_EQ(ReferenceFnv1a(""), 0x811C9DC5u);
  EXPECT_EQ(ReferenceFnv1a("a"), 0xE40C292Cu);
  EXPECT_EQ(ReferenceFnv1a("foobar"), 0xBF9CF968u);
}

TEST(HashTokenizerTest, WordsAndPunctuation) {
  HashTokenizer tok(32000);
  EXPECT_EQ(tok.Words("Hello, World! Don't stop."),
            (Sentences{"hello", ",", "world", "!", "don't", "stop", "."}));
  EXPECT_EQ(tok.Words("Fellow-Citizens (of the) \"Senate\"; 'tis the states' rights"),
            (Sentences{"fellow", "-", "citizens", "(", "of", "the", ")", "\"", "senate", "\"", ";",
                       "'", "tis", "the", "states", "'", "rights"}));
  EXPECT_TRUE(tok.Words("").empty());
  EXPECT_TRUE(tok.Words(" \t\n ").empty());
}

TEST(HashTokenizerTest, NumbersStayWhole) {
  HashTokenizer tok(32000);
  EXPECT_EQ(tok.Words("Growth of 3.5 percent, 3,000,000 florins in 1858. $12.50, 4th."),
            (Sentences{"growth", "of", "3.5", "percent", ",", "3,000,000", "florins", "in", "1858",
                       ".", "$", "12.50", ",", "4th", "."}));
}

TEST(HashTokenizerTest, UnicodeText) {
  HashTokenizer tok(32000);
  // Curly apostrophe inside a word becomes ', em dash and curly quotes are pieces of their own,
  // Latin-1 capitals are lower-cased, other scripts pass through.
  EXPECT_EQ(tok.Words("The nation\xE2\x80\x99s \xE2\x80\x9C" "CAF\xC3\x89\xE2\x80\x9D\xE2\x80\x94"
                      "\xCE\xA9mega\xE2\x80\xA6"),
            (Sentences{"the", "nation's", "\xE2\x80\x9C", "caf\xC3\xA9", "\xE2\x80\x9D",
                       "\xE2\x80\x94", "\xCE\xA9mega", "\xE2\x80\xA6"}));
  // Invalid bytes are word characters, kept as they are.
  EXPECT_EQ(tok.Words(std::string("a\xFF" "b \xC3", 5)),
            (Sentences{"a\xFF" "b", "\xC3"}));
}

// A soft hyphen (a word processor's hyphenation point) is invisible: dropped, inside a word too.
// It used to split the word and be a token of its own. The zero-width joiners are spelling (ZWNJ
// in Persian, ZWJ in emoji sequences): they stay in their words.
TEST(HashTokenizerTest, ASoftHyphenIsDropped) {
  HashTokenizer tok(32000);
  EXPECT_EQ(tok.Words("infor\xC2\xADmation"), (Sentences{"information"}));
  EXPECT_EQ(tok.Words("a\xE2\x80\x8D" "b \xE2\x80\x8C" "c"),
            (Sentences{"a\xE2\x80\x8D" "b", "\xE2\x80\x8C" "c"}));
  EXPECT_EQ(tok.Words("\xC2\xAD end \xC2\xAD"), (Sentences{"end"}));
  EXPECT_EQ(tok.Encode("infor\xC2\xADmation"), tok.Encode("information"));
}

std::string Utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Each class of characters at both ends of each of its ranges in text.cc (IsSpace, IsPunct; text.h:
// a word is a run of "other non-punctuation characters (any script)" too, so U+009F, U+200C and
// U+2060 are word characters): what "a<c>b" splits into tells a space (two words), a mark of its
// own (three pieces), a word character (one word, lower-cased where c is an ASCII or Latin-1
// capital) and the soft hyphen, dropped (one word "ab").
TEST(HashTokenizerTest, CharacterClassesAtTheEdgesOfTheirRanges) {
  enum Kind { kSpace, kMark, kWord, kDropped };
  struct Case {
    char32_t cp;
    Kind kind;
    char32_t lower;  // for kWord: the code point in the word (0: cp itself)
  };
  const Case cases[] = {
      {0x1F, kSpace, 0},   {0x20, kSpace, 0},   {0x21, kMark, 0},    {0x2F, kMark, 0},
      {0x30, kWord, 0},    {0x39, kWord, 0},    {0x3A, kMark, 0},    {0x40, kMark, 0},
      {'A', kWord, 'a'},   {'Z', kWord, 'z'},   {0x5B, kMark, 0},    {0x60, kMark, 0},
      {0x7B, kMark, 0},    {0x7E, kMark, 0},    {0x7F, kSpace, 0},   {0x9F, kWord, 0},
      {0xA0, kSpace, 0},   {0xA1, kMark, 0},    {0xAC, kMark, 0},    {0xAD, kDropped, 0},
      {0xAE, kMark, 0},    {0xBF, kMark, 0},    {0xC0, kWord, 0xE0},
      {0xD6, kWord, 0xF6}, {0xD7, kMark, 0},    {0xD8, kWord, 0xF8}, {0xDE, kWord, 0xFE},
      {0xDF, kWord, 0},    {0xE0, kWord, 0},    {0xF6, kWord, 0},    {0xF7, kMark, 0},
      {0xF8, kWord, 0},    {0x1FFF, kWord, 0},  {0x2000, kSpace, 0}, {0x200B, kSpace, 0},
      {0x200C, kWord, 0},  {0x200D, kWord, 0},  {0x200F, kWord, 0},  {0x2010, kMark, 0},  {0x2027, kMark, 0},
      {0x2028, kSpace, 0}, {0x2029, kSpace, 0}, {0x202A, kMark, 0},  {0x202E, kMark, 0},
      {0x202F, kSpace, 0}, {0x2030, kMark, 0},  {0x205E, kMark, 0},  {0x205F, kSpace, 0},
      {0x2060, kWord, 0},  {0x2FFF, kWord, 0},  {0x3000, kSpace, 0}, {0x3001, kMark, 0},
      {0x303F, kMark, 0},  {0x3040, kWord, 0},  {0xFEFE, kWord, 0},  {0xFEFF, kSpace, 0},
      {0xFF00, kWord, 0},
  };
  HashTokenizer tok(32000);
  for (const Case& c : cases) {
    const std::string ch = Utf8(c.cp);
    SCOPED_TRACE(testing::Message() << "U+" << std::hex << static_cast<uint32_t>(c.cp));
    const Sentences got = tok.Words("a" + ch + "b");
    switch (c.kind) {
      case kSpace: EXPECT_EQ(got, (Sentences{"a", "b"})); break;
      case kMark: EXPECT_EQ(got, (Sentences{"a", ch, "b"})); break;
      case kWord: EXPECT_EQ(got, (Sentences{"a" + Utf8(c.lower ? c.lower : c.cp) + "b"})); break;
      case kDropped: EXPECT_EQ(got, (Sentences{"ab"})); break;
    }
  }
}

TEST(HashTokenizerTest, EncodeIsFnv1aOfLowerCasedWords) {
  for (int64_t vocab : {5, 17, 1000, 32000, 1 << 20}) {
    HashTokenizer tok(vocab);
    const std::string sentence =
        "Mr. Lincoln\xE2\x80\x99s DON'T \xC3\x89" "cole 3.5 \xE2\x80\x94 end!";
    const Sentences words = tok.Words(sentence);
    const std::vector<int32_t> ids = tok.Encode(sentence);
    ASSERT_EQ(ids.size(), words.size());
    for (size_t i = 0; i < words.size(); ++i) {
      EXPECT_EQ(ids[i], ReferenceId(words[i], vocab)) << "vocab " << vocab << " word " << words[i];
    }
  }
}

TEST(HashTokenizerTest, PinnedIds) {
  // Literal ids for vocab 32000: a change here changes every model's input. Don't.
  HashTokenizer tok(32000);
  EXPECT_EQ(tok.Encode("The Mr. don't 3.5 \xC3\x89" "cole \xE2\x80\x94"),
            (std::vector<int32_t>{23636, 11938, 169, 10585, 20203, 28900, 2725}));
  EXPECT_EQ(tok.Encode("THE"), tok.Encode("the"));
  EXPECT_TRUE(tok.Encode("").empty());
}

TEST(HashTokenizerTest, IdsAlwaysInRange) {
  std::mt19937 rng(11);
  for (int64_t vocab : {5, 6, 100, 32000}) {
    HashTokenizer tok(vocab);
    for (int round = 0; round < 100; ++round) {
      std::string junk;
      for (int k = 0; k < 100; ++k) junk += static_cast<char>(rng() % 256);
      for (int32_t id : tok.Encode(junk)) {
        ASSERT_GE(id, kFirstWordId);
        ASSERT_LT(id, vocab);
      }
    }
  }
  // A vocabulary too small for any word is taken as kFirstWordId + 1: every piece is id 4.
  EXPECT_EQ(HashTokenizer(0).Encode("a b ."), (std::vector<int32_t>{4, 4, 4}));
}

// ---------------------------------------------------------------------------------------------
// BracketBalanced

struct Shape {
  std::vector<int32_t> leaves;  // in order
  int internal = 0;
  int depth = 0;  // edges from the root to the deepest leaf
};

void Walk(const TreeInput& tree, int32_t node, int depth, Shape& shape) {
  const TreeNode& n = tree.nodes[static_cast<size_t>(node)];
  if (n.children.empty()) {
    shape.leaves.push_back(n.token);
    shape.depth = std::max(shape.depth, depth);
    return;
  }
  ASSERT_EQ(n.children.size(), 2u);
  EXPECT_EQ(n.token, -1);
  ++shape.internal;
  Walk(tree, n.children[0], depth + 1, shape);
  Walk(tree, n.children[1], depth + 1, shape);
}

int CeilLog2(int n) {
  int d = 0;
  while ((1 << d) < n) ++d;
  return d;
}

TEST(BracketBalancedTest, StructureForEveryLength) {
  for (int n = 1; n <= 130; ++n) {
    std::vector<int32_t> tokens;
    for (int i = 0; i < n; ++i) tokens.push_back(kFirstWordId + (i * 7919) % 1000);
    const TreeInput tree = BracketBalanced(tokens);
    ASSERT_EQ(tree.nodes.size(), static_cast<size_t>(2 * n - 1)) << n;

    StatusOr<int32_t> root = ValidateTree(tree, TreeLimits{1000 + kFirstWordId, 1024});
    ASSERT_TRUE(root.ok()) << n << ": " << root.status().ToString();
    EXPECT_EQ(*root, 2 * n - 2) << "post-order: the root comes last";

    Shape shape;
    Walk(tree, *root, 0, shape);
    EXPECT_EQ(shape.leaves, tokens) << n;
    EXPECT_EQ(shape.internal, n - 1) << n;
    EXPECT_EQ(shape.depth, CeilLog2(n)) << n;

    // Children come before parents.
    for (size_t i = 0; i < tree.nodes.size(); ++i) {
      for (int32_t c : tree.nodes[i].children) EXPECT_LT(static_cast<size_t>(c), i);
    }
  }
}

TEST(BracketBalancedTest, LeftHalfGetsTheExtraToken) {
  EXPECT_EQ(TreeToSexpr(BracketBalanced({10})), "10");
  EXPECT_EQ(TreeToSexpr(BracketBalanced({10, 11})), "(10 11)");
  EXPECT_EQ(TreeToSexpr(BracketBalanced({10, 11, 12})), "((10 11) 12)");
  EXPECT_EQ(TreeToSexpr(BracketBalanced({10, 11, 12, 13, 14})), "(((10 11) 12) (13 14))");
}

TEST(BracketBalancedTest, RoundTripsThroughTheTextForm) {
  const std::vector<int32_t> tokens = {4, 9, 16, 25, 36, 49, 64};
  const TreeInput tree = BracketBalanced(tokens);
  StatusOr<TreeInput> parsed = ParseTreeSexpr(TreeToSexpr(tree));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(TreeToSexpr(*parsed), TreeToSexpr(tree));
  ASSERT_EQ(parsed->nodes.size(), tree.nodes.size());
  for (size_t i = 0; i < tree.nodes.size(); ++i) {
    EXPECT_EQ(parsed->nodes[i].token, tree.nodes[i].token);
    EXPECT_EQ(parsed->nodes[i].children, tree.nodes[i].children);
  }
}

TEST(BracketBalancedTest, EmptyInputGivesAnInvalidTree) {
  const TreeInput tree = BracketBalanced({});
  EXPECT_TRUE(tree.nodes.empty());
  EXPECT_FALSE(ValidateTree(tree, TreeLimits{100, 1024}).ok());
}

TEST(BracketBalancedTest, TokenizedSentenceMakesAValidTree) {
  HashTokenizer tok(32000);
  for (const std::string& s : SplitSentences(
           "The abundant fruits of another year have blessed our country. Mr. Jefferson agreed.")) {
    std::vector<int32_t> ids = tok.Encode(s);
    ASSERT_FALSE(ids.empty());
    EXPECT_TRUE(ValidateTree(BracketBalanced(ids), TreeLimits{32000, 1024}).ok());
  }
}

}  // namespace
}  // namespace cellserve
