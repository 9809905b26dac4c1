// RpcServer with a real LocalCluster in this process, the client on the test thread: a call the
// client drops on a live connection is cancelled in the cluster (its cells and slots freed), the
// per-connection call limit answers RESOURCE_EXHAUSTED, results equal the in-process path, and
// Stop with calls in flight returns. Every wait is bounded.
#include "actors/local_cluster.h"
#include "schema/rpc_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/io.h>

#include "../common/open_fds.h"
#include "../common/temp_model_repo.h"
#include "../common/wait_for.h"
#include "monitoring/log.h"
#include "monitoring/metrics.h"
#include "runtime/model_repository.h"
#include "schema/cellserve.capnp.h"
#include "schema/client.h"

namespace cellserve::rpc {
namespace {


// A repository with one lstm big enough that a 1000-token request takes a while (tens of ms).
// Two layers: the second one's input is not a token, so folding (kernels/cpu/cell_weights.h)
// cannot take half the work away (one folded layer ran 4000 tokens in under 50 ms).
class Repo : public testutil::TempModelRepo {
 public:
  Repo() : TempModelRepo("cellserve_rpc_server_test") {
    ModelSpec spec;
    spec.name = "slow";
    spec.kind = cellserve::ModelKind::kLstm;
    spec.vocab_size = 1000;
    spec.embed_dim = 256;
    spec.hidden = 256;
    spec.layers = 2;
    spec.classes = 3;
    spec.max_input_tokens = 4096;
    Write(spec, 5);
  }
};

RequestInput Tokens(int n) {
  RequestInput in;
  for (int i = 0; i < n; ++i) in.tokens.push_back(4 + (i * 37) % 900);
  return in;
}

// A backend whose reports are slow (as a router's can be, asking every node) and counted; they
// wait, too, until Release.
class SlowReports : public ServingBackend {
 public:
  explicit SlowReports(ServingBackend* inner) : inner_(inner), released_(release_.get_future().share()) {}
  void Release() { release_.set_value(); }
  uint64_t Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                 TokenCallback on_token) override {
    return inner_->Infer(model, std::move(input), deadline_us, std::move(done), std::move(on_token));
  }
  void Cancel(uint64_t id) override { inner_->Cancel(id); }
  ClusterReport Report() const override {
    ++reports;
    released_.wait();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return inner_->Report();
  }
  std::vector<ModelSpec> Models() const override { return inner_->Models(); }
  ClusterState state() const override { return inner_->state(); }
  mutable std::atomic<int> reports{0};

 private:
  ServingBackend* inner_;
  std::promise<void> release_;
  std::shared_future<void> released_;
};

// A backend that lists two versions of each model (as a router does part way through an
// upgrade), says version 2 ran every request it was not asked another version for, and keeps the
// version each request asked for.
class TwoVersions : public ServingBackend {
 public:
  explicit TwoVersions(ServingBackend* inner) : inner_(inner) {}
  uint64_t Infer(const std::string& model, RequestInput input, int64_t deadline_us, InferCallback done,
                 TokenCallback on_token) override {
    const int64_t asked = input.model_version;
    asked_.push_back(asked);
    return inner_->Infer(
        model, std::move(input), deadline_us,
        [asked, done = std::move(done)](StatusOr<RequestResult> r) {
          if (r.ok()) r->model_version = asked != 0 ? asked : 2;
          done(std::move(r));
        },
        std::move(on_token));
  }
  void Cancel(uint64_t id) override { inner_->Cancel(id); }
  ClusterReport Report() const override { return inner_->Report(); }
  std::vector<ModelSpec> Models() const override {
    std::vector<ModelSpec> out;
    for (ModelSpec spec : inner_->Models()) {
      out.push_back(spec);
      spec.version = 2;
      out.push_back(spec);
    }
    return out;
  }
  ClusterState state() const override { return inner_->state(); }
  std::vector<int64_t> asked_;  // the loop thread's; read after the calls

 private:
  ServingBackend* inner_;
};

StatusOr<RequestResult> RunLocal(LocalCluster& cluster, const RequestInput& in) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<StatusOr<RequestResult>> answer;
  cluster.Infer("slow", in, 0, [&](StatusOr<RequestResult> r) {
    std::lock_guard<std::mutex> lock(mu);
    answer = std::move(r);
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_for(lock, std::chrono::seconds(60), [&] { return answer.has_value(); }))
    return Internal("no answer in 60 s");
  return std::move(*answer);
}

// A cluster of one device serving `repo` (nullptr, with a test failure, if it does not start).
std::unique_ptr<LocalCluster> StartOneDeviceCluster(const std::string& repo) {
  LocalClusterOptions options;
  options.model_repo = repo;
  options.devices = 1;
  auto cluster = LocalCluster::Start(options);
  EXPECT_TRUE(cluster.ok()) << cluster.status().ToString();
  return cluster.ok() ? std::move(cluster).value() : nullptr;
}

class RpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = StartOneDeviceCluster(repo_.dir());
    ASSERT_TRUE(cluster_);
  }
  std::unique_ptr<RpcServer> StartServer(RpcServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    auto server = RpcServer::Start(cluster_.get(), options);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    return server.ok() ? std::move(server).value() : nullptr;
  }
  std::unique_ptr<Client> Connect(const RpcServer& server) {
    auto client = Client::Connect("127.0.0.1:" + std::to_string(server.port()));
    EXPECT_TRUE(client.ok()) << client.status().ToString();
    return client.ok() ? std::move(client).value() : nullptr;
  }
  // Waits (bounded) until the cluster holds no request and no slot.
  bool ClusterIdle() {
    for (int i = 0; i < 600; ++i) {
      ClusterReport r = cluster_->Report();
      int64_t in = 0, slots = 0;
      for (const DeviceReport& d : r.devices) {
        in += d.requests_in;
        slots += d.slots_in_use;
      }
      if (in == 0 && slots == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Waits (bounded) until the cluster has answered `n` requests, and returns its report. A worker
  // lets go of a cancelled request before the request actor hears it and counts the answer, so
  // ClusterIdle() can be true a moment before the count moves.
  ClusterReport WaitForAnswers(int64_t n) {
    ClusterReport r;
    testutil::WaitFor(
        [&] {
          r = cluster_->Report();
          return r.completed + r.failed + r.rejected >= n;
        },
        std::chrono::seconds(6));
    return r;
  }

  Repo repo_;
  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(RpcServerTest, ResultsEqualTheInProcessPath) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  for (int n : {1, 7, 40}) {
    InferCall call;
    call.model = "slow";
    call.input = Tokens(n);
    auto rpc = client->Infer(call);
    auto local = RunLocal(*cluster_, Tokens(n));
    ASSERT_TRUE(rpc.ok()) << rpc.status().ToString();
    ASSERT_TRUE(local.ok()) << local.status().ToString();
    EXPECT_EQ(rpc->result.logits, local->logits);  // bitwise: the same kernels, batch-invariant
    EXPECT_EQ(rpc->result.label, local->label);
    EXPECT_EQ(rpc->model, "slow");
  }
}

// A streamed call with a client-side bound (`infer --stream --timeout-ms`): answered like any
// other. Its continuation once read a handler from InferAsync's returned frame, and every such
// call failed "event loop failed: std::bad_alloc".
TEST_F(RpcServerTest, AStreamedCallWithAClientBoundIsAnswered) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 20; ++i) {
    InferCall call;
    call.model = "slow";
    call.input = Tokens(5 + i);
    call.timeout_us = 20'000'000;
    call.client_timeout_ms = 20'000;
    call.on_token = [](uint32_t, int32_t) {};
    auto streamed = client->Infer(call);
    ASSERT_TRUE(streamed.ok()) << "call " << i << ": " << streamed.status().ToString();
    call.on_token = nullptr;
    auto plain = client->Infer(call);
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    EXPECT_EQ(streamed->result.logits, plain->result.logits);
  }
}

