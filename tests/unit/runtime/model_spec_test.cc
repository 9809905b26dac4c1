#include "runtime/model_spec.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/unit/common/fifo_read.h"

namespace cellserve {
namespace {

using nlohmann::json;

json LstmJson() {
  return json{{"name", "sentiment"}, {"version", 3},    {"kind", "lstm"},
              {"vocab_size", 100},   {"embed_dim", 8},  {"hidden", 16},
              {"layers", 2},         {"classes", 3},    {"max_input_tokens", 50},
              {"max_batch", 4},      {"dtype", "F16"}};
}
json TreeJson() {
  return json{{"name", "tree_sst"}, {"kind", "treelstm"}, {"vocab_size", 30}, {"embed_dim", 5},
              {"hidden", 7},        {"classes", 5},       {"dtype", "BF16"}};
}
json Seq2SeqJson() {
  return json{{"name", "en-de.v2"},   {"version", 9},         {"kind", "seq2seq"},
              {"vocab_size", 200},    {"embed_dim", 12},      {"hidden", 10},
              {"layers", 3},          {"target_vocab_size", 150}, {"bos_id", 0},
              {"eos_id", 149},        {"max_decode_len", 17}, {"max_input_tokens", 77},
              {"max_batch", 31}};
}

void ExpectSameSpec(const ModelSpec& a, const ModelSpec& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.version, b.version);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.embed_dim, b.embed_dim);
  EXPECT_EQ(a.hidden, b.hidden);
  EXPECT_EQ(a.layers, b.layers);
  EXPECT_EQ(a.classes, b.classes);
  EXPECT_EQ(a.target_vocab_size, b.target_vocab_size);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.max_decode_len, b.max_decode_len);
  EXPECT_EQ(a.max_input_tokens, b.max_input_tokens);
  EXPECT_EQ(a.max_batch, b.max_batch);
  EXPECT_EQ(a.dtype, b.dtype);
}

ModelSpec MustParse(const json& j) {
  StatusOr<ModelSpec> s = ParseModelSpec(j.dump());
  EXPECT_TRUE(s.ok()) << s.status().ToString() << "\n" << j.dump();
  return s.ok() ? *s : ModelSpec();
}

void ExpectInvalid(const std::string& text, const std::string& needle) {
  StatusOr<ModelSpec> s = ParseModelSpec(text);
  ASSERT_FALSE(s.ok()) << "parsed unexpectedly: " << text;
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << s.status().ToString();
  EXPECT_NE(s.status().message().find(needle), std::string::npos)
      << "message '" << s.status().message() << "' lacks '" << needle << "' for " << text;
}
void ExpectInvalid(const json& j, const std::string& needle) { ExpectInvalid(j.dump(), needle); }

TEST(ModelKindTest, NamesAndParse) {
  EXPECT_STREQ(ModelKindName(ModelKind::kLstm), "lstm");
  EXPECT_STREQ(ModelKindName(ModelKind::kSeq2Seq), "seq2seq");
  EXPECT_STREQ(ModelKindName(ModelKind::kTreeLstm), "treelstm");
  for (ModelKind k : {ModelKind::kLstm, ModelKind::kSeq2Seq, ModelKind::kTreeLstm}) {
    StatusOr<ModelKind> p = ParseModelKind(ModelKindName(k));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, k);
  }
  StatusOr<ModelKind> bad = ParseModelKind("LSTM");  // case-sensitive
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("LSTM"), std::string::npos);
}

TEST(ModelSpecTest, ParsesLstmFields) {
  ModelSpec s = MustParse(LstmJson());
  EXPECT_EQ(s.name, "sentiment");
  EXPECT_EQ(s.version, 3);
  EXPECT_EQ(s.kind, ModelKind::kLstm);
  EXPECT_EQ(s.vocab_size, 100);
  EXPECT_EQ(s.embed_dim, 8);
  EXPECT_EQ(s.hidden, 16);
  EXPECT_EQ(s.layers, 2);
  EXPECT_EQ(s.classes, 3);
  EXPECT_EQ(s.max_input_tokens, 50);
  EXPECT_EQ(s.max_batch, 4);
  EXPECT_EQ(s.dtype, "F16");
}

