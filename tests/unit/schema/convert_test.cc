// schema/convert.*: the conversions between the RPC messages and the core's types. Round trips
// through real serialized messages (messageToFlatArray -> FlatArrayMessageReader), the size
// limits, FindModel, the error-code mapping, and hostile input (a traversal limit hit, every
// single-byte corruption of a valid request): decoding returns INVALID_ARGUMENT, never throws.
#include "schema/convert.h"

#include <cstring>
#include <functional>
#include <memory>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <kj/array.h>

#include "runtime/cell_graph.h"
#include "runtime/tree.h"
#include "tests/unit/common/random_model.h"

namespace cellserve::rpc {
namespace {

// Inside cellserve::rpc, ModelKind is the wire enum; the core's is this.
using CoreKind = cellserve::ModelKind;

const std::vector<StatusCode> kErrorCodes = {
    StatusCode::kInvalidArgument, StatusCode::kNotFound,    StatusCode::kResourceExhausted,
    StatusCode::kDeadlineExceeded, StatusCode::kCancelled, StatusCode::kUnavailable,
    StatusCode::kInternal,
};

// A serialized message, as it crosses the wire.
kj::Array<capnp::word> Serialize(capnp::MessageBuilder& message) {
  return capnp::messageToFlatArray(message);
}

// Reads `words` as an InferRequest with `options` and decodes it. Opening the message and its root
// is capnp's (in the server, the RPC layer does it before our code runs): if `refused` is given, an
// exception there sets it and returns an error; otherwise it escapes. Exceptions from
// DecodeInferRequest itself are never caught here: one escaping fails the test that called it.
StatusOr<DecodedRequest> DecodeWords(kj::ArrayPtr<const capnp::word> words, const RequestLimits& limits = {},
                                     capnp::ReaderOptions options = {}, bool* refused = nullptr) {
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  InferRequest::Reader root;
  try {
    reader = std::make_unique<capnp::FlatArrayMessageReader>(words, options);
    root = reader->getRoot<InferRequest>();
  } catch (const kj::Exception& e) {
    if (refused == nullptr) throw;
    *refused = true;
    return Internal(std::string("capnp refused the message: ") + e.getDescription().cStr());
  }
  return DecodeInferRequest(root, limits);
}

StatusOr<DecodedRequest> RoundTrip(const std::string& model, uint32_t version, const RequestInput& input,
                                   int64_t timeout_us = 0, int64_t max_decode_len = 0,
                                   const RequestLimits& limits = {}) {
  capnp::MallocMessageBuilder message;
  EncodeInferRequest(model, version, input, timeout_us, max_decode_len, message.initRoot<InferRequest>());
  kj::Array<capnp::word> words = Serialize(message);
  return DecodeWords(words, limits);
}

// Builds a request by hand (for shapes EncodeInferRequest never writes) and decodes it.
StatusOr<DecodedRequest> DecodeBuilt(const std::function<void(InferRequest::Builder)>& fill,
                                     const RequestLimits& limits = {}) {
  capnp::MallocMessageBuilder message;
  fill(message.initRoot<InferRequest>());
  kj::Array<capnp::word> words = Serialize(message);
  return DecodeWords(words, limits);
}

RequestInput Tokens(std::vector<int32_t> tokens) {
  RequestInput in;
  in.tokens = std::move(tokens);
  return in;
}

// ((a b) c) in post-order: nodes 0, 1 leaves, 2 = (0 1), 3 leaf, 4 = (2 3) the root.
RequestInput SmallTree(int32_t a, int32_t b, int32_t c) {
  RequestInput in;
  in.has_tree = true;
  auto leaf = [](int32_t t) { TreeNode n; n.token = t; return n; };
  auto inner = [](int32_t l, int32_t r) { TreeNode n; n.children = {l, r}; return n; };
  in.tree.nodes = {leaf(a), leaf(b), inner(0, 1), leaf(c), inner(2, 3)};
  return in;
}

void ExpectInvalid(const StatusOr<DecodedRequest>& got, const std::string& needle) {
  ASSERT_FALSE(got.ok()) << "decoded unexpectedly; expected an error naming '" << needle << "'";
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << got.status().ToString();
  EXPECT_NE(got.status().message().find(needle), std::string::npos)
      << "message '" << got.status().message() << "' lacks '" << needle << "'";
}

ModelSpec Spec(CoreKind kind, const std::string& name = "m", int64_t version = 1) {
  ModelSpec s;
  s.name = name;
  s.version = version;
  s.kind = kind;
  s.vocab_size = 50;
  s.embed_dim = 4;
  s.hidden = 4;
  s.layers = 1;
  s.classes = kind == CoreKind::kSeq2Seq ? 0 : 3;
  s.target_vocab_size = kind == CoreKind::kSeq2Seq ? 30 : 0;
  s.max_decode_len = 8;
  s.max_input_tokens = 40;
  return s;
}

// ---------------------------------------------------------------------------------------------
// InferRequest round trips

TEST(ConvertRequestTest, TokensRoundTrip) {
  StatusOr<DecodedRequest> got = RoundTrip("sentiment", 3, Tokens({0, 5, 31999, 7, 7}), 1500, 17);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->model, "sentiment");
  EXPECT_EQ(got->version, 3u);
  EXPECT_EQ(got->input.tokens, (std::vector<int32_t>{0, 5, 31999, 7, 7}));
  EXPECT_FALSE(got->input.has_tree);
  EXPECT_TRUE(got->input.tree.nodes.empty());
  EXPECT_EQ(got->timeout_us, 2000) << "1500 us is sent as 2 ms (rounded up)";
  EXPECT_EQ(got->input.max_decode_len, 17);
  EXPECT_EQ(got->priority, 0);
}

TEST(ConvertRequestTest, TreeRoundTrip) {
  StatusOr<DecodedRequest> got = RoundTrip("parser", 0, SmallTree(4, 9, 11), 0, 0);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->model, "parser");
  EXPECT_EQ(got->version, 0u);
  ASSERT_TRUE(got->input.has_tree);
  EXPECT_TRUE(got->input.tokens.empty());
  const RequestInput want = SmallTree(4, 9, 11);
  ASSERT_EQ(got->input.tree.nodes.size(), want.tree.nodes.size());
  for (size_t i = 0; i < want.tree.nodes.size(); ++i) {
    EXPECT_EQ(got->input.tree.nodes[i].token, want.tree.nodes[i].token) << "node " << i;
    EXPECT_EQ(got->input.tree.nodes[i].children, want.tree.nodes[i].children) << "node " << i;
  }
  EXPECT_EQ(got->timeout_us, 0);
  EXPECT_EQ(got->input.max_decode_len, 0);
}

