// The router <-> node protocol (issue 4; DESIGN.md §6): the atoms of the CAF messages that cross
// the network between `cellserve router` and `cellserve node`, and the pure functions that turn
// their payloads into bytes and back. Payloads reuse the RPC schema (schema/cellserve.capnp:
// InferRequest, InferReply) so a request is checked by the same DecodeInferRequest at the node as
// at the front door; registration is JSON (the node's name, device count and model specs).
// Every remote message carries only built-in CAF types (atoms, integers, std::string), so nothing
// needs announcing and a malformed payload is a decoding error, never a crash.
//
// Messages (node id: the router's number for the node, from `registered`):
//   node -> router  (register_atom, string registration)           -> (registered_atom, uint64 node)
//                   (node_load_atom, uint64 node, int64 cells, int32 devices)   periodic + on change
//                   (answer_atom, uint64 node, uint64 request, string reply)    once per run
//                   (token_atom, uint64 node, uint64 request, int32 token)      seq2seq streaming
//                                                   (only for runs whose `streams` is true, by a
//                                                   node whose registration says `run_streams`)
//                   (drain_atom, uint64 node)                     -> (drain_atom)  no new placements
//                   (bye_atom, uint64 node)                       -> (bye_atom)    leaving; answers sent
//   router -> node  (run_atom, uint64 node, uint64 request, string request, int64 timeout_us)
//                                                   run it, answer once under that node id (it may
//                                                   come before the registration reply); timeout:
//                                                   micros left, 0 = none (the node's clock starts
//                                                   it, so clocks need not agree)
//                   (run_atom, ..., int64 timeout_us, bool streams)  the same, to a node that
//                                                   registered `run_streams`: tokens only if
//                                                   `streams` (the caller streams); older nodes
//                                                   get the form above and send every token
//                   (abort_atom, uint64 request)                    the client cancelled
//                   (reregister_atom)                               "I do not know you": register again
// Both sides monitor each other (CAF monitors over the middleman): a node's death or cut-off gives
// its routers a down message; a router's gives its nodes one, and they reconnect.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "runtime/cell_graph.h"
#include "runtime/model_spec.h"
#include "runtime/status.h"

namespace cellserve::cluster {

using register_atom = caf::atom_constant<caf::atom("register")>;
using registered_atom = caf::atom_constant<caf::atom("registered")>;
using reregister_atom = caf::atom_constant<caf::atom("reregister")>;
using node_load_atom = caf::atom_constant<caf::atom("nodeload")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
using abort_atom = caf::atom_constant<caf::atom("abort")>;
using answer_atom = caf::atom_constant<caf::atom("answer")>;
using token_atom = caf::atom_constant<caf::atom("token")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using bye_atom = caf::atom_constant<caf::atom("bye")>;

// What a node tells a router when it joins.
struct Registration {
  std::string name;              // for logs, health, errors and a metrics label: CheckNodeName's
  int32_t devices = 1;           // 1..65536
  std::vector<ModelSpec> models; // the models it serves (at least one)
  // Whether the node takes the run message with `streams` (and then sends tokens only when asked).
  // Absent in older nodes' registrations, which routers read as false.
  bool run_streams = false;
};
// A node's name: 1 to kMaxNodeNameBytes bytes, no control characters (it is a log field and a
// metrics label on every router, so anyone who can reach the cluster port must not be able to
// make it large or break a line). INVALID_ARGUMENT naming what is wrong.
constexpr size_t kMaxNodeNameBytes = 256;
Status CheckNodeName(const std::string& name);
std::string EncodeRegistration(const Registration& registration);
// INVALID_ARGUMENT for anything unreadable or out of range.
StatusOr<Registration> DecodeRegistration(const std::string& bytes);

// A run: the model and the input (the timeout travels beside it, as it shrinks on a retry).
struct RunRequest {
  std::string model;
  RequestInput input;
};
std::string EncodeRunRequest(const std::string& model, const RequestInput& input);
// INVALID_ARGUMENT as DecodeInferRequest (schema/convert.h), with `max_tokens` the limit.
StatusOr<RunRequest> DecodeRunRequest(const std::string& bytes, int64_t max_tokens);

// The answer of a run: the result or the error, as the RPC reply carries it.
std::string EncodeRunAnswer(const StatusOr<RequestResult>& result, const ModelSpec& spec);
// The decoded result, or the error the node answered (same code and message); INTERNAL if the bytes
// are unreadable.
StatusOr<RequestResult> DecodeRunAnswer(const std::string& bytes);

// "HOST:PORT" -> host and port. INVALID_ARGUMENT unless the port is 1..65535 (or 0 when
// `allow_zero`) and the host non-empty.
Status ParseHostPort(const std::string& address, bool allow_zero, std::string& host, uint16_t& port);

}  // namespace cellserve::cluster
