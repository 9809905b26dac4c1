// rpc::Client against a fake Cellserve server on its own thread (no cluster): address parsing,
// connect failures, every call's decoding, streamed tokens, error replies, client-side bounds and
// a lost connection.
#include "schema/client.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include <capnp/ez-rpc.h>

#include <gtest/gtest.h>

#include "schema/cellserve.capnp.h"
#include "tests/unit/common/dead_end_listeners.h"

namespace cellserve::rpc {
namespace {

// Answers by model name: "echo" -> label = #tokens, logits = tokens, timeoutMs and
// maxDecodeLength in serverMicros (ms * 1000 + len); "tree" -> label = #nodes; "seq" -> pushes
// tokens 10, 11, 12 to the sink (inferStream) and answers them; "bad" -> INVALID_ARGUMENT;
// "throw" -> a kj exception; "hang" -> never answers.
std::atomic<int> g_hangs_cancelled{0};

class FakeCellserve final : public Cellserve::Server {
 protected:
  kj::Promise<void> infer(InferContext context) override {
    if (context.getParams().getRequest().getModel() == "hang") {
      context.allowCancellation();  // capnp 0.9 cancels a call only when its server allows it
      return kj::Promise<void>(kj::NEVER_DONE).attach(kj::defer([] { ++g_hangs_cancelled; }));
    }
    return Answer(context.getParams().getRequest(), nullptr, context.getResults().initReply());
  }
  kj::Promise<void> inferStream(InferStreamContext context) override {
    auto params = context.getParams();
    return Answer(params.getRequest(), params.getSink(), context.getResults().initReply());
  }
  kj::Promise<void> models(ModelsContext context) override {
    ModelSpec a;
    a.name = "sentiment";
    a.kind = cellserve::ModelKind::kLstm;
    a.vocab_size = 32000;
    a.hidden = 64;
    a.classes = 2;
    ModelSpec b = a;
    b.name = "translate";
    b.version = 3;
    b.kind = cellserve::ModelKind::kSeq2Seq;
    b.classes = 0;
    b.target_vocab_size = 500;
    auto list = context.getResults().initModels(2);
    EncodeModelInfo(a, list[0]);
    EncodeModelInfo(b, list[1]);
    return kj::READY_NOW;
  }
  kj::Promise<void> health(HealthContext context) override {
    auto h = context.getResults().initHealth();
    h.setState(ServingState::DRAINING);
    h.setProtocolVersion(PROTOCOL_VERSION);
    h.setRequestsInFlight(5);
    h.setAccepted(100);
    h.setRejected(2);
    h.setDevices(4);
    return kj::READY_NOW;
  }