TEST(ConvertRequestTest, SingleLeafTreeRoundTrip) {
  RequestInput in;
  in.has_tree = true;
  in.tree.nodes.resize(1);
  in.tree.nodes[0].token = 42;
  StatusOr<DecodedRequest> got = RoundTrip("parser", 1, in);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->input.tree.nodes.size(), 1u);
  EXPECT_EQ(got->input.tree.nodes[0].token, 42);
  EXPECT_TRUE(got->input.tree.nodes[0].children.empty());
}

TEST(ConvertRequestTest, TimeoutAndDecodeLengthAreClampedToTheWireRange) {
  StatusOr<DecodedRequest> exact = RoundTrip("m", 1, Tokens({1}), 3000, 0);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->timeout_us, 3000);
  StatusOr<DecodedRequest> tiny = RoundTrip("m", 1, Tokens({1}), 1, 0);
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->timeout_us, 1000) << "a positive deadline never becomes 'none'";
  StatusOr<DecodedRequest> negative = RoundTrip("m", 1, Tokens({1}), -5, -5);
  ASSERT_TRUE(negative.ok());
  EXPECT_EQ(negative->timeout_us, 0);
  EXPECT_EQ(negative->input.max_decode_len, 0);
  StatusOr<DecodedRequest> huge = RoundTrip("m", 1, Tokens({1}), int64_t{1} << 62, int64_t{1} << 40);
  ASSERT_TRUE(huge.ok());
  EXPECT_EQ(huge->timeout_us, int64_t{0xFFFFFFFF} * 1000);
  EXPECT_EQ(huge->input.max_decode_len, int64_t{0xFFFFFFFF});
}

TEST(ConvertRequestTest, PriorityIsRead) {
  StatusOr<DecodedRequest> got = DecodeBuilt([](InferRequest::Builder b) {
    b.setModel("m");
    b.getInput().initTokens(1).set(0, 3);
    b.initOptions().setPriority(-7);
  });
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->priority, -7);
}