TEST_F(RpcServerTest, ACallDroppedOnALiveConnectionIsCancelledInTheCluster) {
  monitoring::ServingMetrics metrics;
  RpcServerOptions options;
  options.metrics = &metrics;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  InferCall call;
  call.model = "slow";
  call.input = Tokens(4000);  // a few hundred ms of cells at least
  call.client_timeout_ms = 30;
  auto dropped = client->Infer(call);
  ASSERT_EQ(dropped.status().code(), StatusCode::kDeadlineExceeded) << dropped.status().ToString();
  // The connection lives on: the next call works, and the dropped one left nothing behind.
  auto health = client->Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_TRUE(health->serving());
  EXPECT_EQ(health->reason, "") << "a serving server has nothing to explain";
  EXPECT_TRUE(ClusterIdle()) << "the dropped request still holds cells or slots";
  EXPECT_EQ(server->stats().client_cancels, 1);
  EXPECT_EQ(server->stats().calls_in_flight, 0);
  const std::string text = metrics.Serialize();
  EXPECT_NE(text.find("\ncellserve_rpc_client_cancels_total 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\ncellserve_rpc_calls_in_flight 0\n"), std::string::npos) << text;
  ClusterReport r = WaitForAnswers(1);
  EXPECT_EQ(r.failed, 1) << "answered CANCELLED inside the cluster";
  EXPECT_EQ(r.completed, 0) << "it was not run to the end";
}

// A backend serving several versions (a router) gets the version asked for with the request, and
// the reply names the version that ran it, not the first one listed.
TEST_F(RpcServerTest, TheReplyNamesTheVersionThatRanTheRequest) {
  TwoVersions backend(cluster_.get());
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = RpcServer::Start(&backend, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = Connect(**server);
  ASSERT_NE(client, nullptr);
  InferCall call;
  call.model = "slow";
  call.input = Tokens(3);
  auto any = client->Infer(call);
  ASSERT_TRUE(any.ok()) << any.status().ToString();
  EXPECT_EQ(any->version, 2u) << "the backend ran version 2; version 1 is only listed first";
  call.version = 1;
  auto first = client->Infer(call);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->version, 1u);
  call.version = 3;
  auto missing = client->Infer(call);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  EXPECT_NE(missing.status().message().find("versions 1, 2"), std::string::npos) << missing.status().message();
  (*server)->Stop();
  EXPECT_EQ(backend.asked_, (std::vector<int64_t>{0, 1})) << "the version asked for goes with the request";
}