 private:
  kj::Promise<void> Answer(InferRequest::Reader request, kj::Maybe<TokenSink::Client> maybe_sink,
                          InferReply::Builder reply) {
    const std::string model = request.getModel();
    if (model == "hang") return kj::NEVER_DONE;
    if (model == "throw") KJ_FAIL_REQUIRE("fake server failure");
    if (model == "bad") {
      auto e = reply.initError();
      e.setCode(ErrorCode::INVALID_ARGUMENT);
      e.setMessage("token 99 is outside the vocabulary");
      return kj::READY_NOW;
    }
    auto r = reply.initResult();
    r.setModel(model);
    r.setVersion(1);
    if (model == "seq") {
      auto tokens = r.initTokens(3);
      for (int i = 0; i < 3; ++i) tokens.set(i, 10 + i);
      TokenSink::Client* sink_ptr = nullptr;
      KJ_IF_MAYBE(s, maybe_sink) { sink_ptr = s; }
      if (sink_ptr == nullptr) return kj::READY_NOW;
      TokenSink::Client sink = *sink_ptr;
      kj::Promise<void> pushed = kj::READY_NOW;
      for (int i = 0; i < 3; ++i) {
        pushed = pushed.then([sink, i]() mutable {
          auto call = sink.tokenRequest();
          call.setIndex(i);
          call.setToken(10 + i);
          return call.send();
        });
      }
      return pushed;
    }
    if (request.getInput().isTree()) {
      r.setLabel(static_cast<int32_t>(request.getInput().getTree().getNodes().size()));
      return kj::READY_NOW;
    }
    auto tokens = request.getInput().getTokens();
    r.setLabel(static_cast<int32_t>(tokens.size()));
    auto logits = r.initLogits(tokens.size());
    for (unsigned i = 0; i < tokens.size(); ++i) logits.set(i, static_cast<float>(tokens[i]));
    r.setServerMicros(uint64_t{request.getOptions().getTimeoutMs()} * 1000 +
                      request.getOptions().getMaxDecodeLength());
    return kj::READY_NOW;
  }
};

// The fake server on its own thread and kj loop; Stop() (or destruction) closes its connections.
class FakeServer {
 public:
  FakeServer() {
    thread_ = std::thread([this] {
      capnp::EzRpcServer server(kj::heap<FakeCellserve>(), "127.0.0.1", 0);
      auto& scope = server.getWaitScope();
      const unsigned port = server.getPort().wait(scope);
      auto stop = kj::newPromiseAndFulfiller<void>();
      {
        std::lock_guard<std::mutex> lock(mu_);
        port_ = port;
        stop_ = kj::mv(stop.fulfiller);
        executor_ = kj::getCurrentThreadExecutor().addRef();
      }
      cv_.notify_all();
      stop.promise.wait(scope);
      stop_ = nullptr;
    });
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return port_ != 0; });
  }
  ~FakeServer() { Stop(); }
  void Stop() {
    if (!thread_.joinable()) return;
    executor_->executeSync([this] { stop_->fulfill(); });
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned port_ = 0;
  kj::Own<kj::PromiseFulfiller<void>> stop_;
  kj::Own<const kj::Executor> executor_;
};

TEST(ParseHostPortTest, AcceptsNamesIpv4AndBracketedIpv6) {
  auto a = ParseHostPort("127.0.0.1:7410");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7410);
  auto b = ParseHostPort("localhost:1");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "localhost");
  EXPECT_EQ(b->port, 1);
  auto c = ParseHostPort("[::1]:65535");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 65535);
}

TEST(ParseHostPortTest, NamesTheProblem) {
  struct Case {
    const char* text;
    const char* says;
  };
  for (const Case& c : {Case{"", "empty"}, Case{"localhost", "no port"}, Case{":7410", "no host"},
                        Case{"h:", "not a number"}, Case{"h:74x", "not a number"}, Case{"h:0", "[1, 65535]"},
                        Case{"h:70000", "[1, 65535]"}, Case{"::1:80", "brackets"}, Case{"[::1]", "[::1]:7410"},
                        Case{"[::1]80", "[::1]:7410"}}) {
    auto r = ParseHostPort(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << c.text << ": " << r.status().message();
  }
}

TEST(ClientTest, RefusedConnectionIsUnavailableAndSaysWhatToRun) {
  std::string address;
  {
    testutil::DeadEndListener closed = testutil::DeadEndListener::Silent();  // a port free a moment ago
    address = closed.address();
  }
  auto c = Client::Connect(address, 2000);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.status().message().find("cannot connect to " + address + ": connection refused"), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find("cellserve serve --listen"), std::string::npos);
}

// A name that does not resolve: said as such, with the resolver's own words and nothing of kj's.
TEST(ClientTest, AnUnknownHostIsNamedWithTheResolversReason) {
  auto c = Client::Connect("no-such-host.invalid:7410", 5000);
  ASSERT_FALSE(c.ok());
  const std::string& m = c.status().message();
  const std::string want = "unknown host 'no-such-host.invalid' (";
  const size_t at = m.find(want);
  ASSERT_NE(at, std::string::npos) << m;
  const size_t close = m.find(')', at + want.size());
  ASSERT_NE(close, std::string::npos) << m;
  const std::string reason = m.substr(at + want.size(), close - at - want.size());
  EXPECT_FALSE(reason.empty()) << m;
  EXPECT_EQ(reason.find(';'), std::string::npos) << "kj's text leaked into the reason: " << m;
  EXPECT_EQ(reason.find("gai_strerror"), std::string::npos) << m;
}