// Text read off the wire may hold NUL bytes; encoding must not cut it at the first one (a capnp
// setter given a std::string reads its c_str()).
TEST(ConvertRequestTest, NulBytesInTheNameSurviveARoundTrip) {
  const std::string name("\0a\0b", 4);
  StatusOr<DecodedRequest> got = RoundTrip(name, 1, Tokens({1}));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->model, name);
}

// ---------------------------------------------------------------------------------------------
// Limits: each names the problem

TEST(ConvertRequestTest, TooManyTokens) {
  RequestLimits limits;
  limits.max_tokens = 4;
  EXPECT_TRUE(RoundTrip("m", 1, Tokens({1, 2, 3, 4}), 0, 0, limits).ok()) << "exactly the limit is fine";
  StatusOr<DecodedRequest> got = RoundTrip("m", 1, Tokens({1, 2, 3, 4, 5}), 0, 0, limits);
  ExpectInvalid(got, "5 tokens");
  ExpectInvalid(got, "at most 4");
}

TEST(ConvertRequestTest, TooManyTokensWithDefaultLimits) {
  ExpectInvalid(RoundTrip("m", 1, Tokens(std::vector<int32_t>(4097, 1))), "4097 tokens");
  EXPECT_TRUE(RoundTrip("m", 1, Tokens(std::vector<int32_t>(4096, 1))).ok());
}

TEST(ConvertRequestTest, TooManyTreeNodes) {
  RequestLimits limits;
  limits.max_tokens = 2;  // at most 3 nodes
  StatusOr<DecodedRequest> got = RoundTrip("m", 1, SmallTree(1, 2, 3), 0, 0, limits);
  ExpectInvalid(got, "5 nodes");
  ExpectInvalid(got, "at most 3");
  limits.max_tokens = 3;  // 5 nodes
  EXPECT_TRUE(RoundTrip("m", 1, SmallTree(1, 2, 3), 0, 0, limits).ok());
}

// A limit meant as "none" (--max-tokens 9223372036854775807) must not overflow into refusing every tree.
TEST(ConvertRequestTest, TheLargestTokenLimitStillTakesTrees) {
  RequestLimits limits;
  limits.max_tokens = std::numeric_limits<int64_t>::max();
  StatusOr<DecodedRequest> got = RoundTrip("m", 1, SmallTree(1, 2, 3), 0, 0, limits);
  EXPECT_TRUE(got.ok()) << got.status().ToString();
}

TEST(ConvertRequestTest, EmptyTree) {
  ExpectInvalid(DecodeBuilt([](InferRequest::Builder b) {
                  b.setModel("m");
                  b.getInput().initTree().initNodes(0);
                }),
                "no nodes");
  ExpectInvalid(DecodeBuilt([](InferRequest::Builder b) {
                  b.setModel("m");
                  b.getInput().initTree();  // no node list at all
                }),
                "no nodes");
}

TEST(ConvertRequestTest, NodeWithOneChild) {
  for (bool left_only : {true, false}) {
    StatusOr<DecodedRequest> got = DecodeBuilt([&](InferRequest::Builder b) {
      b.setModel("m");
      auto nodes = b.getInput().initTree().initNodes(2);
      nodes[0].setToken(5);
      nodes[1].setToken(-1);
      if (left_only) nodes[1].setLeft(0);
      else nodes[1].setRight(0);
    });
    ExpectInvalid(got, "tree node 1 has one child");
  }
}

TEST(ConvertRequestTest, NoTokensIsNoInput) {
  ExpectInvalid(DecodeBuilt([](InferRequest::Builder b) { b.setModel("m"); }), "no input");
  ExpectInvalid(RoundTrip("m", 1, Tokens({})), "no input");
}

TEST(ConvertRequestTest, MissingOrEmptyModelName) {
  ExpectInvalid(RoundTrip("", 1, Tokens({1})), "names no model");
  ExpectInvalid(DecodeBuilt([](InferRequest::Builder b) { b.getInput().initTokens(1).set(0, 1); }),
                "names no model");
}