// Call parameters whose request pointer is a list, not a struct (an encoder bug in another
// language's client): an INVALID_ARGUMENT reply, counted, not a failed call the client would
// retry; the connection goes on.
TEST_F(RpcServerTest, MalformedCallParametersAreAnInvalidArgumentReply) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  kj::AsyncIoContext io = kj::setupAsyncIo();
  auto address = io.provider->getNetwork().parseAddress("127.0.0.1", static_cast<unsigned int>(server->port()))
                     .wait(io.waitScope);
  auto stream = address->connect().wait(io.waitScope);
  capnp::TwoPartyClient rpc(*stream);
  auto cellserve = rpc.bootstrap().castAs<Cellserve>();
  auto call = cellserve.inferRequest();
  capnp::AnyStruct::Builder(kj::mv(static_cast<Cellserve::InferParams::Builder&>(call)))
      .getPointerSection()[0]
      .initAs<capnp::List<uint8_t>>(3);
  auto response = call.send().wait(io.waitScope);
  ASSERT_TRUE(response.getReply().isError());
  EXPECT_EQ(response.getReply().getError().getCode(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_NE(std::string(response.getReply().getError().getMessage().cStr()).find("malformed"), std::string::npos)
      << response.getReply().getError().getMessage().cStr();
  auto stream_call = cellserve.inferStreamRequest();
  capnp::AnyStruct::Builder(kj::mv(static_cast<Cellserve::InferStreamParams::Builder&>(stream_call)))
      .getPointerSection()[0]
      .initAs<capnp::List<uint8_t>>(3);
  auto stream_response = stream_call.send().wait(io.waitScope);
  ASSERT_TRUE(stream_response.getReply().isError());
  EXPECT_EQ(stream_response.getReply().getError().getCode(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(server->stats().errors_by_code[static_cast<size_t>(StatusCode::kInvalidArgument)], 2);
  auto health = cellserve.healthRequest().send().wait(io.waitScope);
  EXPECT_EQ(health.getHealth().getState(), ServingState::SERVING) << "the connection goes on";
}

// A backend that is starting and knows no model: a router no node has joined (or all have left,
// with two requests still unanswered).
class NoNodesYet : public ServingBackend {
 public:
  uint64_t Infer(const std::string&, RequestInput, int64_t, InferCallback done, TokenCallback) override {
    done(Internal("not to be called"));
    return 1;
  }
  void Cancel(uint64_t) override {}
  ClusterReport Report() const override {
    ClusterReport r;
    r.requests_held = 2;
    return r;
  }
  std::vector<ModelSpec> Models() const override { return {}; }
  ClusterState state() const override { return ClusterState::kStarting; }
  std::string StateReason() const override { return "no node has joined yet"; }
};

// Just after a router restarts, before its nodes register again, a request is UNAVAILABLE (wait
// and retry), not NOT_FOUND (which clients take as final).
TEST(RpcServerNoNodesTest, ARouterWithoutNodesIsUnavailableNotNotFound) {
  NoNodesYet backend;
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = RpcServer::Start(&backend, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  InferCall call;
  call.model = "cls";
  call.input.tokens = {1, 2};
  auto reply = (*client)->Infer(call);
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable) << reply.status().ToString();
  EXPECT_NE(reply.status().message().find("no node is registered with this router"), std::string::npos) << reply.status().message();
  // Its health counts no device (there is none) and the requests it holds.
  auto health = (*client)->Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->state, ServingState::NOT_READY);
  EXPECT_EQ(health->reason, "no node has joined yet") << "health says why it is not ready";
  EXPECT_EQ(health->devices, 0u);
  EXPECT_EQ(health->requests_in_flight, 2);
}

TEST_F(RpcServerTest, ConnectionsOverTheLimitAreClosedAndCounted) {
  monitoring::ServingMetrics metrics;
  RpcServerOptions options;
  options.max_connections = 1;
  options.metrics = &metrics;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto first = Connect(*server);
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->Health().ok());
  // A second connection (its own thread: one Client per thread) is closed at once.
  auto try_another = [&] {
    StatusOr<HealthInfo> health = Internal("did not run");
    std::thread([&] {
      auto c = Client::Connect("127.0.0.1:" + std::to_string(server->port()));
      health = c.ok() ? (*c)->Health(10000) : StatusOr<HealthInfo>(c.status());
    }).join();
    return health;
  };
  StatusOr<HealthInfo> refused = try_another();
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();
  EXPECT_EQ(server->stats().connections_refused, 1);
  EXPECT_NE(metrics.Serialize().find("\ncellserve_rpc_connections_refused_total 1\n"), std::string::npos);
  EXPECT_TRUE(first->Health().ok()) << "the first connection is untouched";
  // Once the first one has gone, another is served.
  first.reset();
  for (int i = 0; i < 500 && server->stats().connections != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  StatusOr<HealthInfo> later = try_another();
  EXPECT_TRUE(later.ok()) << later.status().ToString();
  EXPECT_EQ(server->stats().connections_refused, 1);
}

// A connection that sends nothing is closed after the first-message timeout and frees its slot:
// 1,000 idle sockets held every slot of a server, and every client got "connection lost".
TEST_F(RpcServerTest, ASilentConnectionIsClosedAndFreesItsSlot) {
  RpcServerOptions options;
  options.max_connections = 1;
  options.first_message_timeout_ms = 300;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server->port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_TRUE(testutil::WaitFor([&] { return server->stats().silent_closes == 1; }, std::chrono::seconds(10)));
  EXPECT_TRUE(testutil::WaitFor([&] { return server->stats().connections == 0; }, std::chrono::seconds(10)));
  char byte = 0;
  EXPECT_EQ(read(fd, &byte, 1), 0) << "the server did not close the silent socket";
  close(fd);
  // A client that speaks keeps its connection past the timeout.
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Health().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_TRUE(client->Health().ok());
  EXPECT_EQ(server->stats().silent_closes, 1);
}

TEST_F(RpcServerTest, PerConnectionCallLimitIsResourceExhausted) {
  RpcServerOptions options;
  options.max_calls_per_connection = 2;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  InferCall call;
  call.model = "slow";
  call.input = Tokens(4000);  // hundreds of ms: the first two are still running when the third arrives
  std::vector<kj::Promise<StatusOr<ReplyValue>>> calls;
  for (int i = 0; i < 5; ++i) calls.push_back(client->InferAsync(call));
  int ok = 0, exhausted = 0;
  for (auto& p : calls) {
    auto r = p.wait(client->wait_scope());
    if (r.ok()) ++ok;
    else if (r.status().code() == StatusCode::kResourceExhausted) ++exhausted;
  }
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(exhausted, 3);
  EXPECT_EQ(server->stats().errors_by_code[static_cast<size_t>(StatusCode::kResourceExhausted)], 3);
}

TEST_F(RpcServerTest, BadOptionsAndABusyPortAreClearErrors) {
  RpcServerOptions bad;
  bad.max_calls_per_connection = 0;
  EXPECT_EQ(RpcServer::Start(cluster_.get(), bad).status().code(), StatusCode::kInvalidArgument);
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  RpcServerOptions same;
  same.listen = "127.0.0.1:" + std::to_string(server->port());
  auto second = RpcServer::Start(cluster_.get(), same);
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot listen on " + same.listen +
                                            ": the port is in use by another process (choose another with --listen"),
            std::string::npos)
      << second.status().message();
}

