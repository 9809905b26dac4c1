// The server's kj thread owns everything kj: the listener, the connections (each a
// TwoPartyVatNetwork + RpcSystem with its own Service), the table of calls waiting for the
// cluster, and the KjInbox. Other threads touch only: the inbox's Sender (actor threads post
// answers and tokens, the report thread posts health reports), the stop fulfiller (Stop), and
// the atomic stats.
#include "schema/rpc_server.h"

#include <sys/socket.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include "monitoring/log.h"
#include "monitoring/metrics.h"
#include "runtime/clock.h"
#include "runtime/memory_limit.h"
#include "runtime/this_thread.h"
#include "schema/kj_inbox.h"

namespace cellserve::rpc {

namespace {

struct AtomicStats {
  std::atomic<int64_t> connections{0}, connections_total{0}, connections_refused{0}, accept_failures{0};
  std::atomic<int64_t> calls_in_flight{0}, calls_total{0}, client_cancels{0}, slow_reader_disconnects{0};
  std::atomic<int64_t> tokens_streamed{0}, silent_closes{0};
  std::array<std::atomic<int64_t>, 8> errors_by_code{};
};

// One streamed call's decoder tokens on their way to its client's TokenSink (kj thread only).
// Flow control: one `token` message is sent at a time, the next when capnp's streaming window
// resolves the previous send (at once while the window has room, so the pipe stays full); the
// rest wait here as 4-byte ids. Sending each token as it came queued it as a capnp message of
// 2-3 KB with nothing to bound them: a client that stopped reading, or whose sink never returned,
// grew the server by gigabytes, and freeing that queue on close overflowed the stack. Now a call
// holds its unsent tokens x 4 bytes (at most the model's max_decode_len) and one window.
// Shared by the call and the send in flight.
struct TokenStream {
  explicit TokenStream(TokenSink::Client s) : sink(kj::mv(s)) {}
  TokenSink::Client sink;
  uint64_t call_id = 0;  // its call in LoopState::calls
  std::deque<int32_t> unsent;
  uint32_t next_index = 0;
  bool sending = false;
  kj::Maybe<kj::Exception> failed;                          // a send failed (or the call went): no more
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> delivered;  // WhenDelivered's, while it waits
};

// What the cluster's answer brings back to a waiting call.
struct Outcome {
  StatusOr<RequestResult> result = Internal("no answer");
  std::shared_ptr<TokenStream> tokens;  // streamed calls: the tokens still on their way
};

// A call waiting for the cluster (kj thread only).
struct PendingCall {
  kj::Own<kj::PromiseFulfiller<Outcome>> done;
  std::shared_ptr<TokenStream> tokens;  // null unless streamed
  uint64_t cluster_id = 0;  // the request's id in the cluster, for Cancel
};

// Runs ServingBackend::Report on its own thread (it waits for the workers) and hands each report
// to a callback, which posts it into the kj loop.
class ReportThread {
 public:
  explicit ReportThread(ServingBackend* cluster) : cluster_(cluster), thread_([this] { Loop(); }) {}
  ~ReportThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Ask(std::function<void(ClusterReport)> reply) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(reply));
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    NameThisThread("cs-rpc-report");
    for (;;) {
      std::function<void(ClusterReport)> reply;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        reply = std::move(queue_.front());
        queue_.pop_front();
      }
      // One at a time, so a flood of health calls stays cheap. (A LocalCluster's report uses a CAF
      // scoped_actor; it lets go of CAF's thread-local state before it returns, so this
      // long-lived thread does not keep the cluster's actor system from stopping:
      // actors/caf_config.h.)
      reply(cluster_->Report());
    }
  }
  ServingBackend* cluster_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void(ClusterReport)>> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                                 // GUARDED_BY(mu_)
  std::thread thread_;
};

struct Connection;

// Everything the kj thread's services share.
struct LoopState {
  ServingBackend* cluster = nullptr;
  const RpcServerOptions* options = nullptr;
  AtomicStats* stats = nullptr;
  std::vector<ModelSpec> models;
  KjInbox inbox;
  std::unordered_map<uint64_t, PendingCall> calls;                               // by local id
  std::unordered_map<uint64_t, kj::Own<kj::PromiseFulfiller<ClusterReport>>> health_waiters;
  std::vector<uint64_t> health_next;  // health calls the next report answers (they came after the running one began)
  bool report_running = false;
  uint64_t next_id = 1;
  std::unique_ptr<ReportThread> reporter;
  SteadyClock clock;
  std::unordered_set<Connection*> connections;  // open now (each adds and removes itself)
  kj::Timer* timer = nullptr;                     // the loop's
  kj::TaskSet* token_sends = nullptr;             // each streamed call's token in flight; null once stopping

  void CountError(StatusCode code) {
    ++stats->errors_by_code[static_cast<size_t>(code)];
    if (options->metrics) options->metrics->OnRpcError(code);
  }
  void CallsInFlight(int delta) {
    stats->calls_in_flight += delta;
    if (options->metrics) options->metrics->rpc_calls_in_flight().Increment(delta);
  }
};