TEST(ConvertRequestTest, OverlongModelName) {
  ExpectInvalid(RoundTrip(std::string(257, 'x'), 1, Tokens({1})), "longer than 256 bytes");
  StatusOr<DecodedRequest> at_limit = RoundTrip(std::string(256, 'x'), 1, Tokens({1}));
  ASSERT_TRUE(at_limit.ok()) << at_limit.status().ToString();
  EXPECT_EQ(at_limit->model, std::string(256, 'x'));
  RequestLimits limits;
  limits.max_model_name_bytes = 3;
  ExpectInvalid(RoundTrip("abcd", 1, Tokens({1}), 0, 0, limits), "longer than 3 bytes");
  EXPECT_TRUE(RoundTrip("abc", 1, Tokens({1}), 0, 0, limits).ok());
}

// ---------------------------------------------------------------------------------------------
// Hostile messages

TEST(ConvertRequestTest, TraversalLimitIsInvalidArgumentNotAnException) {
  capnp::MallocMessageBuilder message;
  EncodeInferRequest("sentiment", 1, Tokens(std::vector<int32_t>(4000, 3)), 0, 0,
                     message.initRoot<InferRequest>());
  kj::Array<capnp::word> words = Serialize(message);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 64;  // the token list alone is 2000 words
  StatusOr<DecodedRequest> got = DecodedRequest{};
  ASSERT_NO_THROW(got = DecodeWords(words, {}, options));
  ExpectInvalid(got, "unreadable request");
  // The same bytes with the default limit decode.
  StatusOr<DecodedRequest> full = DecodeWords(words);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ(full->input.tokens.size(), 4000u);
}

// Every traversal limit from 0 up: each read of the message may be the one that hits it, so this
// covers each field's read. The answer is the full decode or INVALID_ARGUMENT, never a throw; and
// since every part is read once, the message's own size in words is limit enough.
TEST(ConvertRequestTest, EveryTraversalLimitIsHandled) {
  struct Case {
    std::string model;
    RequestInput input;
  };
  const std::vector<Case> cases = {
      {std::string(40, 'n'), Tokens({1, 2, 3, 4, 5, 6, 7, 8, 9})},
      {std::string(300, 'n'), Tokens({1, 2, 3})},  // over-long name: read again for the message
      {std::string(1, 'n'), SmallTree(1, 2, 3)},
      {std::string(200, 'n'), SmallTree(1, 2, 3)},
  };
  for (const Case& c : cases) {
    capnp::MallocMessageBuilder message;
    EncodeInferRequest(c.model, 2, c.input, 5000, 3, message.initRoot<InferRequest>());
    kj::Array<capnp::word> words = Serialize(message);
    const StatusOr<DecodedRequest> full = DecodeWords(words);
    bool saw_full = false;
    int refused_by_capnp = 0, decode_errors = 0;
    for (uint64_t limit = 0; limit <= 3 * words.size(); ++limit) {
      capnp::ReaderOptions options;
      options.traversalLimitInWords = limit;
      StatusOr<DecodedRequest> got = DecodedRequest{};
      bool refused = false;
      ASSERT_NO_THROW(got = DecodeWords(words, {}, options, &refused))
          << "name of " << c.model.size() << " bytes, limit " << limit;
      if (limit == words.size()) {
        // Each part of the message is read once: a limit of its own size is enough.
        EXPECT_EQ(got.ok(), full.ok())
            << "name of " << c.model.size() << " bytes: " << got.status().ToString();
      }
      if (refused) {
        ++refused_by_capnp;
      } else if (got.ok()) {
        ASSERT_TRUE(full.ok());
        EXPECT_EQ(got->model, full->model);
        EXPECT_EQ(got->input.tokens, full->input.tokens);
        EXPECT_EQ(got->input.tree.nodes.size(), full->input.tree.nodes.size());
        saw_full = true;
      } else {
        EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << got.status().ToString();
        ++decode_errors;
      }
    }
    EXPECT_GT(refused_by_capnp, 0) << "a limit of 0 words cannot even read the root";
    EXPECT_GT(decode_errors, 0) << "no limit stopped DecodeInferRequest half way";
    EXPECT_EQ(saw_full, full.ok()) << "the largest limit must give the full answer";
  }
}

