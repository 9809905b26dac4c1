#include "schema/convert.h"

#include <algorithm>
#include <limits>

#include <kj/exception.h>

namespace cellserve::rpc {

namespace {

// Text with every byte of `s`. Passing a std::string to a capnp setter goes through its c_str()
// and stops at the first NUL byte; a name or message read off the wire may hold one.
capnp::Text::Reader AsText(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }
// The reverse: converting a Text::Reader to std::string implicitly also stops at the first NUL.
std::string FromText(capnp::Text::Reader t) { return std::string(t.begin(), t.size()); }

uint32_t ClampU32(int64_t v) {
  return static_cast<uint32_t>(std::clamp<int64_t>(v, 0, std::numeric_limits<uint32_t>::max()));
}

StatusOr<TreeInput> DecodeTree(Tree::Reader tree, const RequestLimits& limits) {
  auto nodes = tree.getNodes();
  // 2 * max_tokens - 1, without overflowing for a limit meant as "none" (a list holds < 2^29 anyway).
  const int64_t max_nodes = limits.max_tokens > (int64_t{1} << 40) ? (int64_t{1} << 41) : 2 * limits.max_tokens - 1;
  if (nodes.size() == 0) return InvalidArgument("the tree has no nodes");
  if (static_cast<int64_t>(nodes.size()) > max_nodes)
    return InvalidArgument("the tree has " + std::to_string(nodes.size()) + " nodes; this server takes at most " +
                           std::to_string(max_nodes) + " (" + std::to_string(limits.max_tokens) + " leaves)");
  TreeInput out;
  out.nodes.resize(nodes.size());
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    auto n = nodes[i];
    const int32_t left = n.getLeft(), right = n.getRight();
    if ((left < 0) != (right < 0))
      return InvalidArgument("tree node " + std::to_string(i) + " has one child; internal nodes need two");
    TreeNode& node = out.nodes[i];
    node.token = n.getToken();
    if (left >= 0) node.children = {left, right};
  }
  return out;
}

}  // namespace

StatusOr<DecodedRequest> DecodeInferRequest(InferRequest::Reader request, const RequestLimits& limits) {
  DecodedRequest out;
  Status status;
  // One guarded block for every read: each read of a pointer field (the name too) counts against
  // the message's traversal limit, so any of them may be the one that throws.
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&] {
    auto name = request.getModel();
    if (name.size() == 0) {
      status = InvalidArgument("the request names no model");
      return;
    }
    if (static_cast<int64_t>(name.size()) > limits.max_model_name_bytes) {
      status = InvalidArgument("the model name is longer than " + std::to_string(limits.max_model_name_bytes) +
                               " bytes");
      return;
    }
    out.model.assign(name.begin(), name.end());
    out.version = request.getVersion();
    out.input.model_version = out.version;
    auto options = request.getOptions();
    out.timeout_us = static_cast<int64_t>(options.getTimeoutMs()) * 1000;
    out.priority = options.getPriority();
    out.input.max_decode_len = options.getMaxDecodeLength();
    auto input = request.getInput();
    switch (input.which()) {
      case InferRequest::Input::TOKENS: {
        auto tokens = input.getTokens();
        if (tokens.size() == 0) {
          status = InvalidArgument("the request has no input: send tokens (lstm, seq2seq) or a tree "
                                   "(treelstm)");
          return;
        }
        if (static_cast<int64_t>(tokens.size()) > limits.max_tokens) {
          status = InvalidArgument("the request has " + std::to_string(tokens.size()) +
                                   " tokens; this server takes at most " + std::to_string(limits.max_tokens));
          return;
        }
        out.input.tokens.reserve(tokens.size());
        for (int32_t t : tokens) out.input.tokens.push_back(t);
        break;
      }
      case InferRequest::Input::TREE: {
        auto tree = DecodeTree(input.getTree(), limits);
        if (!tree.ok()) {
          status = tree.status();
          return;
        }
        out.input.tree = std::move(tree).value();
        out.input.has_tree = true;
        break;
      }
      default:
        status = InvalidArgument("the request's input is of a kind this server does not know");
    }
  });
  KJ_IF_MAYBE(e, error) {
    return InvalidArgument(std::string("unreadable request: ") + e->getDescription().cStr());
  }
  if (!status.ok()) return status;
  return out;
}