// Ends the stream: no more tokens go out, and WhenDelivered's promise, if one waits, fails with `e`.
void EndStream(TokenStream& s, kj::Exception e) {
  s.sending = false;
  s.unsent.clear();
  KJ_IF_MAYBE(f, s.delivered) {
    (*f)->reject(kj::cp(e));
    s.delivered = nullptr;
  }
  s.failed = kj::mv(e);
}

// A token could not be sent (the client's sink failed: its callback threw, or it went): the
// request is cancelled in the cluster, not run to its end for nobody, and the call is answered
// now, with the stream's error (kj thread). Nothing if it was answered already.
void AbandonStreamedCall(LoopState* st, uint64_t call_id);

// Sends the stream's next token, if none is on its way (kj thread). With none left, tells
// WhenDelivered.
void SendNextToken(LoopState* st, const std::shared_ptr<TokenStream>& s) {
  if (s->sending || s->failed != nullptr) return;
  if (s->unsent.empty()) {
    KJ_IF_MAYBE(f, s->delivered) {
      (*f)->fulfill();
      s->delivered = nullptr;
    }
    return;
  }
  if (!st->token_sends) return;  // stopping: the connections close
  auto request = s->sink.tokenRequest(capnp::MessageSize{4, 0});  // sized: unsized, 8 KiB each
  request.setIndex(s->next_index++);
  request.setToken(s->unsent.front());
  s->unsent.pop_front();
  s->sending = true;
  ++st->stats->tokens_streamed;
  st->token_sends->add(request.send().then(
      [st, s] {
        s->sending = false;
        SendNextToken(st, s);
      },
      [st, s](kj::Exception&& e) {
        EndStream(*s, kj::cp(e));
        AbandonStreamedCall(st, s->call_id);
      }));
}

// Hands `result` to the waiting call `call_id` and forgets the call (kj thread). Returns its
// request's id in the cluster; nothing if the call is gone (answered, or its client left).
std::optional<uint64_t> AnswerCall(LoopState* st, uint64_t call_id, StatusOr<RequestResult> result) {
  auto it = st->calls.find(call_id);
  if (it == st->calls.end()) return std::nullopt;
  Outcome outcome;
  outcome.result = std::move(result);
  outcome.tokens = it->second.tokens;
  const uint64_t cluster_id = it->second.cluster_id;
  kj::Own<kj::PromiseFulfiller<Outcome>> fulfiller = kj::mv(it->second.done);
  st->calls.erase(it);
  fulfiller->fulfill(kj::mv(outcome));
  return cluster_id;
}

void AbandonStreamedCall(LoopState* st, uint64_t call_id) {
  // The reply says how the sink failed (WhenDelivered); the result is not sent.
  if (std::optional<uint64_t> cluster_id = AnswerCall(st, call_id, Cancelled("the client's token sink failed")))
    st->cluster->Cancel(*cluster_id);
}