TEST_F(RpcServerTest, StopWithCallsInFlightReturnsAndFreesThem) {
  RpcServerOptions options;
  options.stop_grace_ms = 0;  // do not wait for answers
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  InferCall call;
  call.model = "slow";
  call.input = Tokens(4000);
  auto pending = client->InferAsync(call);
  // Let the call reach the server (polled, bounded).
  for (int i = 0; i < 1000 && server->stats().calls_in_flight == 0; ++i)
    client->timer().afterDelay(10 * kj::MILLISECONDS).wait(client->wait_scope());
  ASSERT_EQ(server->stats().calls_in_flight, 1);
  const auto t0 = std::chrono::steady_clock::now();
  server->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  auto r = pending.wait(client->wait_scope());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_TRUE(ClusterIdle());
  EXPECT_EQ(server->stats().client_cancels, 0) << "the server dropped it, not the client";
  ClusterReport report = WaitForAnswers(1);
  EXPECT_EQ(report.failed, 1) << "cancelled in the cluster when the server stopped";
  EXPECT_EQ(report.completed, 0) << "it was not run to the end";
}

// A streamed call without a sink is refused at once: before, the whole request ran, then failed
// at its first token as UNAVAILABLE (which clients retry).
TEST_F(RpcServerTest, AStreamCallWithoutASinkIsAnInvalidArgumentAtOnce) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  kj::AsyncIoContext io = kj::setupAsyncIo();
  auto address = io.provider->getNetwork().parseAddress("127.0.0.1", static_cast<unsigned int>(server->port()))
                     .wait(io.waitScope);
  auto stream = address->connect().wait(io.waitScope);
  capnp::TwoPartyClient rpc(*stream);
  auto cellserve = rpc.bootstrap().castAs<Cellserve>();
  auto call = cellserve.inferStreamRequest();
  auto request = call.initRequest();
  request.setModel("slow");
  auto tokens = request.initInput().initTokens(3);
  for (unsigned i = 0; i < 3; ++i) tokens.set(i, 5 + static_cast<int32_t>(i));
  auto response = call.send().wait(io.waitScope);
  ASSERT_TRUE(response.getReply().isError());
  EXPECT_EQ(response.getReply().getError().getCode(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_NE(std::string(response.getReply().getError().getMessage().cStr()).find("needs a sink"), std::string::npos)
      << response.getReply().getError().getMessage().cStr();
  EXPECT_EQ(cluster_->Report().accepted, 0) << "the cluster ran it";
}

// A seq2seq model whose decoding runs long (no EOS in its target vocabulary's reach: eos_id is a
// token the decoder is seeded never to pick first; checked by the test that uses it).
class LongDecodeRepo : public testutil::TempModelRepo {
 public:
  LongDecodeRepo() : TempModelRepo("cellserve_rpc_server_long_decode") {
    ModelSpec spec;
    spec.name = "long";
    spec.kind = cellserve::ModelKind::kSeq2Seq;
    spec.vocab_size = 64;
    spec.target_vocab_size = 64;
    spec.embed_dim = 16;
    spec.hidden = 16;
    spec.layers = 1;
    spec.max_decode_len = 3000;
    spec.max_input_tokens = 64;
    Write(spec, 11);
  }
};

// A sink that never returns from token(): after the streaming window fills, no token is
// delivered again.
class StalledSink final : public TokenSink::Server {
 protected:
  kj::Promise<void> token(TokenContext) override { return kj::NEVER_DONE; }
};

// A sink whose token() fails (a client's callback that threw).
class ThrowingSink final : public TokenSink::Server {
 protected:
  kj::Promise<void> token(TokenContext) override { KJ_FAIL_REQUIRE("the client's callback threw"); }
};

// A cluster serving the long-decoding model, an RPC server on it, and a raw capnp connection to
// the server from the test's thread (its kj loop is the test's).
class RpcServerStreamTest : public ::testing::Test {
 protected:
  ~RpcServerStreamTest() noexcept override {}  // kj's destructors may throw; gtest's may not
  void Start(RpcServerOptions options = {}) {
    cluster_ = StartOneDeviceCluster(repo_.dir());
    ASSERT_TRUE(cluster_);
    options.listen = "127.0.0.1:0";
    auto server = RpcServer::Start(cluster_.get(), options);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    auto address = io_.provider->getNetwork()
                       .parseAddress("127.0.0.1", static_cast<unsigned int>(server_->port()))
                       .wait(io_.waitScope);
    stream_ = address->connect().wait(io_.waitScope);
    rpc_ = kj::heap<capnp::TwoPartyClient>(*stream_);
    cellserve_ = rpc_->bootstrap().castAs<Cellserve>();
  }
  // A request for the long-decoding model (4 tokens), with a deadline of `timeout_ms` (0: none).
  static void Fill(InferRequest::Builder request, uint32_t timeout_ms = 0) {
    request.setModel("long");
    auto tokens = request.initInput().initTokens(4);
    for (unsigned i = 0; i < 4; ++i) tokens.set(i, 3 + static_cast<int32_t>(i));
    request.initOptions().setTimeoutMs(timeout_ms);
  }
  kj::Timer& timer() { return io_.provider->getTimer(); }
  // A long-decoding stream call whose sink stalls, sent and run by the cluster (its answer made):
  // the call now waits for its sink. Returns the call's reply.
  capnp::RemotePromise<Cellserve::InferStreamResults> SendStalledStreamAndRunIt() {
    auto call = cellserve_.inferStreamRequest();
    Fill(call.initRequest());
    call.setSink(kj::heap<StalledSink>());
    auto reply = call.send();
    for (int i = 0; i < 3000 && cluster_->Report().completed == 0; ++i)
      timer().afterDelay(10 * kj::MILLISECONDS).wait(io_.waitScope);
    EXPECT_EQ(cluster_->Report().completed, 1);
    return reply;
  }

  LongDecodeRepo repo_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<RpcServer> server_;
  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> stream_;
  kj::Own<capnp::TwoPartyClient> rpc_;
  Cellserve::Client cellserve_ = nullptr;
};

// A client whose token sink stops taking tokens holds the reply, and the call, only until the
// request's deadline: then the reply is DEADLINE_EXCEEDED (before, it waited for good, and held the
// server's Stop for its whole grace).
TEST_F(RpcServerStreamTest, ASinkThatStopsTakingTokensEndsTheCallAtItsDeadline) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // The decoding is long enough to fill capnp's streaming window (64 KiB of token calls).
  auto plain = cellserve_.inferRequest();
  Fill(plain.initRequest());
  auto decoded = plain.send().wait(io_.waitScope);
  ASSERT_TRUE(decoded.getReply().isResult()) << decoded.getReply().getError().getMessage().cStr();
  ASSERT_GE(decoded.getReply().getResult().getTokens().size(), 2000u) << "the model's decoding ends too early";

  auto call = cellserve_.inferStreamRequest();
  Fill(call.initRequest(), 1500);
  call.setSink(kj::heap<StalledSink>());
  const auto start = std::chrono::steady_clock::now();
  using Reply = capnp::Response<Cellserve::InferStreamResults>;
  auto reply = call.send()
                   .then([](Reply&& r) { return kj::Maybe<Reply>(kj::mv(r)); })
                   .exclusiveJoin(timer().afterDelay(30 * kj::SECONDS).then([] { return kj::Maybe<Reply>(nullptr); }))
                   .wait(io_.waitScope);
  const auto took_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  KJ_IF_MAYBE(r, reply) {
    ASSERT_TRUE(r->getReply().isError());
    EXPECT_EQ(r->getReply().getError().getCode(), ErrorCode::DEADLINE_EXCEEDED)
        << r->getReply().getError().getMessage().cStr();
    EXPECT_GE(took_ms, 1400);
  } else {
    ADD_FAILURE() << "no reply in 30 s: the stalled sink holds the call for good";
  }
  EXPECT_TRUE(testutil::WaitFor([&] { return server_->stats().calls_in_flight == 0; }, std::chrono::seconds(10)));
}