void EncodeInferRequest(const std::string& model, uint32_t version, const RequestInput& input,
                        int64_t timeout_us, int64_t max_decode_len, InferRequest::Builder out) {
  out.setModel(AsText(model));
  out.setVersion(version);
  auto options = out.initOptions();
  options.setTimeoutMs(timeout_us > 0 ? ClampU32((timeout_us + 999) / 1000) : 0);
  options.setMaxDecodeLength(ClampU32(max_decode_len));
  if (input.has_tree) {
    auto nodes = out.getInput().initTree().initNodes(static_cast<unsigned>(input.tree.nodes.size()));
    for (size_t i = 0; i < input.tree.nodes.size(); ++i) {
      const TreeNode& n = input.tree.nodes[i];
      auto b = nodes[static_cast<unsigned>(i)];
      b.setToken(n.token);
      if (n.children.size() == 2) {
        b.setLeft(n.children[0]);
        b.setRight(n.children[1]);
      }
    }
  } else {
    auto tokens = out.getInput().initTokens(static_cast<unsigned>(input.tokens.size()));
    for (size_t i = 0; i < input.tokens.size(); ++i) tokens.set(static_cast<unsigned>(i), input.tokens[i]);
  }
}

StatusOr<ModelSpec> FindModel(const std::vector<ModelSpec>& served, const std::string& name, uint32_t version) {
  std::vector<std::string> names;     // of the other models, once each, in order
  std::vector<std::string> versions;  // of `name`
  for (const ModelSpec& spec : served) {
    if (spec.name == name) {
      if (version == 0 || static_cast<int64_t>(version) == spec.version) return spec;
      versions.push_back(std::to_string(spec.version));
    } else if (std::find(names.begin(), names.end(), spec.name) == names.end()) {
      names.push_back(spec.name);
    }
  }
  auto join = [](const std::vector<std::string>& items) {
    std::string out;
    for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
    return out;
  };
  if (!versions.empty())
    return NotFound("model '" + name + "' version " + std::to_string(version) + " is not served (this server has " +
                    (versions.size() == 1 ? "version " : "versions ") + join(versions) + ")");
  return NotFound("unknown model '" + PrintableBytes(name) + "' (served: " + (names.empty() ? "none" : join(names)) +
                  ")");
}

ErrorCode ToErrorCode(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return ErrorCode::UNKNOWN;
    case StatusCode::kInvalidArgument: return ErrorCode::INVALID_ARGUMENT;
    case StatusCode::kNotFound: return ErrorCode::NOT_FOUND;
    case StatusCode::kResourceExhausted: return ErrorCode::RESOURCE_EXHAUSTED;
    case StatusCode::kDeadlineExceeded: return ErrorCode::DEADLINE_EXCEEDED;
    case StatusCode::kCancelled: return ErrorCode::CANCELLED;
    case StatusCode::kUnavailable: return ErrorCode::UNAVAILABLE;
    case StatusCode::kInternal: return ErrorCode::INTERNAL;
  }
  return ErrorCode::UNKNOWN;
}

StatusCode FromErrorCode(ErrorCode code) {
  switch (code) {
    case ErrorCode::INVALID_ARGUMENT: return StatusCode::kInvalidArgument;
    case ErrorCode::NOT_FOUND: return StatusCode::kNotFound;
    case ErrorCode::RESOURCE_EXHAUSTED: return StatusCode::kResourceExhausted;
    case ErrorCode::DEADLINE_EXCEEDED: return StatusCode::kDeadlineExceeded;
    case ErrorCode::CANCELLED: return StatusCode::kCancelled;
    case ErrorCode::UNAVAILABLE: return StatusCode::kUnavailable;
    case ErrorCode::INTERNAL:
    case ErrorCode::UNKNOWN: return StatusCode::kInternal;
  }
  return StatusCode::kInternal;  // a code from a newer server
}

const char* ErrorCodeName(ErrorCode code) { return StatusCodeName(FromErrorCode(code)); }

void EncodeError(const Status& status, Error::Builder out) {
  out.setCode(ToErrorCode(status.ok() ? StatusCode::kInternal : status.code()));
  out.setMessage(status.ok() ? capnp::Text::Reader("an error without a message (a server bug)")
                              : AsText(status.message()));
}

void EncodeResult(const RequestResult& result, const ModelSpec& spec, uint64_t server_micros,
                  InferResult::Builder out) {
  out.setModel(AsText(spec.name));
  out.setVersion(ClampU32(spec.version));
  out.setLabel(result.label);
  auto logits = out.initLogits(static_cast<unsigned>(result.logits.size()));
  for (size_t i = 0; i < result.logits.size(); ++i) logits.set(static_cast<unsigned>(i), result.logits[i]);
  auto tokens = out.initTokens(static_cast<unsigned>(result.tokens.size()));
  for (size_t i = 0; i < result.tokens.size(); ++i) tokens.set(static_cast<unsigned>(i), result.tokens[i]);
  auto scores = out.initScores(static_cast<unsigned>(result.scores.size()));
  for (size_t i = 0; i < result.scores.size(); ++i) scores.set(static_cast<unsigned>(i), result.scores[i]);
  out.setServerMicros(server_micros);
}