TEST(ModelSpecTest, DefaultsForOptionalFields) {
  ModelSpec s = MustParse(TreeJson());
  EXPECT_EQ(s.kind, ModelKind::kTreeLstm);
  EXPECT_EQ(s.version, 1);
  EXPECT_EQ(s.layers, 1);
  EXPECT_EQ(s.max_input_tokens, 1024);
  EXPECT_EQ(s.max_batch, 256);
  EXPECT_EQ(s.dtype, "BF16");
  json j = Seq2SeqJson();
  for (const char* f : {"version", "layers", "bos_id", "eos_id", "max_decode_len",
                        "max_input_tokens", "max_batch", "dtype"})
    j.erase(f);
  ModelSpec d = MustParse(j);
  EXPECT_EQ(d.version, 1);
  EXPECT_EQ(d.layers, 1);
  EXPECT_EQ(d.bos_id, 1);
  EXPECT_EQ(d.eos_id, 2);
  EXPECT_EQ(d.max_decode_len, 64);
  EXPECT_EQ(d.max_input_tokens, 1024);
  EXPECT_EQ(d.max_batch, 256);
  EXPECT_EQ(d.dtype, "F32");
}

TEST(ModelSpecTest, ParsesSeq2SeqFields) {
  ModelSpec s = MustParse(Seq2SeqJson());
  EXPECT_EQ(s.name, "en-de.v2");
  EXPECT_EQ(s.kind, ModelKind::kSeq2Seq);
  EXPECT_EQ(s.target_vocab_size, 150);
  EXPECT_EQ(s.bos_id, 0);
  EXPECT_EQ(s.eos_id, 149);
  EXPECT_EQ(s.max_decode_len, 17);
  EXPECT_EQ(s.layers, 3);
  EXPECT_EQ(s.classes, 0);  // seq2seq has no classes
}

TEST(ModelSpecTest, RoundTripsAllKinds) {
  for (const json& j : {LstmJson(), TreeJson(), Seq2SeqJson()}) {
    SCOPED_TRACE(j.dump());
    ModelSpec a = MustParse(j);
    const std::string text = ModelSpecToJson(a);
    EXPECT_EQ(text.back(), '\n');
    StatusOr<ModelSpec> b = ParseModelSpec(text);
    ASSERT_TRUE(b.ok()) << b.status().ToString() << "\n" << text;
    ExpectSameSpec(a, *b);
    EXPECT_EQ(ModelSpecToJson(*b), text);  // printing is stable
    // Kind-specific fields only where they belong.
    json printed = json::parse(text);
    const bool s2s = a.kind == ModelKind::kSeq2Seq;
    EXPECT_EQ(printed.contains("classes"), !s2s);
    EXPECT_EQ(printed.contains("target_vocab_size"), s2s);
    EXPECT_EQ(printed.contains("eos_id"), s2s);
    EXPECT_EQ(printed["kind"], ModelKindName(a.kind));
  }
}

TEST(ModelSpecTest, RoundTripsFromStruct) {
  ModelSpec s;
  s.name = "x_1";
  s.version = int64_t{1} << 33;  // beyond 32 bits survives
  s.kind = ModelKind::kSeq2Seq;
  s.vocab_size = 16777216;
  s.embed_dim = 65536;
  s.hidden = 1;
  s.layers = 64;
  s.target_vocab_size = 3;
  s.bos_id = 2;
  s.eos_id = 0;
  s.max_decode_len = 1;
  s.max_input_tokens = 1;
  s.max_batch = 65536;
  s.dtype = "BF16";
  ASSERT_TRUE(s.Validate().ok()) << s.Validate().ToString();
  StatusOr<ModelSpec> p = ParseModelSpec(ModelSpecToJson(s));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ExpectSameSpec(s, *p);
}

TEST(ModelSpecTest, MissingRequiredFieldNamesIt) {
  for (const char* f : {"name", "kind", "vocab_size", "embed_dim", "hidden", "classes"}) {
    json j = LstmJson();
    j.erase(f);
    ExpectInvalid(j, std::string("missing field '") + f + "'");  // not a later range check's error
  }
  json t = TreeJson();
  t.erase("classes");
  ExpectInvalid(t, "missing field 'classes'");
  json s = Seq2SeqJson();
  s.erase("target_vocab_size");
  ExpectInvalid(s, "missing field 'target_vocab_size'");
  // seq2seq does not need classes.
  json s2 = Seq2SeqJson();
  s2.erase("classes");
  MustParse(s2);
}

// A misspelt field is an error naming it (and the field it was likely meant to be), not ignored:
// "max_input_token" would have left the limit at its default without a word.
TEST(ModelSpecTest, AnUnknownFieldIsAnErrorNamingIt) {
  json typo = LstmJson();
  typo["max_input_token"] = 8;
  ExpectInvalid(typo, "unknown field \"max_input_token\" (did you mean \"max_input_tokens\"?)");
  json other = LstmJson();
  other["comment"] = "made by hand";
  ExpectInvalid(other, "unknown field \"comment\"; a spec's fields: name, kind,");
  MustParse(LstmJson());
}