// A sink that fails its first token ends the call at once, and the request is cancelled in the
// cluster: before, it decoded to its end for nobody (the 3,000 steps, holding its state slots),
// and only then answered.
TEST_F(RpcServerStreamTest, ASinkThatFailsEndsTheCallAndCancelsTheRequest) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto call = cellserve_.inferStreamRequest();
  Fill(call.initRequest());
  call.setSink(kj::heap<ThrowingSink>());
  auto reply = call.send().wait(io_.waitScope);
  ASSERT_TRUE(reply.getReply().isError());
  EXPECT_NE(std::string(reply.getReply().getError().getMessage().cStr()).find("the client's callback threw"),
            std::string::npos)
      << reply.getReply().getError().getMessage().cStr();
  ASSERT_TRUE(testutil::WaitFor([&] { return cluster_->Report().failed == 1; }, std::chrono::seconds(10)))
      << "the request was not ended: completed " << cluster_->Report().completed;
  EXPECT_EQ(cluster_->Report().completed, 0) << "it decoded to its end after its sink failed";
}

// Tokens go to a sink one message at a time as its streaming window allows, the rest waiting as
// ids: a sink that stops taking them leaves the server holding a window of messages, not one
// capnp message (2-3 KB) per decoded token (a few such clients grew a server by gigabytes).
TEST_F(RpcServerStreamTest, ASinkThatStopsTakingTokensIsSentNoMoreThanItsWindow) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto reply = SendStalledStreamAndRunIt();
  ASSERT_EQ(cluster_->Report().completed, 1);
  timer().afterDelay(200 * kj::MILLISECONDS).wait(io_.waitScope);  // what would be sent, is
  const int64_t sent = server_->stats().tokens_streamed;
  EXPECT_GT(sent, 0);
  EXPECT_LT(sent, 1500) << "of about 3000 decoded: the server sent tokens the sink never asked for";
  EXPECT_EQ(server_->stats().calls_in_flight, 1);
}

// A stream whose sink stalls, with no deadline, when the server stops: Stop waits its grace (the
// call is in flight, its answer unwritten), then closes the connection; the call ends for the
// client and is no longer counted in flight.
TEST_F(RpcServerStreamTest, AStalledStreamAtStopIsClosedAfterTheGrace) {
  RpcServerOptions options;
  options.stop_grace_ms = 300;
  ASSERT_NO_FATAL_FAILURE(Start(options));
  auto reply = SendStalledStreamAndRunIt();
  ASSERT_EQ(cluster_->Report().completed, 1);
  EXPECT_EQ(server_->stats().calls_in_flight, 1);
  const auto start = std::chrono::steady_clock::now();
  std::thread stopper([&] { server_->Stop(); });
  // The client's loop must run for the server's writes to drain and for the close to reach it.
  auto ended = reply.then([](auto&&) { return true; }, [](kj::Exception&&) { return true; })
                   .exclusiveJoin(timer().afterDelay(30 * kj::SECONDS).then([] { return false; }))
                   .wait(io_.waitScope);
  stopper.join();
  const auto took_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(ended) << "the call neither answered nor failed";
  EXPECT_GE(took_ms, 250) << "closed before the grace";
  EXPECT_LT(took_ms, 10000);
  EXPECT_EQ(server_->stats().calls_in_flight, 0);
}