int64_t ReplyBytesAtLeast(const RequestResult& result) {
  return 4 * static_cast<int64_t>(result.logits.size() + result.tokens.size() + result.scores.size());
}

void EncodeReply(const StatusOr<RequestResult>& result, const ModelSpec& spec, uint64_t server_micros,
                 InferReply::Builder out) {
  if (result.ok()) EncodeResult(*result, spec, server_micros, out.initResult());
  else EncodeError(result.status(), out.initError());
}

StatusOr<ReplyValue> DecodeReply(InferReply::Reader reply) {
  ReplyValue out;
  Status status;
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&] {
    switch (reply.which()) {
      case InferReply::RESULT: {
        auto r = reply.getResult();
        out.model = FromText(r.getModel());
        out.version = r.getVersion();
        out.server_micros = r.getServerMicros();
        out.result.label = r.getLabel();
        for (float v : r.getLogits()) out.result.logits.push_back(v);
        for (int32_t t : r.getTokens()) out.result.tokens.push_back(t);
        for (float v : r.getScores()) out.result.scores.push_back(v);
        break;
      }
      case InferReply::ERROR: {
        auto e = reply.getError();
        status = Status(FromErrorCode(e.getCode()), FromText(e.getMessage()));
        break;
      }
      default:
        status = Internal("the server sent a reply of a kind this client does not know");
    }
  });
  KJ_IF_MAYBE(e, error) {
    return Internal(std::string("unreadable reply: ") + e->getDescription().cStr());
  }
  if (!status.ok()) return status;
  return out;
}

void EncodeModelInfo(const ModelSpec& spec, ModelInfo::Builder out) {
  out.setName(AsText(spec.name));
  out.setVersion(ClampU32(spec.version));
  switch (spec.kind) {
    case cellserve::ModelKind::kLstm: out.setKind(rpc::ModelKind::LSTM); break;
    case cellserve::ModelKind::kSeq2Seq: out.setKind(rpc::ModelKind::SEQ2SEQ); break;
    case cellserve::ModelKind::kTreeLstm: out.setKind(rpc::ModelKind::TREELSTM); break;
  }
  out.setVocabularySize(ClampU32(spec.vocab_size));
  out.setHidden(ClampU32(spec.hidden));
  out.setLayers(ClampU32(spec.layers));
  out.setClasses(ClampU32(spec.classes));
  out.setTargetVocabularySize(ClampU32(spec.target_vocab_size));
  out.setEosId(static_cast<int32_t>(spec.eos_id));
  out.setMaxDecodeLength(ClampU32(spec.max_decode_len));
  out.setMaxInputTokens(ClampU32(spec.max_input_tokens));
  out.setDtype(AsText(spec.dtype));
}

StatusOr<ModelSpec> DecodeModelInfo(ModelInfo::Reader info) {
  ModelSpec spec;
  Status status;
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&] {
    spec.name = FromText(info.getName());
    spec.version = info.getVersion();
    switch (info.getKind()) {
      case rpc::ModelKind::LSTM: spec.kind = cellserve::ModelKind::kLstm; break;
      case rpc::ModelKind::SEQ2SEQ: spec.kind = cellserve::ModelKind::kSeq2Seq; break;
      case rpc::ModelKind::TREELSTM: spec.kind = cellserve::ModelKind::kTreeLstm; break;
      default: status = InvalidArgument("model '" + spec.name + "' is of a kind this client does not know");
    }
    spec.vocab_size = info.getVocabularySize();
    spec.hidden = info.getHidden();
    spec.embed_dim = spec.hidden;
    spec.layers = info.getLayers();
    spec.classes = info.getClasses();
    spec.target_vocab_size = info.getTargetVocabularySize();
    spec.eos_id = info.getEosId();
    spec.max_decode_len = info.getMaxDecodeLength();
    spec.max_input_tokens = info.getMaxInputTokens();
    spec.dtype = FromText(info.getDtype());
  });
  KJ_IF_MAYBE(e, error) {
    return InvalidArgument(std::string("unreadable model info: ") + e->getDescription().cStr());
  }
  if (!status.ok()) return status;
  return spec;
}

const char* ServingStateName(ServingState state) {
  switch (state) {
    case ServingState::SERVING: return "serving";
    case ServingState::NOT_READY: return "not_ready";
    case ServingState::DRAINING: return "draining";
  }
  return "unknown";
}

}  // namespace cellserve::rpc