TEST(ModelSpecTest, WrongTypeNamesTheField) {
  const std::vector<std::pair<const char*, json>> cases = {
      {"name", 5},         {"kind", 1},          {"version", "3"},   {"vocab_size", "100"},
      {"embed_dim", 8.5},  {"hidden", 16.0},     {"layers", true},   {"classes", nullptr},
      {"max_batch", json::array({4})},           {"max_input_tokens", json::object()},
      {"dtype", 32},       {"bos_id", "1"},      {"eos_id", 2.0},    {"max_decode_len", false},
      {"target_vocab_size", "150"},
  };
  for (const auto& [field, value] : cases) {
    json j = std::string(field) == "bos_id" || std::string(field) == "eos_id" ||
                     std::string(field) == "max_decode_len" ||
                     std::string(field) == "target_vocab_size"
                 ? Seq2SeqJson()
                 : LstmJson();
    j[field] = value;
    ExpectInvalid(j, std::string("'") + field + "'");
  }
}

TEST(ModelSpecTest, NonPositiveOrTooLargeSizesNameTheField) {
  const std::vector<std::pair<const char*, int64_t>> lstm_cases = {
      {"version", 0},     {"vocab_size", 0},       {"vocab_size", -3},      {"vocab_size", 4},
      {"embed_dim", 0},   {"embed_dim", -1},       {"hidden", 0},
      {"hidden", -16},    {"layers", 0},           {"layers", -1},
      {"classes", 0},     {"classes", -2},         {"max_input_tokens", 0},
      {"max_batch", 0},   {"max_batch", -5},       {"layers", 65},
      {"hidden", 65537},  {"embed_dim", 65537},    {"max_batch", 65537},
      {"vocab_size", (int64_t{1} << 24) + 1},      {"max_input_tokens", (1 << 20) + 1},
  };
  for (const auto& [field, value] : lstm_cases) {
    json j = LstmJson();
    j[field] = value;
    ExpectInvalid(j, std::string("'") + field + "'");
  }
  const std::vector<std::pair<const char*, int64_t>> s2s_cases = {
      {"target_vocab_size", 0}, {"target_vocab_size", -1}, {"max_decode_len", 0},
      {"max_decode_len", -4},   {"max_decode_len", 65537},
  };
  for (const auto& [field, value] : s2s_cases) {
    json j = Seq2SeqJson();
    j[field] = value;
    ExpectInvalid(j, std::string("'") + field + "'");
  }
  // An integer too large for int64 must not wrap into something valid.
  json big = LstmJson();
  big["vocab_size"] = uint64_t{18446744073709551615ull};
  ExpectInvalid(big, "'vocab_size'");
}

TEST(ModelSpecTest, UnknownKindAndDtype) {
  json k = LstmJson();
  k["kind"] = "gru";
  ExpectInvalid(k, "kind");
  ExpectInvalid(k, "'gru'");
  json d = LstmJson();
  d["dtype"] = "F64";
  ExpectInvalid(d, "'dtype'");
  ExpectInvalid(d, "F64");
  d["dtype"] = "f32";  // case-sensitive, as safetensors spells them
  ExpectInvalid(d, "'dtype'");
}

TEST(ModelSpecTest, BosEosOutOfRange) {
  for (int64_t bad : {int64_t{-1}, int64_t{150}, int64_t{1000}}) {
    json b = Seq2SeqJson();
    b["bos_id"] = bad;
    ExpectInvalid(b, "'bos_id'");
    json e = Seq2SeqJson();
    e["eos_id"] = bad;
    ExpectInvalid(e, "'eos_id'");
  }
  // The defaults (1, 2) do not fit a 2-token target vocabulary.
  json small = Seq2SeqJson();
  small.erase("bos_id");
  small.erase("eos_id");
  small["target_vocab_size"] = 2;
  ExpectInvalid(small, "'eos_id'");
}