TEST_F(RpcServerTest, AFloodOfHealthCallsIsBoundedAndSharesReports) {
  SlowReports slow(cluster_.get());  // no ASSERT may return between the first health call and Release
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_calls_per_connection = 64;
  auto server = RpcServer::Start(&slow, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto flooder = Connect(**server);
  ASSERT_TRUE(flooder);
  // 2,000 health calls at once on one connection, none awaited before the next is sent.
  constexpr int kFlood = 2000;
  std::vector<kj::Promise<StatusOr<HealthInfo>>> flood;
  for (int i = 0; i < kFlood; ++i) flood.push_back(flooder->HealthAsync());
  // They reach the server while the first report is held: 64 wait for it, the rest are refused.
  auto refused_so_far = [&] {
    return (*server)->stats().errors_by_code[static_cast<size_t>(StatusCode::kResourceExhausted)];
  };
  for (int i = 0; i < 1000 && refused_so_far() < kFlood - 64; ++i)
    flooder->timer().afterDelay(10 * kj::MILLISECONDS).wait(flooder->wait_scope());
  slow.Release();
  // Another client's probe (its own thread: one Client per thread) is answered in a few reports'
  // time, not after one report per call of the flood.
  std::optional<StatusOr<HealthInfo>> probe;
  int64_t probe_ms = -1;
  std::thread([&] {
    auto other = Connect(**server);
    if (!other) return;
    const auto t0 = std::chrono::steady_clock::now();
    probe = other->Health(10000);
    probe_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  }).join();
  ASSERT_TRUE(probe.has_value());
  ASSERT_TRUE(probe->ok()) << probe->status().ToString();
  EXPECT_TRUE((*probe)->serving());
  EXPECT_LT(probe_ms, 2000) << "queued behind the flood's reports";
  int ok = 0, refused = 0;
  for (auto& p : flood) {
    auto r = p.wait(flooder->wait_scope());
    if (r.ok()) {
      ++ok;
    } else {
      ++refused;
      EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
      EXPECT_NE(r.status().message().find("--max-calls-per-connection"), std::string::npos) << r.status().ToString();
    }
  }
  EXPECT_EQ(ok + refused, kFlood);
  EXPECT_EQ(ok, 64) << "the connection's limit is served, and no more while the report is held";
  EXPECT_EQ(refused, kFlood - 64) << "beyond the connection's limit: refused";
  EXPECT_EQ((*server)->stats().errors_by_code[static_cast<size_t>(StatusCode::kResourceExhausted)], kFlood - 64);
  // Every answered call shared a report with others: far fewer reports than answers.
  EXPECT_LE(slow.reports.load(), ok / 8) << ok << " answered";
  // The connection is usable again once its calls are answered.
  EXPECT_TRUE(flooder->Health(10000).ok());
  (*server)->Stop();
}

TEST_F(RpcServerTest, NotReadyUntilItsClusterIsAttached) {
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = RpcServer::Start(nullptr, options);  // as serve does while the models load
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = Connect(**server);
  ASSERT_NE(client, nullptr);
  auto health = client->Health();
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(health->state, ServingState::NOT_READY);
  EXPECT_EQ(health->reason, "loading the models");
  auto models = client->Models();
  ASSERT_TRUE(models.ok());
  EXPECT_TRUE(models->empty());
  InferCall call;
  call.model = "slow";
  call.input = Tokens(5);
  auto early = client->Infer(call);
  EXPECT_EQ(early.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(early.status().message().find("starting"), std::string::npos) << early.status().message();

  ASSERT_TRUE((*server)->AttachCluster(cluster_.get()).ok());
  EXPECT_EQ((*server)->AttachCluster(cluster_.get()).code(), StatusCode::kInvalidArgument);
  health = client->Health();
  ASSERT_TRUE(health.ok());
  EXPECT_TRUE(health->serving());
  ASSERT_TRUE(client->Models().ok());
  EXPECT_EQ(client->Models()->size(), 1u);
  EXPECT_TRUE(client->Infer(call).ok()) << "the same connection is served once the cluster is in";
  (*server)->Stop();
  EXPECT_EQ((*server)->AttachCluster(cluster_.get()).code(), StatusCode::kUnavailable);
}

TEST_F(RpcServerTest, ManyConnectionsWithManyCallsEach) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto want = RunLocal(*cluster_, Tokens(12));
  ASSERT_TRUE(want.ok());
  constexpr int kThreads = 6, kCalls = 10;
  std::atomic<int> equal{0};
  std::vector<std::thread> threads;
  const int port = server->port();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, port] {
      auto client = Client::Connect("127.0.0.1:" + std::to_string(port));
      if (!client.ok()) return;
      InferCall call;
      call.model = "slow";
      call.input = Tokens(12);
      std::vector<kj::Promise<StatusOr<ReplyValue>>> calls;
      for (int i = 0; i < kCalls; ++i) calls.push_back((*client)->InferAsync(call));
      for (auto& p : calls) {
        auto r = p.wait((*client)->wait_scope());
        if (r.ok() && r->result.logits == want->logits) ++equal;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(equal.load(), kThreads * kCalls);
  EXPECT_EQ(server->stats().connections_total, kThreads);
}

TEST_F(RpcServerTest, OversizedRequestsAreErrorsAndOtherClientsLiveOn) {
  RpcServerOptions options;
  options.max_message_bytes = 1 << 20;  // 1 MiB
  options.limits.max_tokens = 1000;
  auto server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto client = Connect(*server);
  ASSERT_NE(client, nullptr);
  // Over --max-tokens but under the message limit: an error reply, the connection goes on.
  InferCall call;
  call.model = "slow";
  call.input = Tokens(50000);  // 200 KB
  auto r = client->Infer(call);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find("at most 1000"), std::string::npos) << r.status().message();
  EXPECT_TRUE(client->Health().ok()) << "the connection lives on";
  // Over the message limit: capnp closes this connection; the server and other clients go on.
  call.input = Tokens(400000);  // 1.6 MB
  r = client->Infer(call);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  std::atomic<bool> other_ok{false};
  std::thread([&] {
    auto second = Client::Connect("127.0.0.1:" + std::to_string(server->port()));
    if (!second.ok()) return;
    InferCall small;
    small.model = "slow";
    small.input = Tokens(5);
    other_ok = (*second)->Infer(small).ok();
  }).join();
  EXPECT_TRUE(other_ok.load()) << "a new client is served after the oversized message";
}

// An answer the server may not send (over its --max-message-bytes: 300,000 logits, 1.2 MB, at
// 1 MiB) is RESOURCE_EXHAUSTED saying which limit to raise, and the connection goes on. Before,
// capnp failed the reply with its internal text, as UNAVAILABLE, which clients retry.
TEST(RpcServerReplySizeTest, AnAnswerOverTheMessageLimitIsResourceExhausted) {
  testutil::TempModelRepo repo("cellserve_rpc_server_wide");
  ModelSpec wide;
  wide.name = "wide";
  wide.vocab_size = 1000;
  wide.embed_dim = 4;
  wide.hidden = 4;
  wide.classes = 300000;
  repo.Write(wide, 3);
  auto cluster = StartOneDeviceCluster(repo.dir());
  ASSERT_TRUE(cluster);
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_message_bytes = 1 << 20;
  auto server = RpcServer::Start(cluster.get(), options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  InferCall call;
  call.model = "wide";
  call.input = Tokens(3);
  auto r = (*client)->Infer(call);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_NE(r.status().message().find("--max-message-bytes"), std::string::npos) << r.status().message();
  EXPECT_TRUE((*client)->Health().ok()) << "the connection lives on";
}

// A client that sends calls and never reads the answers: the server queues them in memory, for
// good unless it closes such a connection. Spoken in raw Cap'n Proto RPC on a socket (a capnp
// client reads its answers as its event loop runs): a bootstrap, then calls of `method_id`
// pipelined on it, as fast as the socket takes them; nothing is read. (A receive buffer made tiny
// stalled the connection in TCP itself: the kernel dropped the segments that carried the
// server's ACKs.) Returns whether the socket was refused before the calls ran out.
bool SendCallsWithoutReading(int port, uint16_t method_id) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  timeval send_timeout{1, 0};  // a blocked send returns (EAGAIN) every second: tried again below
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return false;
  }
  // False once the server closed the connection (or after 60 s of a server that stopped reading).
  auto send_message = [fd, give_up](capnp::MessageBuilder& message) {
    kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    for (size_t at = 0; at < bytes.size();) {
      const ssize_t n = send(fd, bytes.begin() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
          std::chrono::steady_clock::now() < give_up)
        continue;
      if (n <= 0) return false;
      at += static_cast<size_t>(n);
    }
    return true;
  };
  capnp::MallocMessageBuilder bootstrap;
  bootstrap.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(0);
  bool refused = !send_message(bootstrap);
  // Without the limit the server reads every call and queues every answer: the loop ends when
  // the calls run out, with the connection still open.
  for (uint32_t question = 1; question <= 400000 && !refused; ++question) {
    capnp::MallocMessageBuilder message;
    auto call = message.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(question);
    call.initTarget().initPromisedAnswer().setQuestionId(0);
    call.setInterfaceId(capnp::typeId<Cellserve>());
    call.setMethodId(method_id);
    call.initParams().getContent().initAs<Cellserve::ModelsParams>();
    refused = !send_message(message);
  }
  close(fd);
  return refused;
}