// Resolves once every token pushed so far is taken by the sink; fails with the first failed send.
kj::Promise<void> WhenDelivered(const std::shared_ptr<TokenStream>& s) {
  KJ_IF_MAYBE(e, s->failed) { return kj::cp(*e); }
  if (!s->sending && s->unsent.empty()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  s->delivered = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

// Gives the loop its cluster (kj thread): from now on calls go to it and health reports on it.
void AttachCluster(LoopState& state, ServingBackend* cluster) {
  state.cluster = cluster;
  state.models = cluster->Models();
  state.reporter = std::make_unique<ReportThread>(cluster);
}

// One cluster report at a time, and it answers every health call that was waiting when it began:
// a flood of health calls costs one report per report's duration, not one report each (kj thread).
void AskReport(LoopState* st) {
  if (st->report_running || st->health_next.empty() || !st->reporter) return;
  st->report_running = true;
  std::vector<uint64_t> ids;
  ids.swap(st->health_next);
  KjInbox::Sender inbox = st->inbox.sender();
  st->reporter->Ask([inbox, st, ids = std::move(ids)](ClusterReport report) {
    inbox.Post([st, ids, report = std::move(report)] {
      st->report_running = false;
      for (uint64_t id : ids) {
        auto it = st->health_waiters.find(id);
        if (it == st->health_waiters.end()) continue;  // the client dropped it
        it->second->fulfill(ClusterReport(report));
        st->health_waiters.erase(it);
      }
      AskReport(st);
    });
  });
}

struct ConnectionCalls {
  int64_t in_flight = 0;  // infer and health calls of this connection (kj thread only)
};

// Why a call over the connection's limit is refused (an infer call's RESOURCE_EXHAUSTED, a health
// call's OVERLOADED).
std::string CallLimitText(int64_t in_flight) {
  return "this connection has " + std::to_string(in_flight) +
         " calls in flight, the server's limit (--max-calls-per-connection); wait for answers or open another "
         "connection";
}

// A reply's fields besides its lists (model name, version, label, times), with room to spare.
constexpr int64_t kReplyOverheadBytes = 4096;

class Service final : public Cellserve::Server {
 public:
  Service(LoopState& state, std::shared_ptr<ConnectionCalls> calls) : state_(state), conn_(std::move(calls)) {}

  kj::Promise<void> infer(InferContext context) override { return Run(context); }
  kj::Promise<void> inferStream(InferStreamContext context) override { return Run(context); }

  kj::Promise<void> models(ModelsContext context) override {
    if (state_.cluster) state_.models = state_.cluster->Models();
    auto list = context.getResults().initModels(static_cast<unsigned>(state_.models.size()));
    for (size_t i = 0; i < state_.models.size(); ++i) EncodeModelInfo(state_.models[i], list[static_cast<unsigned>(i)]);
    return kj::READY_NOW;
  }

  kj::Promise<void> health(HealthContext context) override {
    if (!state_.cluster) {  // still loading models: not ready, nothing to report yet
      auto h = context.getResults().initHealth();
      h.setState(ServingState::NOT_READY);
      h.setReason("loading the models");
      h.setProtocolVersion(PROTOCOL_VERSION);
      h.setConnections(static_cast<uint32_t>(state_.stats->connections.load()));
      return kj::READY_NOW;
    }
    // Health calls count toward the connection's limit too, so a client that never waits for
    // their answers holds a bounded number of them.
    if (conn_->in_flight >= state_.options->max_calls_per_connection) {
      state_.CountError(StatusCode::kResourceExhausted);  // the client reads OVERLOADED as that
      return kj::Exception(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__,
                           kj::str(CallLimitText(conn_->in_flight).c_str()));
    }
    context.allowCancellation();
    const uint64_t id = state_.next_id++;
    auto paf = kj::newPromiseAndFulfiller<ClusterReport>();
    state_.health_waiters.emplace(id, kj::mv(paf.fulfiller));
    state_.health_next.push_back(id);
    ++conn_->in_flight;
    LoopState* st = &state_;
    AskReport(st);
    std::shared_ptr<ConnectionCalls> conn = conn_;
    return paf.promise
        .then([this, context](ClusterReport report) mutable {
          auto h = context.getResults().initHealth();
          switch (state_.cluster->state()) {
            case ClusterState::kServing: h.setState(ServingState::SERVING); break;
            case ClusterState::kDraining: h.setState(ServingState::DRAINING); break;
            case ClusterState::kStopped:
            case ClusterState::kStarting: h.setState(ServingState::NOT_READY); break;
          }
          if (h.getState() != ServingState::SERVING) {
            const std::string why = state_.cluster->StateReason();
            if (!why.empty()) h.setReason(why);
          }
          h.setProtocolVersion(PROTOCOL_VERSION);
          int64_t in = report.requests_held, slots = 0;
          for (const DeviceReport& d : report.devices) {
            in += d.requests_in;
            slots += d.slots_in_use;
          }
          h.setRequestsInFlight(in);
          h.setSlotsInUse(slots);
          h.setAccepted(report.accepted);
          h.setCompleted(report.completed);
          h.setFailed(report.failed);
          h.setRejected(report.rejected);
          h.setDevices(static_cast<uint32_t>(std::min<int64_t>(
              static_cast<int64_t>(report.devices.size()) + report.unlisted_devices, UINT32_MAX)));
          h.setConnections(static_cast<uint32_t>(state_.stats->connections.load()));
          h.setCallsInFlight(static_cast<uint32_t>(state_.stats->calls_in_flight.load()));
        })
        .attach(kj::defer([st, conn, id] {
          --conn->in_flight;
          if (st->health_waiters.erase(id) == 0) return;  // answered
          // Dropped before its report: forget it there too (a stuck report must not collect them).
          auto& next = st->health_next;
          next.erase(std::remove(next.begin(), next.end(), id), next.end());
        }));
  }

 private:
  template <typename Context>
  kj::Promise<void> Run(Context context) {
    const int64_t received_us = state_.clock.NowMicros();
    ++state_.stats->calls_total;
    // capnp 0.9 runs a call to completion even if the client drops it, unless the server allows
    // cancellation; then dropping the call destroys the promise below, whose defer cancels the
    // request in the cluster.
    context.allowCancellation();
    auto fail = [&](const Status& status) {  // answered here: the cluster never sees the request
      state_.CountError(status.code());
      if (state_.options->metrics)
        state_.options->metrics->OnRefused(nullptr, status.code(), state_.clock.NowMicros() - received_us);
      EncodeError(status, context.getResults().initReply().initError());
      return kj::READY_NOW;
    };
    if (!state_.cluster)
      return fail(Unavailable("the server is starting (loading its models); retry when `cellserve health` says "
                              "serving"));
    if (conn_->in_flight >= state_.options->max_calls_per_connection)
      return fail(ResourceExhausted(CallLimitText(conn_->in_flight)));
    // The parameters themselves may be malformed (a pointer of the wrong kind, from another
    // language's encoder): capnp throws on reading them, which would reach the client as a failed
    // call (UNAVAILABLE to rpc::Client, a retry) rather than as the error reply it is.
    StatusOr<DecodedRequest> decoded = Internal("not decoded");
    kj::Maybe<TokenSink::Client> sink;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
      auto params = context.getParams();
      decoded = DecodeInferRequest(params.getRequest(), state_.options->limits);
      if constexpr (std::is_same_v<Context, InferStreamContext>) {
        if (!params.hasSink())  // else the whole request would run, then fail at its first token
          decoded = InvalidArgument("inferStream needs a sink for its tokens (call infer to stream none)");
        else
          sink = params.getSink();
      }
    })) {
      decoded = InvalidArgument(std::string("the call's parameters are malformed: ") + e->getDescription().cStr());
    }
    // Decoded: the call's message (up to --max-message-bytes) is not kept while the request runs.
    context.releaseParams();
    if (!decoded.ok()) return fail(decoded.status());
    auto spec = FindModel(state_.models, decoded->model, decoded->version);
    if (!spec.ok() && spec.status().code() == StatusCode::kNotFound) {
      // A router's models grow as nodes join: look again before saying no.
      state_.models = state_.cluster->Models();
      spec = FindModel(state_.models, decoded->model, decoded->version);
      // A router without nodes (just restarted: its nodes register again within a second; or
      // every node left) cannot tell a model it will serve from a wrong name: that is a wait, not a
      // NOT_FOUND, which clients take as final.
      if (!spec.ok() && state_.cluster->state() == ClusterState::kStarting)
        return fail(Unavailable("no node is registered with this router (none has joined yet, or all have left), "
                                "so it knows no model; retry when `cellserve health` says serving"));
    }
    if (!spec.ok()) return fail(spec.status());

    const uint64_t id = state_.next_id++;
    auto paf = kj::newPromiseAndFulfiller<Outcome>();
    PendingCall& call = state_.calls[id];
    call.done = kj::mv(paf.fulfiller);
    KJ_IF_MAYBE(s, sink) {
      call.tokens = std::make_shared<TokenStream>(kj::mv(*s));
      call.tokens->call_id = id;
    }
    std::shared_ptr<TokenStream> tokens = call.tokens;
    ++conn_->in_flight;
    state_.CallsInFlight(1);

    LoopState* st = &state_;
    KjInbox::Sender inbox = state_.inbox.sender();
    InferCallback done = [inbox, st, id](StatusOr<RequestResult> result) {
      inbox.Post([st, id, result = std::move(result)]() mutable { (void)AnswerCall(st, id, std::move(result)); });
    };
    TokenCallback on_token;
    if (tokens) {
      on_token = [inbox, st, id](int32_t token) {
        inbox.Post([st, id, token] {
          auto it = st->calls.find(id);
          if (it == st->calls.end() || !it->second.tokens) return;
          it->second.tokens->unsent.push_back(token);
          SendNextToken(st, it->second.tokens);
        });
      };
    }
    const int64_t deadline_us = decoded->timeout_us > 0 ? received_us + decoded->timeout_us : 0;
    const uint64_t cluster_id = state_.cluster->Infer(spec->name, std::move(decoded->input), deadline_us,
                                                      std::move(done), std::move(on_token));
    call.cluster_id = cluster_id;  // `call` is still there: answers come through the inbox, later
    std::shared_ptr<ConnectionCalls> conn = conn_;
    ModelSpec served = *spec;
    return paf.promise
        .then([st, context, served, received_us, deadline_us](Outcome outcome) mutable {
          // Every streamed token delivered: a sink that stops taking them (its client never
          // returns from `token`) holds the reply until the request's deadline, if it has one.
          kj::Promise<bool> delivered =
              (outcome.tokens ? WhenDelivered(outcome.tokens) : kj::Promise<void>(kj::READY_NOW)).then([] {
                return true;
              });
          if (deadline_us > 0) {
            const int64_t left_us = std::max<int64_t>(deadline_us - st->clock.NowMicros(), 0);
            // From now: afterDelay counts from the loop's last poll.
            delivered = delivered.exclusiveJoin(
                st->timer->atTime(kj::systemPreciseMonotonicClock().now() + left_us * kj::MICROSECONDS)
                    .then([] { return false; }));
          }
          return delivered.then(
              [st, context, served, received_us, result = std::move(outcome.result)](bool in_time) mutable {
                // An answer that is an error already (the request's own DEADLINE_EXCEEDED from the
                // cluster) says what happened; only a result held up by the sink is replaced.
                if (!in_time && result.ok())
                  result = DeadlineExceeded("the request's deadline passed while its client's token sink had not "
                                            "taken every token (a sink whose token() does not return?)");
                // capnp sends no message over the limit: the call would fail with its internal text.
                const int64_t limit = st->options->max_message_bytes;
                const int64_t reply_bytes = result.ok() ? ReplyBytesAtLeast(*result) : 0;
                if (result.ok() && reply_bytes + kReplyOverheadBytes > limit)
                  result = ResourceExhausted(
                      "the answer is " + MiBText(static_cast<double>(reply_bytes)) +
                      " MiB, more than this server's --max-message-bytes (" + MiBText(static_cast<double>(limit)) +
                      " MiB) lets it send; raise --max-message-bytes (and the client's reader limit with it)");
                if (!result.ok()) st->CountError(result.status().code());
                if (result.ok() && result->model_version > 0) served.version = result->model_version;  // a router's
                EncodeReply(result, served, static_cast<uint64_t>(st->clock.NowMicros() - received_us),
                            context.getResults().initReply());
              },
              [st, context, served](kj::Exception&& e) mutable {
                Status status = Unavailable(std::string("streaming a token to the client failed: ") +
                                            e.getDescription().cStr());
                st->CountError(status.code());
                EncodeError(status, context.getResults().initReply().initError());
              });
        })
        .attach(kj::defer([st, conn, id, cluster_id, tokens] {
          --conn->in_flight;
          st->CallsInFlight(-1);
          // Answered or dropped: no more tokens go out (a send on its way finds the stream ended).
          if (tokens && tokens->failed == nullptr) EndStream(*tokens, KJ_EXCEPTION(DISCONNECTED, "the call ended"));
          auto it = st->calls.find(id);
          if (it != st->calls.end()) {  // dropped before the answer: the client cancelled or left
            st->calls.erase(it);
            ++st->stats->client_cancels;
            if (st->options->metrics) st->options->metrics->OnRpcClientCancel();
            st->cluster->Cancel(cluster_id);
          }
        }));
  }

  LoopState& state_;
  std::shared_ptr<ConnectionCalls> conn_;
};

