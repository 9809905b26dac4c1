// Writes the seed corpus of fuzz_rpc_request into the directory given as argv[1] (created if need
// be): valid serialized InferRequests (tokens, trees, options), InferReplies (results, errors) and
// ModelInfos, made with the same Encode* functions the client and the server use, so the seeds
// follow the schema.
// CTest runs it before the fuzzer (a fixture); nothing binary is committed.
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include "schema/convert.h"

namespace {

using cellserve::RequestInput;
using cellserve::TreeNode;
namespace rpc = cellserve::rpc;

bool Write(const std::string& dir, const std::string& name, capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    return false;
  }
  const bool ok = std::fwrite(bytes.begin(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

bool Request(const std::string& dir, const std::string& name, const std::string& model, uint32_t version,
             const RequestInput& input, int64_t timeout_us, int64_t max_decode_len) {
  capnp::MallocMessageBuilder message;
  rpc::EncodeInferRequest(model, version, input, timeout_us, max_decode_len,
                          message.initRoot<rpc::InferRequest>());
  return Write(dir, name, message);
}

RequestInput Tokens(std::vector<int32_t> tokens) {
  RequestInput in;
  in.tokens = std::move(tokens);
  return in;
}

TreeNode Leaf(int32_t token) {
  TreeNode n;
  n.token = token;
  return n;
}

TreeNode Inner(int32_t left, int32_t right) {
  TreeNode n;
  n.children = {left, right};
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    std::fprintf(stderr, "%s: cannot create %s: %s\n", argv[0], dir.c_str(), error.message().c_str());
    return 1;
  }
  bool ok = true;

  // Requests: the models of fuzz_rpc_request are "lstm", "seq2seq" and "tree" (vocabulary 50).
  ok &= Request(dir, "request_lstm.bin", "lstm", 0, Tokens({1, 2, 3, 4, 5}), 0, 0);
  ok &= Request(dir, "request_seq2seq.bin", "seq2seq", 1, Tokens({7, 8, 9}), 250000, 5);
  ok &= Request(dir, "request_one_token.bin", "lstm", 1, Tokens({49}), 1000, 0);
  RequestInput tree;
  tree.has_tree = true;
  tree.tree.nodes = {Leaf(1), Leaf(2), Inner(0, 1), Leaf(3), Inner(2, 3)};
  ok &= Request(dir, "request_tree.bin", "tree", 0, tree, 0, 0);
  RequestInput leaf;
  leaf.has_tree = true;
  leaf.tree.nodes = {Leaf(4)};
  ok &= Request(dir, "request_leaf.bin", "tree", 2, leaf, 5000, 0);

  // Replies.
  cellserve::ModelSpec spec;
  spec.name = "lstm";
  {
    cellserve::RequestResult r;
    r.logits = {0.5f, -1.0f, 2.0f};
    r.label = 2;
    capnp::MallocMessageBuilder message;
    rpc::EncodeReply(r, spec, 1234, message.initRoot<rpc::InferReply>());
    ok &= Write(dir, "reply_result.bin", message);
  }
  {
    cellserve::RequestResult r;
    r.tokens = {5, 6, 2};
    r.scores = {1.0f, 0.25f, 3.0f};
    spec.name = "seq2seq";
    capnp::MallocMessageBuilder message;
    rpc::EncodeReply(r, spec, 99, message.initRoot<rpc::InferReply>());
    ok &= Write(dir, "reply_seq2seq.bin", message);
  }
  {
    capnp::MallocMessageBuilder message;
    rpc::EncodeReply(cellserve::NotFound("unknown model 'x' (served: lstm)"), spec, 0,
                     message.initRoot<rpc::InferReply>());
    ok &= Write(dir, "reply_error.bin", message);
  }

  // A model info.
  {
    cellserve::ModelSpec info;
    info.name = "seq2seq";
    info.kind = cellserve::ModelKind::kSeq2Seq;
    info.vocab_size = 50;
    info.hidden = 4;
    info.target_vocab_size = 30;
    capnp::MallocMessageBuilder message;
    rpc::EncodeModelInfo(info, message.initRoot<rpc::ModelInfo>());
    ok &= Write(dir, "model_info.bin", message);
  }

  if (!ok) {
    std::fprintf(stderr, "%s: could not write the seeds into %s\n", argv[0], dir.c_str());
    return 1;
  }
  return 0;
}