TEST(RpcServerSlowReaderTest, AClientThatDoesNotReadItsAnswersIsDisconnected) {
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_queued_answer_bytes = 256 << 10;
  auto server = RpcServer::Start(nullptr, options);  // models answers at once (an empty list)
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  // `models` (answered by our code), then a method the interface lacks (answered by capnp itself:
  // the limit is checked below capnp, so those count too).
  int64_t want = 0;
  for (uint16_t method : {uint16_t{2}, uint16_t{77}}) {
    ++want;
    EXPECT_TRUE(SendCallsWithoutReading((*server)->port(), method)) << "method " << method << ": never refused";
    EXPECT_TRUE(testutil::WaitFor([&] { return (*server)->stats().slow_reader_disconnects == want; },
                                  std::chrono::seconds(10)))
        << "method " << method << ": the server kept queueing answers nobody reads";
    EXPECT_TRUE(testutil::WaitFor([&] { return (*server)->stats().connections == 0; }, std::chrono::seconds(10)));
  }
  // The server goes on for clients that read.
  auto client = Client::Connect("127.0.0.1:" + std::to_string((*server)->port()));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_TRUE((*client)->Models().ok());
}

// A backend that serves many models with long names, so that each `models` answer is large
// (about 25 KB): a few hundred of them are more than the sockets' buffers hold.
class ManyModels : public ServingBackend {
 public:
  uint64_t Infer(const std::string&, RequestInput, int64_t, InferCallback done, TokenCallback) override {
    done(Internal("not to be called"));
    return 1;
  }
  void Cancel(uint64_t) override {}
  ClusterReport Report() const override { return {}; }
  std::vector<ModelSpec> Models() const override {
    ++asked;
    std::vector<ModelSpec> out(100);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i].name = "model-" + std::to_string(i) + "-" + std::string(200, 'x');
      out[i].vocab_size = 10;
      out[i].hidden = 8;
      out[i].embed_dim = 8;
    }
    return out;
  }
  ClusterState state() const override { return ClusterState::kServing; }
  mutable std::atomic<int64_t> asked{0};
};

// A raw connection to `port` (reads time out after 20 s; `receive_buffer` > 0 sets SO_RCVBUF),
// the bootstrap sent, then `calls` calls of `models` sent without reading: their answers queue.
int ConnectAndCallModels(int port, uint32_t calls, int receive_buffer = 0) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval timeout{20, 0};  // a read that waits longer fails (a server that never closes)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (receive_buffer > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  kj::FdOutputStream out(fd);
  {
    capnp::MallocMessageBuilder bootstrap;
    bootstrap.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(0);
    capnp::writeMessage(out, bootstrap);
  }
  for (uint32_t question = 1; question <= calls; ++question) {
    capnp::MallocMessageBuilder message;
    auto call = message.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(question);
    call.initTarget().initPromisedAnswer().setQuestionId(0);
    call.setInterfaceId(capnp::typeId<Cellserve>());
    call.setMethodId(2);  // models
    call.initParams().getContent().initAs<Cellserve::ModelsParams>();
    capnp::writeMessage(out, message);
  }
  return fd;
}

// Reads messages from `fd` until the server closes it (or `want` returns came); counts the returns.
// `finish`: answers each return with a Finish, as a capnp client does (so the server reads too).
int64_t ReadReturns(int fd, int64_t want = -1, bool finish = false) {
  int64_t returns = 0;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    kj::FdInputStream in(fd);
    kj::FdOutputStream out(fd);
    kj::BufferedInputStreamWrapper buffered(in);
    capnp::ReaderOptions reader_options;
    reader_options.traversalLimitInWords = uint64_t{1} << 30;
    while (returns != want && buffered.tryGetReadBuffer().size() > 0) {
      capnp::InputStreamMessageReader reader(buffered, reader_options);
      auto message = reader.getRoot<capnp::rpc::Message>();
      if (!message.isReturn()) continue;
      ++returns;
      if (!finish) continue;
      capnp::MallocMessageBuilder reply;
      reply.initRoot<capnp::rpc::Message>().initFinish().setQuestionId(message.getReturn().getAnswerId());
      capnp::writeMessage(out, reply);
    }
  })) {
    ADD_FAILURE() << "reading the answers: " << e->getDescription().cStr();
  }
  return returns;
}