// Every single-byte corruption of a valid request (several values per byte): decoding and the
// model's validation return a Status; nothing throws, crashes or reads out of bounds.
TEST(ConvertRequestTest, CorruptedBytesNeverThrow) {
  auto lstm = testutil::RandomModel(Spec(CoreKind::kLstm), 1);
  auto tree = testutil::RandomModel(Spec(CoreKind::kTreeLstm), 2);
  for (const RequestInput& input : {Tokens({1, 2, 3}), SmallTree(4, 5, 6)}) {
    capnp::MallocMessageBuilder message;
    EncodeInferRequest("m", 1, input, 1000, 0, message.initRoot<InferRequest>());
    kj::Array<capnp::word> words = Serialize(message);
    kj::ArrayPtr<kj::byte> bytes = words.asBytes();
    int decoded = 0, rejected = 0;
    for (size_t i = 0; i < bytes.size(); ++i) {
      const kj::byte saved = bytes[i];
      for (int v : {0x00, 0x01, 0x7f, 0x80, 0xff, saved ^ 0x04, saved ^ 0x40}) {
        bytes[i] = static_cast<kj::byte>(v);
        StatusOr<DecodedRequest> got = DecodedRequest{};
        bool refused = false;
        ASSERT_NO_THROW(got = DecodeWords(words, {}, {}, &refused)) << "byte " << i << " = " << v;
        if (!got.ok()) {
          if (!refused) {
            EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << got.status().ToString();
            ++rejected;
          }
          continue;
        }
        ++decoded;
        auto graph = BuildRequestGraph(got->input.has_tree ? tree : lstm, got->input);
        if (!graph.ok()) {
          EXPECT_EQ(graph.status().code(), StatusCode::kInvalidArgument) << graph.status().ToString();
        }
      }
      bytes[i] = saved;
    }
    EXPECT_GT(decoded, 0);
    EXPECT_GT(rejected, 0);
  }
}

// What a decoded request carries is what the core validates: the first front door's output goes
// straight into BuildRequestGraph.
TEST(ConvertRequestTest, DecodedRequestsBuildGraphs) {
  auto lstm = testutil::RandomModel(Spec(CoreKind::kLstm), 1);
  auto tree = testutil::RandomModel(Spec(CoreKind::kTreeLstm), 2);
  StatusOr<DecodedRequest> tokens = RoundTrip("m", 1, Tokens({1, 2, 49}));
  ASSERT_TRUE(tokens.ok());
  auto g = BuildRequestGraph(lstm, tokens->input);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->input_length(), 3);
  StatusOr<DecodedRequest> t = RoundTrip("m", 1, SmallTree(1, 2, 3));
  ASSERT_TRUE(t.ok());
  auto tg = BuildRequestGraph(tree, t->input);
  ASSERT_TRUE(tg.ok()) << tg.status().ToString();
  EXPECT_EQ((*tg)->input_length(), 3);
  // Model-dependent checks are the core's: a token outside the vocabulary decodes, then fails.
  StatusOr<DecodedRequest> oov = RoundTrip("m", 1, Tokens({1, 50}));
  ASSERT_TRUE(oov.ok());
  auto bad = BuildRequestGraph(lstm, oov->input);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// FindModel

TEST(ConvertFindModelTest, FindsByNameAndVersion) {
  const std::vector<ModelSpec> served = {Spec(CoreKind::kLstm, "alpha", 1),
                                         Spec(CoreKind::kTreeLstm, "beta", 7)};
  StatusOr<ModelSpec> any = FindModel(served, "beta", 0);
  ASSERT_TRUE(any.ok()) << any.status().ToString();
  EXPECT_EQ(any->name, "beta");
  EXPECT_EQ(any->version, 7);
  EXPECT_EQ(any->kind, CoreKind::kTreeLstm);
  StatusOr<ModelSpec> exact = FindModel(served, "alpha", 1);
  ASSERT_TRUE(exact.ok()) << exact.status().ToString();
  EXPECT_EQ(exact->name, "alpha");
}

TEST(ConvertFindModelTest, UnknownModelIsNotFound) {
  const std::vector<ModelSpec> served = {Spec(CoreKind::kLstm, "alpha", 1),
                                         Spec(CoreKind::kLstm, "beta", 2)};
  StatusOr<ModelSpec> got = FindModel(served, "gamma", 0);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find("unknown model 'gamma'"), std::string::npos)
      << got.status().message();
  EXPECT_NE(got.status().message().find("alpha, beta"), std::string::npos) << got.status().message();
  StatusOr<ModelSpec> none = FindModel({}, "alpha", 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("none"), std::string::npos) << none.status().message();
}