// How long a connection over --max-queued-answer-mib may go without the socket taking any of its
// answers before it is closed as a client that does not read.
constexpr kj::Duration kSlowReaderStall = 2 * kj::SECONDS;

// The connection's stream as its two-party network sees it: before each read, whether the client
// has left more than `limit` bytes of answers unread (QueuedAnswerBytes) and taken none of them
// for kSlowReaderStall. Then the read fails, which closes the connection and cancels its calls,
// as for a client that left. Checked below capnp, so every message counts, also those capnp
// answers without us (unknown methods, bootstraps).
class ReadGate final : public kj::AsyncIoStream {
 public:
  ReadGate(kj::AsyncIoStream& inner, Connection& connection) : inner_(inner), connection_(connection) {}
  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;  // after Connection
  // Writes count as the client's progress once the socket took them (Connection::bytes_written).
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override { return inner_.whenWriteDisconnected(); }
  void shutdownWrite() override { inner_.shutdownWrite(); }
  void abortRead() override { inner_.abortRead(); }
  kj::Maybe<int> getFd() const override { return inner_.getFd(); }

 private:
  kj::AsyncIoStream& inner_;
  Connection& connection_;
};

// One client connection: its stream, its two-party network and its RPC system.
struct Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, LoopState& state, capnp::ReaderOptions options)
      : stream(kj::mv(s)),
        gate(*stream, *this),
        network(gate, capnp::rpc::twoparty::Side::SERVER, options),
        rpc(capnp::makeRpcServer(network, kj::heap<Service>(state, std::make_shared<ConnectionCalls>()))),
        stats(state.stats),
        metrics(state.options->metrics),
        max_queued_answer_bytes(static_cast<size_t>(state.options->max_queued_answer_bytes)),
        timer(*state.timer),
        open(state.connections) {
    open.insert(this);
    ++stats->connections;
    ++stats->connections_total;
    if (metrics) metrics->rpc_connections().Increment();
  }
  ~Connection() {
    open.erase(this);
    --stats->connections;
    if (metrics) metrics->rpc_connections().Decrement();
  }
  // What the messages queued for the client hold in memory. capnp's queue size counts only the
  // words a message uses; each also holds its first segment, 8 KiB unless sized (capnp's
  // SUGGESTED_FIRST_SEGMENT_WORDS): counted as such, or a small answer would count 50 times less
  // than it holds.
  size_t QueuedAnswerBytes() { return network.getCurrentQueueSize() + network.getCurrentQueueCount() * 8192; }
  // Over the limit, and nothing written for kSlowReaderStall: a client that reads, only slower
  // than a burst of answers was made (80 long seq2seq answers at once, 40 MiB), is not one that
  // does not read; it was closed and lost them.
  bool OverQueuedAnswerLimit() {
    const size_t queued = QueuedAnswerBytes();
    if (queued <= max_queued_answer_bytes) {
      over_since = nullptr;
      return false;
    }
    if (over_limit) return true;
    const kj::TimePoint now = timer.now();
    KJ_IF_MAYBE(since, over_since) {
      if (bytes_written != written_when_over) {  // it reads: the clock starts again
        *since = now;
        written_when_over = bytes_written;
        return false;
      }
      if (now - *since < kSlowReaderStall) return false;
    } else {
      over_since = now;
      written_when_over = bytes_written;
      return false;
    }
    // Said, counted and shut once.
    over_limit = true;
    ++stats->slow_reader_disconnects;
    monitoring::LogLine(
        "cellserve rpc: closing a connection whose client does not read its answers (%zu KiB queued, "
        "over the %zu KiB limit, --max-queued-answer-mib, and none taken for %lld s)\n",
        queued >> 10, max_queued_answer_bytes >> 10, static_cast<long long>(kSlowReaderStall / kj::SECONDS));
    // Both directions: the blocked writes fail and the client sees the connection end (a failed
    // read alone leaves the socket open until the network goes).
    Shut();
    return true;
  }
  // Closes the socket both ways: the client sees the end, and the writes still queued fail.
  void Shut() {
    KJ_IF_MAYBE(fd, stream->getFd()) { ::shutdown(*fd, SHUT_RDWR); }
  }
  kj::Own<kj::AsyncIoStream> stream;
  ReadGate gate;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  AtomicStats* stats;
  monitoring::ServingMetrics* metrics;
  size_t max_queued_answer_bytes;
  kj::Timer& timer;
  uint64_t bytes_written = 0;           // taken by the socket
  uint64_t bytes_read = 0;              // from the client
  kj::Maybe<kj::TimePoint> over_since;  // over the limit since, with no write since
  uint64_t written_when_over = 0;
  bool over_limit = false;
  std::unordered_set<Connection*>& open;  // LoopState::connections
};

