// RpcServer: the Cap'n Proto front door of `cellserve serve`, `node` and `router` (--listen;
// schema/cellserve.capnp). It runs the kj event loop on its own thread and bridges to the CAF
// actors without blocking either side: calls go out as ServingBackend::Infer (a LocalCluster: a
// CAF message to its node actor; a cluster::Router: to a node process); answers and streamed tokens
// come back through a KjInbox (a cross-thread fulfiller wakes the loop). Health reads the backend's
// report on a side thread, since Report may wait for actors.
// Per call: decode and check (convert.h; bad input is an error reply, never an exception), pick
// the model, run it, reply once. A dropped call or connection cancels its request in the cluster
// (its cells leave the queues, its slots are freed). Limits: the size of an incoming message
// (capnp traversal limit: beyond it the connection is closed by capnp with an error), tokens per
// request, concurrent calls per connection (RESOURCE_EXHAUSTED), open connections.
// Thread-safety: Start, AttachCluster, Stop, port and stats may be called from any thread; the
// cluster must outlive the server (or at least its Stop).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/serving_backend.h"
#include "runtime/status.h"
#include "schema/convert.h"
#include "schema/tcp_keepalive.h"

namespace cellserve::monitoring {
class ServingMetrics;
}

namespace cellserve::rpc {

struct RpcServerOptions {
  // HOST:PORT to listen on; port 0 picks a free one (see RpcServer::port). Default 127.0.0.1:7410.
  std::string listen = "127.0.0.1:7410";
  RequestLimits limits;
  // Incoming message size at most, in bytes (capnp's traversal limit; capnp 0.9 bounds the replies
  // it sends by it too, so it must hold the largest answer: a head's logits, a long decode).
  // Default 16 MiB.
  int64_t max_message_bytes = 16 << 20;
  // infer/inferStream and health calls being served at once per connection; more are
  // RESOURCE_EXHAUSTED (health: a capnp OVERLOADED exception, which rpc::Client reads as
  // RESOURCE_EXHAUSTED; counted as that). Default 1024. Must be >= 1.
  int64_t max_calls_per_connection = 1024;
  // Open connections at most; further ones are closed at once. Default 1024. Must be >= 1.
  int64_t max_connections = 1024;
  // Answers queued in memory for a connection whose client does not read them, at most: the next
  // message read past it, once the socket has taken none of them for 2 s, closes the connection
  // (its calls in flight are cancelled, as for a client that went away), so a client that sends without reading cannot grow the server's
  // memory for good. Each queued message counts its size plus 8 KiB (capnp's first segment).
  // Counted in RpcServerStats::slow_reader_disconnects. Default 32 MiB; at least 64 KiB.
  int64_t max_queued_answer_bytes = 32 << 20;
  // A connection on which nothing arrives for this long after it opened (not even the bootstrap)
  // is closed (RpcServerStats::silent_closes): idle sockets cannot hold every connection slot.
  // The start of a message (8 bytes: capnp reads its segment table a word at a time) is enough to
  // stay: it is no defence against a client set on holding slots.
  // Default 10 s; at least 1 ms.
  int64_t first_message_timeout_ms = 10000;
  // TCP keepalive on every accepted connection (schema/tcp_keepalive.h): a client that vanished
  // without closing (its machine gone, a partition) is dropped after about DropAfterS(), its calls
  // cancelled and its slot freed, instead of holding them for good. Default: probes after 60 s
  // idle, every 10 s, 6 of them (2 minutes); idle_s 0: off.
  TcpKeepalive keepalive;
  // Stop: how long calls in flight may take to be answered, and their answers to be written,
  // before connections close. Default 5 s.
  int64_t stop_grace_ms = 5000;
  // Prometheus metrics (monitoring/metrics.h): error replies by code, open connections, calls in
  // flight, calls the client dropped, and the requests it answers itself, before the cluster
  // (cellserve_requests_total with model "(unknown)"). Borrowed: must outlive the server.
  // nullptr = none.
  monitoring::ServingMetrics* metrics = nullptr;
};

struct RpcServerStats {
  int64_t connections = 0;          // open now
  int64_t connections_total = 0;    // accepted since start
  int64_t connections_refused = 0;  // over max_connections
  int64_t accept_failures = 0;      // accept() failed (out of file descriptors or memory); tried again in 100 ms
  int64_t calls_in_flight = 0;      // infer calls being served now
  int64_t calls_total = 0;          // infer calls received
  int64_t client_cancels = 0;       // calls dropped by the client before the answer (not by Stop)
  int64_t slow_reader_disconnects = 0;  // connections closed: over max_queued_answer_bytes unread
  // (and nothing written for 2 s)
  int64_t tokens_streamed = 0;  // token messages sent to clients' sinks (one on its way per call)
  int64_t silent_closes = 0;    // connections closed: nothing arrived within first_message_timeout_ms
  std::array<int64_t, 8> errors_by_code{};  // error replies, indexed by StatusCode
};

class RpcServer {
 public:
  // Binds and starts serving; returns once the port is open. UNAVAILABLE if it cannot listen
  // (address in use, bad host), INVALID_ARGUMENT for bad options. `cluster` may be null: the
  // port is open while the models load, health says not_ready, models lists none and infer is
  // UNAVAILABLE ("starting") until AttachCluster.
  static StatusOr<std::unique_ptr<RpcServer>> Start(ServingBackend* cluster, RpcServerOptions options);
  // Gives a server started without a cluster its cluster (once); returns when calls go to it.
  // INVALID_ARGUMENT if it has one already, UNAVAILABLE once stopped.
  Status AttachCluster(ServingBackend* cluster);
  ~RpcServer();  // Stop()

  int port() const;  // the port it listens on
  RpcServerStats stats() const;

  // Stops accepting, waits up to stop_grace_ms for calls in flight to be answered and every answer
  // to be written (a client that reads late still gets them), then closes
  // every connection (calls still unanswered are cancelled in the cluster) and joins the thread:
  // stop_grace_ms (50 ms at least) plus up to 2 s for what a client left unread to be dropped.
  // Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit RpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve::rpc