TEST(ClientTest, BadAddressIsInvalidArgument) {
  auto c = Client::Connect("nowhere");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
}

// A call of `model` with `tokens`.
InferCall CallOf(const std::string& model, std::vector<int32_t> tokens) {
  InferCall call;
  call.model = model;
  call.input.tokens = std::move(tokens);
  return call;
}

TEST(ClientTest, SilentServerHitsTheClientSideBound) {
  // A listener that never accepts: connects succeed, calls get no answer.
  testutil::DeadEndListener silent = testutil::DeadEndListener::Silent();
  ASSERT_GT(silent.port(), 0);
  auto c = Client::Connect(silent.address(), 2000);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto h = (*c)->Health(200);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(h.status().message().find("health"), std::string::npos);
}

TEST(ClientTest, OneClientPerThread) {
  FakeServer server;
  auto a = Client::Connect(server.address());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = Client::Connect(server.address());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInternal);
  a->reset();
  auto c = Client::Connect(server.address());
  EXPECT_TRUE(c.ok()) << c.status().ToString();
}

TEST(ClientTest, ModelsAndHealth) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto models = (*c)->Models();
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name, "sentiment");
  EXPECT_EQ((*models)[0].kind, cellserve::ModelKind::kLstm);
  EXPECT_EQ((*models)[0].vocab_size, 32000);
  EXPECT_EQ((*models)[1].version, 3);
  EXPECT_EQ((*models)[1].kind, cellserve::ModelKind::kSeq2Seq);
  EXPECT_EQ((*models)[1].target_vocab_size, 500);

  auto h = (*c)->Health();
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->state, ServingState::DRAINING);
  EXPECT_FALSE(h->serving());
  EXPECT_EQ(h->protocol_version, PROTOCOL_VERSION);
  EXPECT_EQ(h->requests_in_flight, 5);
  EXPECT_EQ(h->accepted, 100);
  EXPECT_EQ(h->rejected, 2);
  EXPECT_EQ(h->devices, 4u);
}

TEST(ClientTest, AHugeTimeoutMeansNoLimitNotAnImmediateTimeout) {
  // 1e13 ms in kj's nanosecond Durations wrapped negative: the timeout fired at once.
  FakeServer server;
  constexpr int64_t kHuge = 10'000'000'000'000;
  auto c = Client::Connect(server.address(), kHuge);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto h = (*c)->Health(kHuge);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto models = (*c)->Models(std::numeric_limits<int64_t>::max());
  ASSERT_TRUE(models.ok()) << models.status().ToString();
}

TEST(ClientTest, InferSendsTokensOptionsAndTrees) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  InferCall call = CallOf("echo", {4, 5, 6});
  call.timeout_us = 1500;  // rounded up to 2 ms
  call.max_decode_len = 7;
  auto r = (*c)->Infer(call);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->model, "echo");
  EXPECT_EQ(r->version, 1u);
  EXPECT_EQ(r->result.label, 3);
  EXPECT_EQ(r->result.logits, (std::vector<float>{4, 5, 6}));
  EXPECT_EQ(r->server_micros, 2007u);

  call.model = "tree";
  auto tree = ParseTreeSexpr("((4 5) 6)");
  ASSERT_TRUE(tree.ok());
  call.input.tree = *tree;
  call.input.has_tree = true;
  r = (*c)->Infer(call);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->result.label, 5);
}

TEST(ClientTest, StreamedTokensArriveInOrderBeforeTheReply) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::pair<uint32_t, int32_t>> seen;
  InferCall call = CallOf("seq", {4});
  call.on_token = [&seen](uint32_t i, int32_t t) { seen.emplace_back(i, t); };
  auto r = (*c)->Infer(call);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->result.tokens, (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(seen, (std::vector<std::pair<uint32_t, int32_t>>{{0, 10}, {1, 11}, {2, 12}}));
}