// Whether no connection has a message waiting to be written.
bool EveryAnswerWritten(const LoopState& state) {
  for (Connection* c : state.connections)
    if (c->network.getCurrentQueueCount() > 0) return false;
  return true;
}

kj::Promise<void> ReadGate::write(const void* buffer, size_t size) {
  return inner_.write(buffer, size).then([this, size] { connection_.bytes_written += size; });
}

kj::Promise<void> ReadGate::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  size_t size = 0;
  for (const auto& piece : pieces) size += piece.size();
  return inner_.write(pieces).then([this, size] { connection_.bytes_written += size; });
}

kj::Promise<size_t> ReadGate::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  if (connection_.OverQueuedAnswerLimit())
    return KJ_EXCEPTION(DISCONNECTED, "the connection is closed: its client does not read the answers");
  return inner_.tryRead(buffer, min_bytes, max_bytes).then([this](size_t n) {
    connection_.bytes_read += n;
    return n;
  });
}

class IgnoreErrors final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&&) override {}  // a connection that broke is simply gone
};

}  // namespace

struct RpcServer::Impl {
  ServingBackend* cluster = nullptr;
  RpcServerOptions options;
  AtomicStats stats;
  std::atomic<int> port{0};
  std::thread thread;
  std::mutex stop_mu;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;  // GUARDED_BY(stop_mu); set while running
  bool stopped = false;                                 // GUARDED_BY(stop_mu)
  // Into the loop (AttachCluster); the state pointer is only dereferenced by posted functions,
  // which run on the loop's thread while the state exists.
  std::optional<KjInbox::Sender> inbox_sender;          // GUARDED_BY(stop_mu)
  LoopState* loop_state = nullptr;                      // GUARDED_BY(stop_mu)

