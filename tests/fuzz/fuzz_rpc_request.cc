// libFuzzer target for the RPC front door (schema/convert.*): the bytes as a serialized capnp
// message, read as the server reads a call's InferRequest (DecodeInferRequest, then the core's own
// validation, BuildRequestGraph, against small lstm, seq2seq and treelstm models) and as a client
// reads an InferReply and a ModelInfo. Each is read twice: with modest limits, and with a
// traversal limit so tight that any read may be the one that hits it. capnp may refuse to open a
// message (a bad segment table, the root over the limit), as the RPC layer would; past that,
// nothing may throw, crash or trip a sanitizer, and every failure is a Status of the right code.
// Whatever decodes must encode and decode back to the same value.
//
// Seeds: make_rpc_request_seeds (built alongside) writes valid requests, replies and model infos.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include "runtime/cell_graph.h"
#include "runtime/model.h"
#include "schema/convert.h"
#include "tests/unit/common/random_model.h"

// A broken promise: says which, then stops (libFuzzer saves the input).
#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "fuzz_rpc_request.cc:%d: check failed: %s\n", __LINE__, #cond); \
      __builtin_trap();                                                                    \
    }                                                                                      \
  } while (0)

namespace {

using cellserve::ModelSpec;
using cellserve::StatusCode;
using cellserve::StatusOr;
namespace rpc = cellserve::rpc;

// Small enough that the fuzzer reaches every limit.
constexpr int64_t kMaxTokens = 64;
constexpr int64_t kMaxNameBytes = 32;

ModelSpec SmallSpec(cellserve::ModelKind kind, const char* name) {
  ModelSpec s;
  s.name = name;
  s.kind = kind;
  s.vocab_size = 50;
  s.embed_dim = 4;
  s.hidden = 4;
  s.layers = 1;
  s.classes = kind == cellserve::ModelKind::kSeq2Seq ? 0 : 3;
  s.target_vocab_size = kind == cellserve::ModelKind::kSeq2Seq ? 30 : 0;
  s.max_decode_len = 8;
  s.max_input_tokens = 48;  // below kMaxTokens: the model's own limit is checked too
  return s;
}

// Built once: random weights are the slow part, and the graphs only read the specs.
const std::vector<std::shared_ptr<const cellserve::Model>>& Models() {
  static const auto* models = new std::vector<std::shared_ptr<const cellserve::Model>>{
      cellserve::testutil::RandomModel(SmallSpec(cellserve::ModelKind::kLstm, "lstm"), 1),
      cellserve::testutil::RandomModel(SmallSpec(cellserve::ModelKind::kSeq2Seq, "seq2seq"), 2),
      cellserve::testutil::RandomModel(SmallSpec(cellserve::ModelKind::kTreeLstm, "tree"), 3),
  };
  return *models;
}

// The root of `words` as T, or nullptr-equivalent (false) if capnp refuses to open it. The reader
// must outlive the root.
template <typename T>
bool OpenRoot(kj::ArrayPtr<const capnp::word> words, const capnp::ReaderOptions& options,
              std::unique_ptr<capnp::FlatArrayMessageReader>* reader, typename T::Reader* root) {
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&] {
    *reader = std::make_unique<capnp::FlatArrayMessageReader>(words, options);
    *root = (*reader)->getRoot<T>();
  });
  return error == nullptr;
}

bool SameRequest(const rpc::DecodedRequest& a, const rpc::DecodedRequest& b) {
  if (a.model != b.model || a.version != b.version || a.timeout_us != b.timeout_us ||
      a.input.max_decode_len != b.input.max_decode_len || a.input.has_tree != b.input.has_tree ||
      a.input.tokens != b.input.tokens || a.input.tree.nodes.size() != b.input.tree.nodes.size()) {
    return false;
  }
  for (size_t i = 0; i < a.input.tree.nodes.size(); ++i) {
    if (a.input.tree.nodes[i].token != b.input.tree.nodes[i].token ||
        a.input.tree.nodes[i].children != b.input.tree.nodes[i].children) {
      return false;
    }
  }
  return true;
}