TEST(ConvertFindModelTest, WrongVersionIsNotFound) {
  const std::vector<ModelSpec> served = {Spec(CoreKind::kLstm, "alpha", 2)};
  for (uint32_t version : {1u, 3u, 0xFFFFFFFFu}) {
    StatusOr<ModelSpec> got = FindModel(served, "alpha", version);
    ASSERT_FALSE(got.ok()) << "version " << version;
    EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
    EXPECT_NE(got.status().message().find("version " + std::to_string(version)), std::string::npos)
        << got.status().message();
  }
}

// A router serves every version its nodes have: a version picks its spec, 0 the first listed.
TEST(ConvertFindModelTest, SeveralVersionsOfOneName) {
  const std::vector<ModelSpec> served = {Spec(CoreKind::kLstm, "alpha", 1), Spec(CoreKind::kLstm, "beta", 1),
                                         Spec(CoreKind::kLstm, "alpha", 2)};
  StatusOr<ModelSpec> second = FindModel(served, "alpha", 2);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->version, 2);
  StatusOr<ModelSpec> any = FindModel(served, "alpha", 0);
  ASSERT_TRUE(any.ok()) << any.status().ToString();
  EXPECT_EQ(any->version, 1);
  StatusOr<ModelSpec> missing = FindModel(served, "alpha", 3);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("versions 1, 2"), std::string::npos) << missing.status().message();
  StatusOr<ModelSpec> unknown = FindModel(served, "gamma", 0);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("(served: alpha, beta)"), std::string::npos)
      << unknown.status().message();
}

// The name is the client's bytes; the reply's message is capnp Text, which strict UTF-8 decoders
// (other languages' clients) refuse when it is not UTF-8.
TEST(ConvertFindModelTest, AnUnknownNameIsEchoedAsPrintableAscii) {
  const std::vector<ModelSpec> served = {Spec(CoreKind::kLstm, "alpha", 1)};
  StatusOr<ModelSpec> got = FindModel(served, std::string("\xff\xfe\0x y\n~\x7f", 9), 0);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  const std::string& message = got.status().message();
  EXPECT_NE(message.find("'\\xff\\xfe\\x00x y\\x0a~\\x7f'"), std::string::npos) << message;
  for (unsigned char ch : message) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f) << "byte " << int{ch} << " in: " << message;
}

// ---------------------------------------------------------------------------------------------
// Error codes

TEST(ConvertErrorCodeTest, EveryStatusCodeMapsToADistinctErrorCodeAndBack) {
  std::set<ErrorCode> seen;
  for (StatusCode code : kErrorCodes) {
    const ErrorCode wire = ToErrorCode(code);
    EXPECT_NE(wire, ErrorCode::UNKNOWN) << StatusCodeName(code);
    EXPECT_TRUE(seen.insert(wire).second) << StatusCodeName(code) << " shares its ErrorCode";
    EXPECT_EQ(FromErrorCode(wire), code) << StatusCodeName(code);
    EXPECT_STREQ(ErrorCodeName(wire), StatusCodeName(code));
  }
  EXPECT_EQ(seen.size(), kErrorCodes.size());
  // OK is never sent as an error; unknown (or a code from a newer server) reads as internal.
  EXPECT_EQ(ToErrorCode(StatusCode::kOk), ErrorCode::UNKNOWN);
  EXPECT_EQ(FromErrorCode(ErrorCode::UNKNOWN), StatusCode::kInternal);
  EXPECT_EQ(FromErrorCode(static_cast<ErrorCode>(200)), StatusCode::kInternal);
}

TEST(ConvertErrorCodeTest, SchemaEnumMatchesTheDesignNumbers) {
  // The wire numbers are the protocol: renumbering breaks every client.
  EXPECT_EQ(static_cast<int>(ErrorCode::INVALID_ARGUMENT), 1);
  EXPECT_EQ(static_cast<int>(ErrorCode::NOT_FOUND), 2);
  EXPECT_EQ(static_cast<int>(ErrorCode::RESOURCE_EXHAUSTED), 3);
  EXPECT_EQ(static_cast<int>(ErrorCode::DEADLINE_EXCEEDED), 4);
  EXPECT_EQ(static_cast<int>(ErrorCode::CANCELLED), 5);
  EXPECT_EQ(static_cast<int>(ErrorCode::UNAVAILABLE), 6);
  EXPECT_EQ(static_cast<int>(ErrorCode::INTERNAL), 7);
  EXPECT_EQ(PROTOCOL_VERSION, 1u);
}