  // Accept failures (loop thread only): failed tries since the last accept that worked; whether
  // this run of failures was said (one is said at most once a minute: descriptors that run out
  // and free up again and again would otherwise write two lines each time); when one last was.
  int64_t accept_failing = 0;
  bool accept_failure_said = false;
  kj::Maybe<kj::TimePoint> accept_failure_said_at;
  int64_t accept_failure_runs_unsaid = 0;
  static constexpr kj::Duration kAcceptFailureLogInterval = 60 * kj::SECONDS;

  kj::Promise<void> AcceptLoop(kj::ConnectionReceiver& listener, kj::TaskSet& connections, LoopState& state,
                               kj::Timer& timer) {
    // evalNow: accept() tries at once and throws there, not through the promise, on a failure.
    auto accepted = kj::evalNow([&listener] { return listener.accept(); });
    return accepted.then(
        [this, &listener, &connections, &state, &timer](kj::Own<kj::AsyncIoStream> stream) {
          if (accept_failing > 0 && accept_failure_said)
            monitoring::LogLine("cellserve rpc: accepting connections again (after %lld failed tries)\n",
                                static_cast<long long>(accept_failing));
          accept_failing = 0;
          Accepted(kj::mv(stream), connections, state);
          return AcceptLoop(listener, connections, state, timer);
        },
        // Out of file descriptors (EMFILE: `ulimit -n` below --max-connections plus what the
        // process holds), or of memory: the listening socket is fine and the connection waits in
        // its backlog. Serve the open connections, try again shortly, and say so (once a minute).
        [this, &listener, &connections, &state, &timer](kj::Exception&& e) {
          ++stats.accept_failures;
          if (accept_failing++ == 0) {
            const kj::TimePoint now = timer.now();
            bool due = true;
            KJ_IF_MAYBE(at, accept_failure_said_at) { due = now - *at >= kAcceptFailureLogInterval; }
            accept_failure_said = due;
            if (!due) {
              ++accept_failure_runs_unsaid;
            } else {
              const std::string unsaid =
                  accept_failure_runs_unsaid == 0
                      ? ""
                      : " (and " + std::to_string(accept_failure_runs_unsaid) + " time(s) since the last such line, unsaid)";
              monitoring::LogLine(
                  "cellserve rpc: cannot accept connections (%s); trying again every 100 ms. Out of file "
                  "descriptors? Raise `ulimit -n` above --max-connections%s\n",
                  e.getDescription().cStr(), unsaid.c_str());
              accept_failure_said_at = now;
              accept_failure_runs_unsaid = 0;
            }
          }
          return timer.afterDelay(100 * kj::MILLISECONDS).then([this, &listener, &connections, &state, &timer] {
            return AcceptLoop(listener, connections, state, timer);
          });
        });
  }