TEST(ClientTest, ErrorRepliesAndExceptionsBecomeStatuses) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  InferCall call = CallOf("bad", {99});
  auto r = (*c)->Infer(call);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "token 99 is outside the vocabulary");

  call.model = "throw";
  r = (*c)->Infer(call);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("fake server failure"), std::string::npos) << r.status().message();
  EXPECT_FALSE((*c)->disconnected());

  call.model = "hang";
  call.client_timeout_ms = 100;
  r = (*c)->Infer(call);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
}

// The client-side bound counts from the call, not from the loop's last poll: a caller that did
// 600 ms of its own work after its last call still waits its 400 ms (before, none at all).
TEST(ClientTest, TheClientSideBoundCountsFromTheCall) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE((*c)->Health().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // the caller's own work
  InferCall call = CallOf("hang", {1});
  call.client_timeout_ms = 400;
  const auto start = std::chrono::steady_clock::now();
  auto r = (*c)->Infer(call);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_GE(took, std::chrono::milliseconds(390)) << "given up on before its bound";
}

// A deadline that has passed already (what is left of a caller's own budget, below 0) is
// DEADLINE_EXCEEDED at once: on the wire a timeout <= 0 means none, and it would run unbounded.
TEST(ClientTest, ANegativeTimeoutIsDeadlineExceededNotNoDeadline) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  InferCall call = CallOf("hang", {1});
  call.timeout_us = -1000;
  call.client_timeout_ms = 5000;
  const auto start = std::chrono::steady_clock::now();
  auto r = (*c)->Infer(call);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1)) << "it was sent";
}

// An on_token callback that throws ends the call: INTERNAL naming the callback's exception, not
// the server's account of the failed token call.
TEST(ClientTest, AnOnTokenCallbackThatThrowsEndsTheCallWithItsOwnError) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  InferCall call = CallOf("seq", {1});
  int seen = 0;
  call.on_token = [&](uint32_t, int32_t) {
    ++seen;
    throw std::runtime_error("boom in my callback");
  };
  auto r = (*c)->Infer(call);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal) << r.status().ToString();
  EXPECT_NE(r.status().message().find("the on_token callback threw: boom in my callback"), std::string::npos)
      << r.status().message();
  EXPECT_EQ(seen, 1) << "called again after it threw";
  EXPECT_FALSE((*c)->disconnected());
}

TEST(ClientTest, ManyCallsInFlightOnOneThread) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  std::vector<kj::Promise<StatusOr<ReplyValue>>> pending;
  for (int i = 1; i <= 500; ++i) {
    InferCall call;
    call.model = "echo";
    call.input.tokens.assign(static_cast<size_t>(i % 7 + 1), 4);
    pending.push_back((*c)->InferAsync(call));
  }
  for (int i = 1; i <= 500; ++i) {
    auto r = pending[static_cast<size_t>(i - 1)].wait((*c)->wait_scope());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->result.label, i % 7 + 1);
  }
}

TEST(ClientTest, DroppingAPromiseCancelsTheCall) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  InferCall call = CallOf("hang", {4});
  const int before = g_hangs_cancelled.load();
  {
    auto pending = (*c)->InferAsync(call);
    ASSERT_TRUE((*c)->Health().ok());  // the call has reached the server
  }
  ASSERT_TRUE((*c)->Health().ok());  // calls on one connection are delivered in order: Finish was
  EXPECT_EQ(g_hangs_cancelled.load(), before + 1);
}

TEST(ClientTest, LostConnectionIsUnavailable) {
  FakeServer server;
  auto c = Client::Connect(server.address());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  InferCall call = CallOf("hang", {4});
  auto pending = (*c)->InferAsync(call);
  ASSERT_TRUE((*c)->Health().ok());  // the hanging call has reached the server
  auto lost = (*c)->WhenDisconnected();
  server.Stop();
  lost.wait((*c)->wait_scope());
  auto r = pending.wait((*c)->wait_scope());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("lost"), std::string::npos) << r.status().message();
  EXPECT_TRUE((*c)->disconnected());
  auto h = (*c)->Health();
  EXPECT_EQ(h.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cellserve::rpc