// ---------------------------------------------------------------------------------------------
// InferReply round trips

StatusOr<ReplyValue> ReplyRoundTrip(const StatusOr<RequestResult>& result, const ModelSpec& spec,
                                    uint64_t micros) {
  capnp::MallocMessageBuilder message;
  EncodeReply(result, spec, micros, message.initRoot<InferReply>());
  kj::Array<capnp::word> words = Serialize(message);
  capnp::FlatArrayMessageReader reader(words);
  return DecodeReply(reader.getRoot<InferReply>());
}

TEST(ConvertReplyTest, ClassifierResultRoundTrip) {
  RequestResult r;
  r.logits = {0.25f, -1.5f, 3.0f};
  r.label = 2;
  StatusOr<ReplyValue> got = ReplyRoundTrip(r, Spec(CoreKind::kLstm, "sentiment", 4), 1234);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->model, "sentiment");
  EXPECT_EQ(got->version, 4u);
  EXPECT_EQ(got->server_micros, 1234u);
  EXPECT_EQ(got->result.label, 2);
  EXPECT_EQ(got->result.logits, r.logits);
  EXPECT_TRUE(got->result.tokens.empty());
  EXPECT_TRUE(got->result.scores.empty());
}

TEST(ConvertReplyTest, Seq2SeqResultRoundTrip) {
  RequestResult r;
  r.tokens = {5, 9, 2};
  r.scores = {1.0f, 0.5f, -0.125f};
  StatusOr<ReplyValue> got = ReplyRoundTrip(r, Spec(CoreKind::kSeq2Seq, "translate", 1), 99);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->model, "translate");
  EXPECT_EQ(got->result.label, -1);
  EXPECT_TRUE(got->result.logits.empty());
  EXPECT_EQ(got->result.tokens, r.tokens);
  EXPECT_EQ(got->result.scores, r.scores);
  EXPECT_EQ(got->server_micros, 99u);
}

TEST(ConvertReplyTest, EveryErrorCodeRoundTrips) {
  for (StatusCode code : kErrorCodes) {
    const std::string message = std::string("because ") + StatusCodeName(code);
    StatusOr<ReplyValue> got = ReplyRoundTrip(Status(code, message), Spec(CoreKind::kLstm), 1);
    ASSERT_FALSE(got.ok()) << StatusCodeName(code);
    EXPECT_EQ(got.status().code(), code);
    EXPECT_EQ(got.status().message(), message);
  }
}

TEST(ConvertReplyTest, NulBytesSurviveARoundTrip) {
  const std::string message("unknown model '\0x' (served: a)", 30);
  StatusOr<ReplyValue> error = ReplyRoundTrip(NotFound(message), Spec(CoreKind::kLstm), 1);
  ASSERT_FALSE(error.ok());
  EXPECT_EQ(error.status().message(), message);

  RequestResult r;
  r.label = 0;
  r.logits = {1.0f};
  StatusOr<ReplyValue> result = ReplyRoundTrip(r, Spec(CoreKind::kLstm, std::string("m\0m", 3)), 1);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->model, std::string("m\0m", 3));
}

TEST(ConvertReplyTest, OkStatusAsAnErrorIsInternal) {
  capnp::MallocMessageBuilder message;
  EncodeError(OkStatus(), message.initRoot<Error>());
  Error::Reader e = message.getRoot<Error>().asReader();
  EXPECT_EQ(e.getCode(), ErrorCode::INTERNAL);
  EXPECT_GT(e.getMessage().size(), 0u);
}

TEST(ConvertReplyTest, UnknownErrorCodeFromANewerServerIsInternal) {
  capnp::MallocMessageBuilder message;
  auto error = message.initRoot<InferReply>().initError();
  error.setCode(static_cast<ErrorCode>(42));
  error.setMessage("from the future");
  kj::Array<capnp::word> words = Serialize(message);
  capnp::FlatArrayMessageReader reader(words);
  StatusOr<ReplyValue> got = DecodeReply(reader.getRoot<InferReply>());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInternal);
  EXPECT_EQ(got.status().message(), "from the future");
}