  void Accepted(kj::Own<kj::AsyncIoStream> stream, kj::TaskSet& connections, LoopState& state) {
    if (stats.connections.load() >= options.max_connections) {
      ++stats.connections_refused;  // dropping the stream closes it
      if (options.metrics) options.metrics->OnRpcConnectionRefused();
    } else {
      ApplyTcpKeepalive(*stream, options.keepalive);
      capnp::ReaderOptions reader;
      reader.traversalLimitInWords = static_cast<uint64_t>(options.max_message_bytes) / 8;
      auto connection = kj::heap<Connection>(kj::mv(stream), state, reader);
      auto gone = connection->network.onDisconnect();
      // Nothing within the first-message timeout (not even a bootstrap): closed, so that idle
      // sockets cannot hold every connection slot (1,000 of them locked every client out).
      Connection* raw = connection.get();
      AtomicStats* counts = &stats;
      auto silent = state.timer->afterDelay(options.first_message_timeout_ms * kj::MILLISECONDS)
                        .then([raw, counts]() -> kj::Promise<void> {
                          if (raw->bytes_read > 0) return kj::NEVER_DONE;
                          ++counts->silent_closes;
                          return kj::READY_NOW;
                        });
      connections.add(gone.exclusiveJoin(kj::mv(silent)).attach(kj::mv(connection)));
    }
  }

  // Resolves once `done()` holds (checked every 10 ms), or at `deadline`.
  static kj::Promise<void> PollUntil(kj::Timer& timer, kj::TimePoint deadline, std::function<bool()> done) {
    if (done() || timer.now() >= deadline) return kj::READY_NOW;
    return timer.afterDelay(10 * kj::MILLISECONDS).then([&timer, deadline, done = std::move(done)]() mutable {
      return PollUntil(timer, deadline, std::move(done));
    });
  }

  // `started` is shared with Start, which may go on (and drop its reference) while set_value
  // is still waking it up.
  void Loop(std::shared_ptr<std::promise<Status>> started) {
    NameThisThread("cs-rpc");
    kj::AsyncIoContext io = kj::setupAsyncIo();
    // Check the sockets every 16 events even while answers keep the queue busy.
    io.waitScope.setBusyPollInterval(16);
    LoopState state;
    if (cluster) rpc::AttachCluster(state, cluster);
    state.options = &options;
    state.stats = &stats;
    state.timer = &io.provider->getTimer();
    kj::Promise<void> inbox = state.inbox.Run().eagerlyEvaluate(nullptr);
    {
      std::lock_guard<std::mutex> lock(stop_mu);
      loop_state = &state;
      inbox_sender.emplace(state.inbox.sender());
    }

    kj::Own<kj::ConnectionReceiver> listener;
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                  auto address = io.provider->getNetwork().parseAddress(options.listen).wait(io.waitScope);
                  listener = address->listen();
                })) {
      std::string why = e->getDescription().cStr();
      if (why.find("Address already in use") != std::string::npos)  // kj adds its bind() call and more
        why = "the port is in use by another process (choose another with --listen; port 0 takes any free one)";
      started->set_value(Unavailable("cannot listen on " + options.listen + ": " + why));
      return;
    }
    port = static_cast<int>(listener->getPort());
    auto stop_paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    {
      std::lock_guard<std::mutex> lock(stop_mu);
      stop = kj::mv(stop_paf.fulfiller);
    }
    started->set_value(OkStatus());

    IgnoreErrors ignore;
    auto connections = kj::heap<kj::TaskSet>(ignore);
    auto token_sends = kj::heap<kj::TaskSet>(ignore);
    state.token_sends = token_sends.get();
    {
      kj::Promise<void> accepting = AcceptLoop(*listener, *connections, state, io.provider->getTimer());
      stop_paf.promise.exclusiveJoin(kj::mv(accepting)).wait(io.waitScope);
    }
    listener = nullptr;  // no new connections
    kj::Timer& timer = io.provider->getTimer();
    const kj::TimePoint grace_ends = timer.now() + options.stop_grace_ms * kj::MILLISECONDS;
    PollUntil(timer, grace_ends, [this] { return stats.calls_in_flight.load() == 0; }).wait(io.waitScope);
    // The answers go out before the connections close: within the grace (50 ms at least), until
    // every connection's queue is written. A client that does not read them by then loses them.
    PollUntil(timer, std::max(grace_ends, timer.now() + 50 * kj::MILLISECONDS), [&state] {
      return EveryAnswerWritten(state);
    }).wait(io.waitScope);
    // Calls still unanswered: out of the table first, so that closing their connections below is
    // not taken for their clients' doing (it counts a cancel and cancels only what is in it). Their
    // requests are cancelled in the cluster (answers posted into the inbox are dropped), then every
    // connection closes (their clients see the close).
    std::unordered_map<uint64_t, PendingCall> unanswered;
    unanswered.swap(state.calls);
    if (state.cluster)
      for (const auto& [id, call] : unanswered) state.cluster->Cancel(call.cluster_id);
    // Sockets first: the writes still queued fail, one event-loop turn each. A connection
    // destroyed with a long queue frees it as one recursive chain, stack frames per message
    // (about 78k unread answers overflowed this thread's stack).
    for (Connection* c : state.connections) c->Shut();
    PollUntil(timer, timer.now() + 2 * kj::SECONDS, [&state] { return EveryAnswerWritten(state); })
        .wait(io.waitScope);
    state.token_sends = nullptr;  // the tokens still on their way are dropped with their calls
    token_sends = nullptr;
    connections = nullptr;
    // Calls of those connections are cancelled on the loop's next turns; their clean-up uses
    // `state`, so it runs now, not in the event loop's destructor after `state` is gone.
    io.waitScope.poll();
    state.inbox.Close();
    state.reporter.reset();
    state.health_waiters.clear();
  }
};