// Answers the server has made but not yet written when it stops still reach a client that reads
// them late (within the grace): before, the connections closed 50 ms after the last answer was
// made, and the client lost what the socket buffers had not taken (half of 40,000 answers).
TEST(RpcServerStopTest, AnswersQueuedAtStopReachAClientThatReadsThemLate) {
  ManyModels backend;
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_queued_answer_bytes = int64_t{512} << 20;
  options.stop_grace_ms = 20000;
  auto server = RpcServer::Start(&backend, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  constexpr uint32_t kCalls = 800;  // about 20 MB of answers
  const int fd = ConnectAndCallModels((*server)->port(), kCalls);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(testutil::WaitFor([&] { return backend.asked.load() >= kCalls; }, std::chrono::seconds(30)))
      << backend.asked.load() << " of " << kCalls << " answered";
  std::thread stopper([&] { (*server)->Stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the client reads late
  const int64_t returns = ReadReturns(fd);
  stopper.join();
  close(fd);
  EXPECT_EQ(returns, kCalls + 1) << "answers (and the bootstrap's) lost at Stop";
}

// A burst of answers over the limit, to a client that reads them all (after sending its calls):
// it is not a client that does not read. It was closed at the limit and lost the answers (80
// long seq2seq answers at once, 40 MiB, did that to a plain closed-loop loadgen).
TEST(RpcServerSlowReaderTest, ABurstOverTheLimitToAClientThatReadsItIsDelivered) {
  ManyModels backend;
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_queued_answer_bytes = 256 << 10;
  auto server = RpcServer::Start(&backend, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  constexpr uint32_t kCalls = 400;  // about 10 MB of answers, 40x the limit
  const int fd = ConnectAndCallModels((*server)->port(), kCalls, /*receive_buffer=*/4096);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(testutil::WaitFor([&] { return backend.asked.load() >= kCalls; }, std::chrono::seconds(30)));
  const int64_t returns = ReadReturns(fd, kCalls + 1, /*finish=*/true);
  close(fd);
  EXPECT_EQ(returns, kCalls + 1) << "answers lost";
  EXPECT_EQ((*server)->stats().slow_reader_disconnects, 0);
}

TEST(RpcServerSlowReaderTest, ALimitUnder64KiBIsRefused) {
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_queued_answer_bytes = 1000;
  EXPECT_EQ(RpcServer::Start(nullptr, options).status().code(), StatusCode::kInvalidArgument);
}

// Runs out of file descriptors with a connection waiting to be accepted, then frees them. Exits 0
// when the server survived and serves a new connection; on stderr, what happened (the test reads
// it). In a child process: it lowers this process's descriptor limit.
[[noreturn]] void ServeThroughDescriptorExhaustion() {
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = RpcServer::Start(nullptr, options);  // no cluster: health says not ready, which is enough
  if (!server.ok()) {
    std::fprintf(stderr, "start: %s\n", server.status().ToString().c_str());
    std::_Exit(2);
  }
  const int port = (*server)->port();
  const size_t open_now = testutil::OpenFdCount();
  rlimit old_limit{};
  getrlimit(RLIMIT_NOFILE, &old_limit);
  rlimit low = old_limit;
  low.rlim_cur = static_cast<rlim_t>(open_now + 8);
  if (setrlimit(RLIMIT_NOFILE, &low) != 0) std::_Exit(2);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  auto connect_one = [&]() -> int {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  };
  // Fill the table (the server's accepted ends count too), then free the one descriptor held in
  // reserve (not a connection's: closing one would let the server free its end too) and take it
  // for a last connection: the server has none left to accept it with.
  const int reserve = dup(STDERR_FILENO);
  if (reserve < 0) std::_Exit(2);
  std::vector<int> fds;
  for (int fd; static_cast<int>(fds.size()) < 64 && (fd = connect_one()) >= 0;) {
    fds.push_back(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the server take it
  }
  if (fds.empty()) std::_Exit(2);
  close(reserve);
  if (const int fd = connect_one(); fd >= 0) fds.push_back(fd);
  // The server tries and fails: waited for up to 10 s (its loop may be starved on a busy machine).
  int64_t failures = 0;
  testutil::WaitFor([&] { return (failures = (*server)->stats().accept_failures) > 0; }, std::chrono::seconds(10));
  for (int fd : fds) close(fd);
  setrlimit(RLIMIT_NOFILE, &old_limit);
  auto client = Client::Connect("127.0.0.1:" + std::to_string(port));
  auto health = client.ok() ? (*client)->Health(10000) : StatusOr<HealthInfo>(client.status());
  (void)monitoring::FlushLog(std::chrono::seconds(5));  // the server's lines first
  std::fprintf(stderr, "accept failures: %lld; health after: %s\n", static_cast<long long>(failures),
               health.ok() ? "answered" : health.status().ToString().c_str());
  std::fflush(stderr);
  std::_Exit(health.ok() && failures > 0 ? 0 : 1);
}

// Out of file descriptors (EMFILE: `ulimit -n` is often 1024, as is --max-connections), accept()
// fails. That must not end the process with every call in flight: the server counts the failure,
// says so once, and accepts again when descriptors are free.
TEST(RpcServerAcceptTest, RunningOutOfFileDescriptorsDoesNotStopTheServer) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ServeThroughDescriptorExhaustion(), ::testing::ExitedWithCode(0),
              "cannot accept connections.*\n(.*\n)*.*accepting connections again(.*\n)*accept failures: [1-9][0-9]*; "
              "health after: answered");
}

}  // namespace
}  // namespace cellserve::rpc