TEST(ConvertReplyTest, TraversalLimitIsAnErrorNotAnException) {
  RequestResult r;
  r.logits.assign(2000, 1.0f);
  capnp::MallocMessageBuilder message;
  EncodeReply(r, Spec(CoreKind::kLstm), 1, message.initRoot<InferReply>());
  kj::Array<capnp::word> words = Serialize(message);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 32;
  capnp::FlatArrayMessageReader reader(words, options);
  StatusOr<ReplyValue> got = ReplyValue{};
  ASSERT_NO_THROW(got = DecodeReply(reader.getRoot<InferReply>()));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("unreadable reply"), std::string::npos) << got.status().message();
}

// ---------------------------------------------------------------------------------------------
// ModelInfo

TEST(ConvertModelInfoTest, AllKindsRoundTrip) {
  for (CoreKind kind : {CoreKind::kLstm, CoreKind::kSeq2Seq, CoreKind::kTreeLstm}) {
    ModelSpec spec = Spec(kind, std::string("model-") + ModelKindName(kind), 3);
    spec.vocab_size = 32000;
    spec.hidden = 512;
    spec.embed_dim = 512;
    spec.layers = 2;
    spec.eos_id = 5;
    spec.max_decode_len = 77;
    spec.max_input_tokens = 900;
    spec.dtype = kind == CoreKind::kSeq2Seq ? "BF16" : "F16";
    if (kind == CoreKind::kSeq2Seq) spec.target_vocab_size = 1234;

    capnp::MallocMessageBuilder message;
    EncodeModelInfo(spec, message.initRoot<ModelInfo>());
    kj::Array<capnp::word> words = Serialize(message);
    capnp::FlatArrayMessageReader reader(words);
    StatusOr<ModelSpec> got = DecodeModelInfo(reader.getRoot<ModelInfo>());
    ASSERT_TRUE(got.ok()) << ModelKindName(kind) << ": " << got.status().ToString();
    EXPECT_EQ(got->name, spec.name);
    EXPECT_EQ(got->version, 3);
    EXPECT_EQ(got->kind, kind);
    EXPECT_EQ(got->vocab_size, 32000);
    EXPECT_EQ(got->hidden, 512);
    EXPECT_EQ(got->layers, 2);
    EXPECT_EQ(got->classes, spec.classes);
    EXPECT_EQ(got->target_vocab_size, spec.target_vocab_size);
    EXPECT_EQ(got->eos_id, 5);
    EXPECT_EQ(got->max_decode_len, 77);
    EXPECT_EQ(got->max_input_tokens, 900);
    EXPECT_EQ(got->dtype, spec.dtype);
  }
}

TEST(ConvertModelInfoTest, NulBytesInTheNameSurviveARoundTrip) {
  ModelSpec spec = Spec(CoreKind::kLstm, std::string("a\0b", 3));
  capnp::MallocMessageBuilder message;
  EncodeModelInfo(spec, message.initRoot<ModelInfo>());
  kj::Array<capnp::word> words = Serialize(message);
  capnp::FlatArrayMessageReader reader(words);
  StatusOr<ModelSpec> got = DecodeModelInfo(reader.getRoot<ModelInfo>());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->name, spec.name);
}

TEST(ConvertModelInfoTest, UnknownKindIsInvalidArgument) {
  capnp::MallocMessageBuilder message;
  auto info = message.initRoot<ModelInfo>();
  info.setName("future");
  info.setKind(static_cast<rpc::ModelKind>(9));
  kj::Array<capnp::word> words = Serialize(message);
  capnp::FlatArrayMessageReader reader(words);
  StatusOr<ModelSpec> got = DecodeModelInfo(reader.getRoot<ModelInfo>());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(got.status().message().find("future"), std::string::npos) << got.status().message();
}

TEST(ConvertModelInfoTest, ServingStateNames) {
  EXPECT_STREQ(ServingStateName(ServingState::SERVING), "serving");
  EXPECT_STREQ(ServingStateName(ServingState::NOT_READY), "not_ready");
  EXPECT_STREQ(ServingStateName(ServingState::DRAINING), "draining");
  EXPECT_STREQ(ServingStateName(static_cast<ServingState>(9)), "unknown");
}

}  // namespace
}  // namespace cellserve::rpc
