// Conversions between the RPC messages of schema/cellserve.capnp and the core's types, in one place
// for the server, the client library and the fuzz test. Pure functions, thread-safe.
// Decoding trusts nothing: every Decode* catches capnp's own exceptions (a traversal limit hit,
// a malformed pointer) and returns INVALID_ARGUMENT, and checks sizes before copying. What needs
// the model (vocabulary, tree shape, per-model length limits) is checked later by
// BuildRequestGraph, the one validation that every front door shares.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/cell_graph.h"
#include "runtime/model_spec.h"
#include "runtime/status.h"
#include "schema/cellserve.capnp.h"

namespace cellserve::rpc {

// Limits of one server, on top of each model's own max_input_tokens.
struct RequestLimits {
  // Tokens per request at most (or tree leaves; a binary tree has at most 2 * this - 1 nodes).
  // Default 4096. Must be >= 1.
  int64_t max_tokens = 4096;
  // Bytes of the model name at most. Default 256.
  int64_t max_model_name_bytes = 256;
};

// A request as the core wants it.
struct DecodedRequest {
  std::string model;
  uint32_t version = 0;        // 0 = any
  RequestInput input;          // its model_version is `version`
  int64_t timeout_us = 0;      // relative; 0 = none
  int32_t priority = 0;        // reserved (DESIGN.md §10)
};

// INVALID_ARGUMENT with a message that names the problem: no model, no input, too many tokens or
// nodes, a tree node whose children are half given, a message capnp cannot read.
StatusOr<DecodedRequest> DecodeInferRequest(InferRequest::Reader request, const RequestLimits& limits);

// Client side: fills `out` from the request parts. timeout_us is rounded up to whole ms.
void EncodeInferRequest(const std::string& model, uint32_t version, const RequestInput& input,
                        int64_t timeout_us, int64_t max_decode_len, InferRequest::Builder out);

// The served spec of `name`: of `version`, or with version 0 the first one `served` lists (a
// router lists each version its nodes serve). NOT_FOUND if no served model has `name` (the
// message shows the name's bytes as printable ASCII: it is the client's, and replies are UTF-8),
// or none of that name has `version`.
StatusOr<ModelSpec> FindModel(const std::vector<ModelSpec>& served, const std::string& name, uint32_t version);

ErrorCode ToErrorCode(StatusCode code);
StatusCode FromErrorCode(ErrorCode code);  // unknown -> kInternal
const char* ErrorCodeName(ErrorCode code); // "INVALID_ARGUMENT", ... (the StatusCode names)

void EncodeError(const Status& status, Error::Builder out);
void EncodeResult(const RequestResult& result, const ModelSpec& spec, uint64_t server_micros,
                  InferResult::Builder out);
void EncodeReply(const StatusOr<RequestResult>& result, const ModelSpec& spec, uint64_t server_micros,
                 InferReply::Builder out);
// What EncodeReply makes of `result` at least, in bytes (its lists, 4 bytes an element). An RPC
// server cannot send a message over its --max-message-bytes: it answers RESOURCE_EXHAUSTED instead.
int64_t ReplyBytesAtLeast(const RequestResult& result);

// A decoded reply: the result, or the error it carries (as a Status with the same code).
struct ReplyValue {
  RequestResult result;
  std::string model;
  uint32_t version = 0;
  uint64_t server_micros = 0;
};
StatusOr<ReplyValue> DecodeReply(InferReply::Reader reply);

void EncodeModelInfo(const ModelSpec& spec, ModelInfo::Builder out);
// The fields a client needs (name, version, kind, sizes); INVALID_ARGUMENT if unreadable.
StatusOr<ModelSpec> DecodeModelInfo(ModelInfo::Reader info);

const char* ServingStateName(ServingState state);  // "serving", "not_ready", "draining"

}  // namespace cellserve::rpc