TEST(ModelSpecTest, BadNames) {
  for (const char* name : {"a/b", "../up", "has space", "semi;colon", "tab\t", "ünï"}) {
    json j = LstmJson();
    j["name"] = name;
    ExpectInvalid(j, "name");
  }
  json empty = LstmJson();
  empty["name"] = "";
  ExpectInvalid(empty, "'name'");
  // The name is a folder of the model repository: "." and ".." would write outside the model's
  // own folder (WriteModel(repo, spec) writes repo/<name>/...).
  for (const char* name : {".", ".."}) {
    json j = LstmJson();
    j["name"] = name;
    ExpectInvalid(j, "name");
  }
  // A hidden folder (the repository's scan skips it: `model init` made a model nothing served),
  // and a name longer than a folder name may be (model init aborted on ENAMETOOLONG).
  for (const std::string& name : {std::string(".hidden"), std::string(kMaxModelNameBytes + 1, 'm')}) {
    json j = LstmJson();
    j["name"] = name;
    ExpectInvalid(j, "name");
  }
  {
    json j = LstmJson();
    j["name"] = std::string(kMaxModelNameBytes, 'm');
    EXPECT_EQ(MustParse(j).name.size(), kMaxModelNameBytes);
  }
  for (const char* name : {"A-z_0.9", "x", "model.v1"}) {
    json j = LstmJson();
    j["name"] = name;
    EXPECT_EQ(MustParse(j).name, name);
  }
}

TEST(ModelSpecTest, InvalidJsonAndNonObject) {
  for (const char* text : {"", "{", "{\"name\": }", "not json", "{\"name\": \"x\",}"})
    ExpectInvalid(std::string(text), "JSON");
  ExpectInvalid(std::string("{\n  \"name\": \"x\",\n  \"hidden\": 16,,\n}"), "line 3, column");  // says where
  for (const char* text : {"[1, 2]", "42", "\"lstm\"", "null", "true"})
    ExpectInvalid(std::string(text), "object");
}

// A field appended to change it: JSON keeps the last one silently (max_input_tokens became 5).
TEST(ModelSpecTest, AFieldGivenTwiceIsAnError) {
  std::string text = LstmJson().dump();
  text.insert(text.size() - 1, ", \"max_input_tokens\": 5");
  ASSERT_NE(LstmJson().dump().find("max_input_tokens"), std::string::npos) << "the test needs the field given";
  ExpectInvalid(text, "\"max_input_tokens\" twice");
}

TEST(ModelSpecTest, ValidateCatchesHandBuiltSpecs) {
  ModelSpec s;
  s.name = "ok";
  s.vocab_size = 10;
  s.embed_dim = 4;
  s.hidden = 4;
  s.classes = 2;
  EXPECT_TRUE(s.Validate().ok()) << s.Validate().ToString();
  ModelSpec no_classes = s;
  no_classes.classes = 0;
  EXPECT_EQ(no_classes.Validate().code(), StatusCode::kInvalidArgument);
  ModelSpec s2s = s;
  s2s.kind = ModelKind::kSeq2Seq;  // target_vocab_size 0
  Status st = s2s.Validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'target_vocab_size'"), std::string::npos) << st.ToString();
}

class ReadModelSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "spec_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(ReadModelSpecTest, ReadsFile) {
  StatusOr<ModelSpec> s = ReadModelSpec(Write("spec.json", LstmJson().dump(2)));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->name, "sentiment");
  EXPECT_EQ(s->hidden, 16);
}

TEST_F(ReadModelSpecTest, MissingFileIsNotFound) {
  StatusOr<ModelSpec> s = ReadModelSpec(dir_ + "/nope.json");
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("nope.json"), std::string::npos);
}

// What is not a spec file is refused before it is read: a FIFO (opening it waited for a writer,
// for good) and a file far larger than any spec (weights copied over it: read whole, then "not
// valid JSON").
TEST_F(ReadModelSpecTest, AFifoOrAHugeFileIsRefusedUnread) {
  const Status s = testutil::ReadFromAFifo(dir_ + "/fifo.json",
                                           [](const std::string& path) { return ReadModelSpec(path).status(); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("not a regular file"), std::string::npos) << s.ToString();

  const std::string huge = Write("huge.json", LstmJson().dump());
  ASSERT_EQ(::truncate(huge.c_str(), kMaxModelSpecBytes + 1), 0);
  const Status big = ReadModelSpec(huge).status();
  EXPECT_EQ(big.code(), StatusCode::kInvalidArgument) << big.ToString();
  EXPECT_NE(big.message().find("is this the right file?"), std::string::npos) << big.ToString();
}

TEST_F(ReadModelSpecTest, BadFileNamesPathAndField) {
  json j = LstmJson();
  j["hidden"] = 0;
  const std::string path = Write("bad.json", j.dump());
  StatusOr<ModelSpec> s = ReadModelSpec(path);
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find(path), std::string::npos) << s.status().ToString();
  EXPECT_NE(s.status().message().find("'hidden'"), std::string::npos) << s.status().ToString();
}

}  // namespace
}  // namespace cellserve