RpcServer::RpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RpcServer::~RpcServer() { Stop(); }

StatusOr<std::unique_ptr<RpcServer>> RpcServer::Start(ServingBackend* cluster, RpcServerOptions options) {
  if (options.max_queued_answer_bytes < (64 << 10))
    return InvalidArgument("max_queued_answer_bytes must be at least 64 KiB");
  if (options.max_calls_per_connection < 1 || options.max_connections < 1 || options.max_message_bytes < 1024 ||
      options.limits.max_tokens < 1 || options.stop_grace_ms < 0 || options.first_message_timeout_ms < 1)
    return InvalidArgument(
        "max_calls_per_connection, max_connections, max_tokens and first_message_timeout_ms must be >= 1, "
        "max_message_bytes >= 1024, stop_grace_ms >= 0");
  auto impl = std::make_unique<Impl>();
  impl->cluster = cluster;
  impl->options = std::move(options);
  auto started = std::make_shared<std::promise<Status>>();
  std::future<Status> ready = started->get_future();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw, started] { raw->Loop(started); });
  Status status = ready.get();
  if (!status.ok()) {
    impl->thread.join();
    return status;
  }
  return std::unique_ptr<RpcServer>(new RpcServer(std::move(impl)));
}

Status RpcServer::AttachCluster(ServingBackend* cluster) {
  if (!cluster) return InvalidArgument("AttachCluster needs a cluster");
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> attached = done->get_future();
  {
    std::lock_guard<std::mutex> lock(impl_->stop_mu);
    if (impl_->stopped || !impl_->inbox_sender) return Unavailable("the RPC server is stopped");
    if (impl_->cluster) return InvalidArgument("the RPC server has a cluster already");
    impl_->cluster = cluster;
    LoopState* state = impl_->loop_state;
    // The task holds the only reference to `done`: dropped unrun (Stop closed the inbox first), it
    // breaks the promise, which the wait below reads.
    if (!impl_->inbox_sender->Post([state, cluster, done = std::move(done)] {
          rpc::AttachCluster(*state, cluster);
          done->set_value();
        }))
      return Unavailable("the RPC server is stopping");
  }
  if (attached.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
    return Internal("the RPC server's loop did not take the cluster within 30 s");
  try {
    attached.get();  // a broken promise: Stop closed the inbox before the task ran
  } catch (const std::future_error&) {
    return Unavailable("the RPC server stopped before it took the cluster");
  }
  return OkStatus();
}

int RpcServer::port() const { return impl_->port.load(); }

RpcServerStats RpcServer::stats() const {
  const AtomicStats& a = impl_->stats;
  RpcServerStats s;
  s.connections = a.connections.load();
  s.connections_total = a.connections_total.load();
  s.connections_refused = a.connections_refused.load();
  s.accept_failures = a.accept_failures.load();
  s.calls_in_flight = a.calls_in_flight.load();
  s.calls_total = a.calls_total.load();
  s.client_cancels = a.client_cancels.load();
  s.slow_reader_disconnects = a.slow_reader_disconnects.load();
  s.tokens_streamed = a.tokens_streamed.load();
  s.silent_closes = a.silent_closes.load();
  for (size_t i = 0; i < s.errors_by_code.size(); ++i) s.errors_by_code[i] = a.errors_by_code[i].load();
  return s;
}

void RpcServer::Stop() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->stop_mu);
    if (impl_->stopped) return;
    impl_->stopped = true;
    if (impl_->stop) impl_->stop->fulfill();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace cellserve::rpc