void CheckDecodedRequest(const rpc::DecodedRequest& req) {
  // DecodeInferRequest's promises: a name within the limit, input within the limit, tree nodes
  // with no children or two.
  FUZZ_CHECK(!req.model.empty() && static_cast<int64_t>(req.model.size()) <= kMaxNameBytes);
  if (req.input.has_tree) {
    FUZZ_CHECK(req.input.tokens.empty() && !req.input.tree.nodes.empty());
    FUZZ_CHECK(static_cast<int64_t>(req.input.tree.nodes.size()) <= 2 * kMaxTokens - 1);
    for (const cellserve::TreeNode& n : req.input.tree.nodes) {
      FUZZ_CHECK(n.children.empty() || n.children.size() == 2);
    }
  } else {
    FUZZ_CHECK(!req.input.tokens.empty() && static_cast<int64_t>(req.input.tokens.size()) <= kMaxTokens);
  }
  FUZZ_CHECK(req.timeout_us >= 0 && req.input.max_decode_len >= 0);

  // The core's validation, for every kind of model: a graph, or INVALID_ARGUMENT.
  for (const auto& model : Models()) {
    auto graph = cellserve::BuildRequestGraph(model, req.input);
    if (!graph.ok()) {
      FUZZ_CHECK(graph.status().code() == StatusCode::kInvalidArgument);
      continue;
    }
    const cellserve::RequestGraph& g = **graph;
    FUZZ_CHECK(!g.cells().empty());
    FUZZ_CHECK(g.input_length() >= 1 && g.input_length() <= model->spec().max_input_tokens);
    for (const cellserve::Cell& c : g.cells()) FUZZ_CHECK(c.token < model->spec().vocab_size);
  }

  // What the server accepted, the client library can send again unchanged (priority is not part
  // of the client's encoding).
  capnp::MallocMessageBuilder message;
  rpc::EncodeInferRequest(req.model, req.version, req.input, req.timeout_us, req.input.max_decode_len,
                          message.initRoot<rpc::InferRequest>());
  rpc::RequestLimits limits;
  limits.max_tokens = kMaxTokens;
  limits.max_model_name_bytes = kMaxNameBytes;
  StatusOr<rpc::DecodedRequest> again =
      rpc::DecodeInferRequest(message.getRoot<rpc::InferRequest>().asReader(), limits);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(SameRequest(req, *again));
}

void FuzzRequest(kj::ArrayPtr<const capnp::word> words, const capnp::ReaderOptions& options, bool check) {
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  rpc::InferRequest::Reader root;
  if (!OpenRoot<rpc::InferRequest>(words, options, &reader, &root)) return;
  rpc::RequestLimits limits;
  limits.max_tokens = kMaxTokens;
  limits.max_model_name_bytes = kMaxNameBytes;
  // Not caught: an exception escaping DecodeInferRequest is a finding.
  StatusOr<rpc::DecodedRequest> decoded = rpc::DecodeInferRequest(root, limits);
  if (!decoded.ok()) {
    FUZZ_CHECK(decoded.status().code() == StatusCode::kInvalidArgument);
    FUZZ_CHECK(!decoded.status().message().empty());
    return;
  }
  if (check) CheckDecodedRequest(*decoded);
}

void FuzzReply(kj::ArrayPtr<const capnp::word> words, const capnp::ReaderOptions& options, bool check) {
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  rpc::InferReply::Reader root;
  if (!OpenRoot<rpc::InferReply>(words, options, &reader, &root)) return;
  StatusOr<rpc::ReplyValue> reply = rpc::DecodeReply(root);
  if (!reply.ok() || !check) return;  // an error reply may carry any code
  // Encode the result again (as the server would) and read it back.
  ModelSpec spec;
  spec.name = reply->model;
  spec.version = reply->version;
  capnp::MallocMessageBuilder message;
  rpc::EncodeReply(reply->result, spec, reply->server_micros, message.initRoot<rpc::InferReply>());
  StatusOr<rpc::ReplyValue> again = rpc::DecodeReply(message.getRoot<rpc::InferReply>().asReader());
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->model == reply->model && again->version == reply->version);
  FUZZ_CHECK(again->server_micros == reply->server_micros && again->result.label == reply->result.label);
  FUZZ_CHECK(again->result.tokens == reply->result.tokens);
  FUZZ_CHECK(again->result.logits.size() == reply->result.logits.size());
  FUZZ_CHECK(again->result.scores.size() == reply->result.scores.size());
}

void FuzzModelInfo(kj::ArrayPtr<const capnp::word> words, const capnp::ReaderOptions& options) {
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  rpc::ModelInfo::Reader root;
  if (!OpenRoot<rpc::ModelInfo>(words, options, &reader, &root)) return;
  StatusOr<ModelSpec> spec = rpc::DecodeModelInfo(root);
  FUZZ_CHECK(spec.ok() || spec.status().code() == StatusCode::kInvalidArgument);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Models();  // build the models before the first input, outside the per-input timing
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A word-aligned copy (capnp reads words in place), the tail padded with zeros.
  const size_t word_count = (size + sizeof(capnp::word) - 1) / sizeof(capnp::word);
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(word_count);
  if (words.size() > 0) {
    std::memset(words.begin(), 0, words.asBytes().size());
    std::memcpy(words.begin(), data, size);
  }

  // Modest limits, as a server would set them (the defaults are 64 Mi words and 64 levels).
  capnp::ReaderOptions modest;
  modest.traversalLimitInWords = 1 << 14;
  modest.nestingLimit = 16;
  FuzzRequest(words, modest, true);
  FuzzReply(words, modest, true);
  FuzzModelInfo(words, modest);

  // A tight traversal limit chosen by the input: the read that exceeds it may be any of them.
  capnp::ReaderOptions tight;
  tight.traversalLimitInWords = 1 + (size > 0 ? data[size - 1] % 64 : 0);
  tight.nestingLimit = 16;
  FuzzRequest(words, tight, false);
  FuzzReply(words, tight, false);
  FuzzModelInfo(words, tight);
  return 0;
}
