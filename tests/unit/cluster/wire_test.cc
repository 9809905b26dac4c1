// cluster/wire.h: the router <-> node payloads round-trip, and bad bytes are errors, never crashes.
#include "cluster/wire.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>
#include <string>

namespace cellserve::cluster {
namespace {

ModelSpec Lstm(const std::string& name) {
  ModelSpec spec;
  spec.name = name;
  spec.kind = ModelKind::kLstm;
  spec.vocab_size = 100;
  spec.embed_dim = 8;
  spec.hidden = 8;
  spec.layers = 2;
  spec.classes = 3;
  return spec;
}

TEST(WireRegistrationTest, RoundTrips) {
  Registration r;
  r.name = "node-a:17";
  r.devices = 4;
  r.models = {Lstm("cls"), Lstm("other")};
  r.models[1].version = 7;
  r.run_streams = true;
  auto back = DecodeRegistration(EncodeRegistration(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->name, "node-a:17");
  EXPECT_EQ(back->devices, 4);
  EXPECT_TRUE(back->run_streams);
  ASSERT_EQ(back->models.size(), 2u);
  EXPECT_EQ(back->models[0].name, "cls");
  EXPECT_EQ(back->models[0].layers, 2);
  EXPECT_EQ(back->models[1].version, 7);
}

TEST(WireRegistrationTest, RefusesWhatARouterCannotUse) {
  Registration r;
  r.name = "n";
  r.models = {Lstm("cls")};
  const std::string good = EncodeRegistration(r);
  EXPECT_TRUE(DecodeRegistration(good).ok());
  // Each bad one differs from the good one in one field, and the error names it.
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(good);
    j[key] = value;
    return j.dump();
  };
  auto refused = [](const std::string& bytes, const std::string& why) {
    const Status s = DecodeRegistration(bytes).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bytes;
    EXPECT_NE(s.message().find(why), std::string::npos) << bytes << ": " << s.message();
  };
  refused("", "not a JSON object");
  refused("[1,2]", "not a JSON object");
  refused(with("name", ""), "non-empty \"name\"");
  refused(with("name", 5), "non-empty \"name\"");
  // A name is a log field and a metrics label on every router: bounded, and no control characters.
  refused(with("name", std::string(kMaxNodeNameBytes + 1, 'a')), "at most 256 bytes, this one 257");
  refused(with("name", "n\nfake log line"), "control characters");
  refused(with("name", std::string("n\x7f")), "control characters");
  EXPECT_TRUE(DecodeRegistration(with("name", std::string(kMaxNodeNameBytes, 'a'))).ok()) << "the longest name";
  EXPECT_TRUE(DecodeRegistration(with("name", "pod-7.cellserve-node.svc:7410 \u00e9")).ok()) << "spaces, UTF-8";
  refused(with("devices", 0), "devices must be in 1..65536");
  refused(with("devices", 65537), "devices must be in 1..65536");
  refused(with("devices", "2"), "needs \"devices\"");
  refused(with("models", nlohmann::json::array()), "at least one model");
  refused(with("run_streams", 1), "\"run_streams\" must be true or false");
  // An older node's registration has no "run_streams": it gets the run message without the flag.
  EXPECT_FALSE(DecodeRegistration(good)->run_streams);
  EXPECT_TRUE(DecodeRegistration(with("run_streams", true))->run_streams);
  EXPECT_TRUE(DecodeRegistration(with("devices", 65536)).ok()) << "the largest node";
  r.models.clear();
  EXPECT_EQ(DecodeRegistration(EncodeRegistration(r)).status().code(), StatusCode::kInvalidArgument);
  // A model spec that does not validate.
  r.models = {Lstm("cls")};
  r.models[0].hidden = 0;
  auto bad = DecodeRegistration(EncodeRegistration(r));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("model"), std::string::npos) << bad.status().message();
}

TEST(WireRunTest, TokensAndTreesRoundTrip) {
  RequestInput in;
  in.tokens = {5, 6, 7, 99};
  in.max_decode_len = 12;
  auto run = DecodeRunRequest(EncodeRunRequest("mt", in), 4096);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->model, "mt");
  EXPECT_EQ(run->input.tokens, in.tokens);
  EXPECT_EQ(run->input.max_decode_len, 12);
  EXPECT_FALSE(run->input.has_tree);

  RequestInput tree;
  tree.has_tree = true;
  tree.tree.nodes = {{4, {}}, {5, {}}, {-1, {0, 1}}};
  auto t = DecodeRunRequest(EncodeRunRequest("tree", tree), 4096);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(t->input.has_tree);
  EXPECT_EQ(t->input.tree.nodes.size(), 3u);
}

TEST(WireRunTest, LimitsAndGarbageAreInvalidArgument) {
  RequestInput in;
  in.tokens.assign(100, 5);
  EXPECT_EQ(DecodeRunRequest(EncodeRunRequest("m", in), 99).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(DecodeRunRequest(EncodeRunRequest("m", in), 100).ok());
  EXPECT_EQ(DecodeRunRequest("", 10).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeRunRequest("1234567", 10).status().code(), StatusCode::kInvalidArgument);
  // Random bytes (whole words) and every truncation of a real message: an error or a request,
  // never a crash or an exception.
  const std::string real = EncodeRunRequest("m", in);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 300; ++i) {
    std::string bytes = real;
    for (int k = 0; k < 4; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    (void)DecodeRunRequest(bytes, 4096);
    (void)DecodeRunAnswer(bytes);
  }
  for (size_t n = 8; n < real.size(); n += 8) (void)DecodeRunRequest(real.substr(0, n), 4096);
}

TEST(WireAnswerTest, ResultsAndErrorsRoundTrip) {
  RequestResult r;
  r.logits = {0.5f, -1.25f, 3.0f};
  r.label = 2;
  auto back = DecodeRunAnswer(EncodeRunAnswer(r, Lstm("cls")));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->label, 2);
  EXPECT_EQ(back->logits, r.logits);

  RequestResult s;
  s.tokens = {9, 8, 2};
  s.scores = {0.1f, 0.2f, 0.3f};
  ModelSpec mt = Lstm("mt");
  mt.kind = ModelKind::kSeq2Seq;
  auto sb = DecodeRunAnswer(EncodeRunAnswer(s, mt));
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  EXPECT_EQ(sb->tokens, s.tokens);

  auto err = DecodeRunAnswer(EncodeRunAnswer(Unavailable("draining now"), ModelSpec{}));
  EXPECT_EQ(err.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(err.status().message().find("draining now"), std::string::npos);
  EXPECT_EQ(DecodeRunAnswer("").status().code(), StatusCode::kInternal);
}

TEST(WireHostPortTest, Parses) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:7411", false, host, port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7411);
  ASSERT_TRUE(ParseHostPort("cellserve-router-cluster:7411", false, host, port).ok());
  EXPECT_EQ(host, "cellserve-router-cluster");
  EXPECT_TRUE(ParseHostPort("h:0", true, host, port).ok());
  EXPECT_FALSE(ParseHostPort("h:0", false, host, port).ok());
  for (const char* bad : {"", "h", ":7411", "h:", "h:70000", "h:12a", "h:-1"})
    EXPECT_EQ(ParseHostPort(bad, true, host, port).code(), StatusCode::kInvalidArgument) << bad;
}

}  // namespace
}  // namespace cellserve::cluster
