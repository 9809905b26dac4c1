// Client: the C++ client library of the cellserve RPC protocol (schema/cellserve.capnp), used by
// `cellserve infer`, `health`, `models` and `loadgen`.
//
// Threads: a Client belongs to the thread that called Connect. It owns that thread's kj event
// loop (kj::setupAsyncIo), so a thread has at most one Client at a time (Connect answers INTERNAL
// otherwise), and every method must be called on that thread. The blocking methods (Models,
// Health, Infer) run the loop until their answer arrives; the *Async methods return kj promises
// that the caller waits on with wait_scope() or chains, so one thread can keep thousands of
// calls in flight (timer() schedules them).
// Ownership: the Client owns the loop, the connection and the server's capability. Promises from
// the *Async methods, and anything holding them (a kj::TaskSet), must be destroyed before the
// Client. Dropping an unresolved promise cancels its call (the server frees its cells).
// Errors: every failure is a Status and no method throws. An error reply carries the server's
// code and message (rpc::DecodeReply); a transport failure (a kj::Exception: the connection
// refused or lost, a message over the size limit) is UNAVAILABLE with its description; a
// client-side wait bound that runs out is DEADLINE_EXCEEDED.
// Signals: Connect sets SIGPIPE to ignored, process-wide, if it was at its default (a write to a
// closed connection must be an error, not the end of the process).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <kj/async.h>
#include <kj/timer.h>

#include "runtime/cell_graph.h"
#include "runtime/model_spec.h"
#include "runtime/status.h"
#include "schema/convert.h"

namespace cellserve::rpc {

// The address `cellserve serve --listen` uses when none is given.
inline constexpr char kDefaultAddress[] = "127.0.0.1:7410";

struct HostPort {
  std::string host;  // a name or an IP address, IPv6 without its brackets
  uint16_t port = 0;
};

// Parses "HOST:PORT" ("127.0.0.1:7410", "localhost:7410", "[::1]:7410"). INVALID_ARGUMENT naming
// the problem: empty, no port, a port that is not in [1, 65535], an IPv6 address without brackets.
StatusOr<HostPort> ParseHostPort(const std::string& text);

// rpc::Health as plain values.
struct HealthInfo {
  ServingState state = ServingState::NOT_READY;
  uint32_t protocol_version = 0;
  int64_t requests_in_flight = 0;
  int64_t slots_in_use = 0;
  int64_t accepted = 0;
  int64_t completed = 0;
  int64_t failed = 0;
  int64_t rejected = 0;
  uint32_t devices = 0;
  uint32_t connections = 0;
  uint32_t calls_in_flight = 0;
  std::string reason;  // why not serving, when the server says (servers before it: empty)

  bool serving() const { return state == ServingState::SERVING; }
};

// One inference call.
struct InferCall {
  std::string model;
  uint32_t version = 0;          // 0 = whichever version the server has
  RequestInput input;            // tokens, or a tree (has_tree); input.max_decode_len is ignored
  // The server's deadline, from its receipt (sent in whole ms); 0 = none; < 0: passed already
  // (answered DEADLINE_EXCEEDED at once, not sent).
  int64_t timeout_us = 0;
  int64_t max_decode_len = 0;    // seq2seq: 0 = the model's own
  // Client side: stop waiting after this long, cancel the call and answer DEADLINE_EXCEEDED.
  // 0 = wait for the server's answer however long it takes.
  int64_t client_timeout_ms = 0;
  // When set, the call uses inferStream: each decoder token (seq2seq) is passed here as it
  // arrives, in order, on the Client's thread, before the reply. Called only while the call is
  // pending (never after its promise resolved or was dropped). If it throws, the request is
  // cancelled on the server and the call answers INTERNAL ("the on_token callback threw: ...").
  // It must not call this Client's blocking methods (INTERNAL: kj's wait() is not re-entrant).
  std::function<void(uint32_t index, int32_t token)> on_token;
};

class Client {
 public:
  // Connects to `host_port` (see ParseHostPort), resolving names, within `connect_timeout_ms`.
  // INVALID_ARGUMENT for a malformed address; UNAVAILABLE when it cannot connect, with a message
  // that says why (refused, no answer in time, unknown host) and what to check. The connection
  // has TCP keepalive (schema/tcp_keepalive.h, the defaults): if the server's machine vanishes
  // without a word, its calls end UNAVAILABLE after about 2 minutes instead of waiting for good.
  static StatusOr<std::unique_ptr<Client>> Connect(const std::string& host_port,
                                                   int64_t connect_timeout_ms = 5000);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The served models (name, version, kind, sizes; see rpc::DecodeModelInfo).
  StatusOr<std::vector<ModelSpec>> Models(int64_t timeout_ms = 10000);
  StatusOr<HealthInfo> Health(int64_t timeout_ms = 5000);
  StatusOr<ReplyValue> Infer(const InferCall& call);

  // The same, as promises; they never reject (every failure is the Status inside).
  // timeout_ms 0 = no client-side bound.
  kj::Promise<StatusOr<std::vector<ModelSpec>>> ModelsAsync(int64_t timeout_ms = 0);
  kj::Promise<StatusOr<HealthInfo>> HealthAsync(int64_t timeout_ms = 0);
  kj::Promise<StatusOr<ReplyValue>> InferAsync(const InferCall& call);

  kj::WaitScope& wait_scope();
  kj::Timer& timer();
  const std::string& address() const;
  // True once the connection is known to be lost (a call failed with DISCONNECTED, or the loop
  // saw the socket close). Every later call fails UNAVAILABLE; make a new Client to reconnect.
  bool disconnected() const;
  // Resolves when the connection is lost (never rejects); e.g. to stop issuing calls.
  kj::Promise<void> WhenDisconnected();

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve::rpc
