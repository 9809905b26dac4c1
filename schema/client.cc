#include "schema/client.h"

#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <utility>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include "schema/cellserve.capnp.h"
#include "schema/tcp_keepalive.h"

namespace cellserve::rpc {
namespace {

std::string Describe(const kj::Exception& e) { return e.getDescription().cStr(); }

// Why a connect failed, for people: "connect(): Connection refused" -> "connection refused";
// a failed name lookup -> "unknown host 'x' (Name or service not known)".
std::string Reason(const kj::Exception& e, const std::string& host) {
  std::string d = Describe(e);
  const std::string gai = "gai_strerror(status) = ";
  if (auto p = d.find(gai); p != std::string::npos) {
    const std::string why = d.substr(p + gai.size(), d.find(';', p) - (p + gai.size()));
    return "unknown host '" + host + "' (" + why + ")";
  }
  if (auto p = d.find("(): "); p != std::string::npos && p < 40) d = d.substr(p + 4);
  if (d.size() > 1 && std::islower(static_cast<unsigned char>(d[1])))
    d[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(d[0])));
  return d;
}

// The sink of one inferStream call. Forwards tokens while `open` is true; the call's promise
// clears it when it resolves or is dropped, so a server holding the sink longer cannot reach the
// caller's callback afterwards.
class TokenSinkImpl final : public TokenSink::Server {
 public:
  TokenSinkImpl(std::function<void(uint32_t, int32_t)> on_token, std::shared_ptr<bool> open,
                std::shared_ptr<std::string> thrown)
      : on_token_(std::move(on_token)), open_(std::move(open)), thrown_(std::move(thrown)) {}

 protected:
  // A callback that throws ends the call: the server is told (the exception goes back as the
  // token call's error, and it cancels the request), and the caller gets INTERNAL naming it.
  kj::Promise<void> token(TokenContext context) override {
    if (*open_) {
      auto params = context.getParams();
      try {
        on_token_(params.getIndex(), params.getToken());
      } catch (const std::exception& e) {
        *open_ = false;
        *thrown_ = std::string("the on_token callback threw: ") + e.what();
        KJ_FAIL_REQUIRE("the client's on_token callback threw", e.what());
      } catch (...) {
        *open_ = false;
        *thrown_ = "the on_token callback threw";
        KJ_FAIL_REQUIRE("the client's on_token callback threw");
      }
    }
    return kj::READY_NOW;
  }

 private:
  std::function<void(uint32_t, int32_t)> on_token_;
  std::shared_ptr<bool> open_;
  std::shared_ptr<std::string> thrown_;  // why the callback ended the call; empty if it did not
};

// A kj Duration counts nanoseconds in int64: past about 9.2e12 ms (292 years) `ms * MILLISECONDS`
// wraps negative and the timeout fires at once. A huge timeout (someone's "no limit") saturates
// at 2^40 ms (35 years).
kj::Duration Millis(int64_t ms) { return std::min<int64_t>(ms, int64_t{1} << 40) * kj::MILLISECONDS; }

// `promise`, or DEADLINE_EXCEEDED `ms` from now (which cancels it). ms <= 0: `promise` as is.
// From now, not timer.afterDelay: that counts from the loop's last poll, so a caller that did
// other work between two calls (a blocking Health, 2 s of its own, then Infer with 3 s) was given
// up on after 1 s. The event port's timer runs on this clock.
template <typename T>
kj::Promise<StatusOr<T>> Bounded(kj::Timer& timer, kj::Promise<StatusOr<T>> promise, int64_t ms,
                                 std::string what) {
  if (ms <= 0) return promise;
  const kj::TimePoint at = kj::systemPreciseMonotonicClock().now() + Millis(ms);
  return promise.exclusiveJoin(timer.atTime(at).then([ms, what]() -> StatusOr<T> {
    return DeadlineExceeded("no answer to " + what + " within " + std::to_string(ms) + " ms");
  }));
}

// Writing to a socket the peer closed raises SIGPIPE, whose default action kills the process; a
// lost connection must be an error instead. Leaves a handler someone else installed alone.
void IgnoreSigpipe() {
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
}

}  // namespace

StatusOr<HostPort> ParseHostPort(const std::string& text) {
  const std::string usage = "; expected HOST:PORT, e.g. " + std::string(kDefaultAddress);
  if (text.empty()) return InvalidArgument("empty address" + usage);
  HostPort out;
  std::string port;
  if (text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return InvalidArgument("malformed address '" + text + "'; an IPv6 address is written [::1]:7410");
    out.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return InvalidArgument("address '" + text + "' has no port" + usage);
    out.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (out.host.find(':') != std::string::npos)
      return InvalidArgument("address '" + text + "': an IPv6 address goes in brackets, e.g. [::1]:7410");
  }
  if (out.host.empty()) return InvalidArgument("address '" + text + "' has no host" + usage);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return InvalidArgument("address '" + text + "': port '" + port + "' is not a number" + usage);
  const long value = std::strtol(port.c_str(), nullptr, 10);
  if (value < 1 || value > 65535)
    return InvalidArgument("address '" + text + "': port " + port + " is not in [1, 65535]");
  out.port = static_cast<uint16_t>(value);
  return out;
}

struct Client::Impl {
  // Destroyed in reverse order: the watch and the capability before the RPC system, the RPC
  // system before its socket, everything before the event loop.
  kj::AsyncIoContext io;
  std::string address;
  bool disconnected = false;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  Cellserve::Client cap = nullptr;
  kj::Maybe<kj::Promise<void>> watch;

  explicit Impl(std::string addr) : io(kj::setupAsyncIo()), address(std::move(addr)) {}

  // A kj::Exception from a call, as a Status.
  Status TransportError(const kj::Exception& e) {
    if (e.getType() == kj::Exception::Type::DISCONNECTED) {
      disconnected = true;
      return Unavailable("connection to " + address + " lost: " + Describe(e) + "; is " + address +
                         " a cellserve server, and still running? (a server at its --max-connections closes new "
                         "connections at once, and one that stopped reading or sent nothing for 10 s too; so does "
                         "a request over its --max-message-bytes, 16 MiB by default)");
    }
    if (e.getType() == kj::Exception::Type::OVERLOADED)  // a server limit, e.g. calls per connection
      return ResourceExhausted(address + " is over a limit: " + Describe(e));
    return Unavailable("call to " + address + " failed: " + Describe(e));
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() {
  if (!impl_ || !impl_->rpc || impl_->rpc->getCurrentQueueCount() == 0) return;
  // Calls still queued for the socket (a caller far ahead of the server) form one promise chain,
  // which the connection would free recursively, stack frames per call: about 80k overflowed the
  // stack. Shut the socket so that they fail one loop turn at a time, and let them (bounded).
  KJ_IF_MAYBE(fd, impl_->stream->getFd()) { ::shutdown(*fd, SHUT_RDWR); }
  kj::runCatchingExceptions([&] {
    kj::Timer& timer = impl_->io.provider->getTimer();
    const kj::TimePoint give_up = timer.now() + 5 * kj::SECONDS;
    while (impl_->rpc->getCurrentQueueCount() > 0 && timer.now() < give_up)
      timer.afterDelay(1 * kj::MILLISECONDS).wait(impl_->io.waitScope);
  });
}

StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& host_port, int64_t connect_timeout_ms) {
  ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(host_port));
  IgnoreSigpipe();
  std::unique_ptr<Impl> impl;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { impl = std::make_unique<Impl>(host_port); })) {
    return Internal("cannot start a kj event loop on this thread (one Client per thread): " + Describe(*e));
  }
  const std::string hint = "; is `cellserve serve --listen " + host_port + "` running?";
  const std::string kj_address =
      (hp.host.find(':') != std::string::npos ? "[" + hp.host + "]" : hp.host) + ":" + std::to_string(hp.port);
  using MaybeStream = kj::Maybe<kj::Own<kj::AsyncIoStream>>;
  MaybeStream stream;
  kj::AsyncIoContext& io = impl->io;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto connect = io.provider->getNetwork()
                       .parseAddress(kj_address, hp.port)
                       .then([](kj::Own<kj::NetworkAddress> address) {
                         auto connected = address->connect();
                         return connected.attach(kj::mv(address));
                       })
                       .then([](kj::Own<kj::AsyncIoStream> s) -> MaybeStream { return kj::mv(s); });
    auto give_up = io.provider->getTimer()
                       .afterDelay(Millis(std::max<int64_t>(connect_timeout_ms, 1)))
                       .then([]() -> MaybeStream { return nullptr; });
    stream = connect.exclusiveJoin(kj::mv(give_up)).wait(io.waitScope);
  })) {
    const std::string reason = Reason(*e, hp.host);
    const bool lookup = reason.rfind("unknown host", 0) == 0;
    return Unavailable("cannot connect to " + host_port + ": " + reason +
                       (lookup ? "; check the host name in the address" : hint));
  }
  KJ_IF_MAYBE(s, stream) {
    impl->stream = kj::mv(*s);
    ApplyTcpKeepalive(*impl->stream, TcpKeepalive{});
  } else {
    return Unavailable("cannot connect to " + host_port + ": no answer within " +
                       std::to_string(connect_timeout_ms) + " ms; is the address reachable, and `cellserve serve --listen " +
                       host_port + "` running there?");
  }
  impl->rpc = kj::heap<capnp::TwoPartyClient>(*impl->stream);
  impl->cap = impl->rpc->bootstrap().castAs<Cellserve>();
  Impl* raw = impl.get();
  impl->watch = impl->rpc->onDisconnect()
                    .then([raw] { raw->disconnected = true; }, [raw](kj::Exception&&) { raw->disconnected = true; })
                    .eagerlyEvaluate(nullptr);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

kj::WaitScope& Client::wait_scope() { return impl_->io.waitScope; }
kj::Timer& Client::timer() { return impl_->io.provider->getTimer(); }
const std::string& Client::address() const { return impl_->address; }
bool Client::disconnected() const { return impl_->disconnected; }
kj::Promise<void> Client::WhenDisconnected() {
  if (impl_->disconnected) return kj::READY_NOW;
  return impl_->rpc->onDisconnect().then([] {}, [](kj::Exception&&) {});
}

kj::Promise<StatusOr<std::vector<ModelSpec>>> Client::ModelsAsync(int64_t timeout_ms) {
  using Result = StatusOr<std::vector<ModelSpec>>;
  Impl* impl = impl_.get();
  auto promise = impl->cap.modelsRequest().send().then(
      [](capnp::Response<Cellserve::ModelsResults>&& response) -> Result {
        std::vector<ModelSpec> specs;
        Status status;
        KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
          for (auto info : response.getModels()) {
            auto spec = DecodeModelInfo(info);
            if (!spec.ok()) {
              status = spec.status();
              return;
            }
            specs.push_back(std::move(spec).value());
          }
        })) {
          return Internal("unreadable models reply: " + Describe(*e));
        }
        if (!status.ok()) return status;
        return specs;
      },
      [impl](kj::Exception&& e) -> Result { return impl->TransportError(e); });
  return Bounded(timer(), kj::mv(promise), timeout_ms, "models");
}

kj::Promise<StatusOr<HealthInfo>> Client::HealthAsync(int64_t timeout_ms) {
  using Result = StatusOr<HealthInfo>;
  Impl* impl = impl_.get();
  auto promise = impl->cap.healthRequest().send().then(
      [](capnp::Response<Cellserve::HealthResults>&& response) -> Result {
        HealthInfo out;
        KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
          auto h = response.getHealth();
          out.state = h.getState();
          out.protocol_version = h.getProtocolVersion();
          out.requests_in_flight = h.getRequestsInFlight();
          out.slots_in_use = h.getSlotsInUse();
          out.accepted = h.getAccepted();
          out.completed = h.getCompleted();
          out.failed = h.getFailed();
          out.rejected = h.getRejected();
          out.devices = h.getDevices();
          out.connections = h.getConnections();
          out.calls_in_flight = h.getCallsInFlight();
          out.reason = h.getReason().cStr();
        })) {
          return Internal("unreadable health reply: " + Describe(*e));
        }
        return out;
      },
      [impl](kj::Exception&& e) -> Result { return impl->TransportError(e); });
  return Bounded(timer(), kj::mv(promise), timeout_ms, "health");
}

kj::Promise<StatusOr<ReplyValue>> Client::InferAsync(const InferCall& call) {
  using Result = StatusOr<ReplyValue>;
  Impl* impl = impl_.get();
  auto decode = [](InferReply::Reader reply) -> Result {
    Result out = Internal("unreadable reply");
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { out = DecodeReply(reply); })) {
      return Internal("unreadable reply: " + Describe(*e));
    }
    return out;
  };
  // A fresh handler per use: then() keeps an lvalue handler by reference.
  auto on_error = [impl] { return [impl](kj::Exception&& e) -> Result { return impl->TransportError(e); }; };
  // A deadline already past (a caller passing on what is left of its own): answered here. On the
  // wire a timeout <= 0 means none, and the request would run unbounded.
  if (call.timeout_us < 0)
    return kj::Promise<Result>(Result(DeadlineExceeded("the deadline passed before the call (timeout_us " +
                                                       std::to_string(call.timeout_us) + ")")));
  kj::Promise<Result> promise = nullptr;
  if (call.on_token) {
    auto request = impl->cap.inferStreamRequest();
    EncodeInferRequest(call.model, call.version, call.input, call.timeout_us, call.max_decode_len,
                       request.initRequest());
    auto open = std::make_shared<bool>(true);
    auto thrown = std::make_shared<std::string>();
    request.setSink(kj::heap<TokenSinkImpl>(call.on_token, open, thrown));
    // The callback's own exception is the answer, not what the server made of it.
    auto own_error = [thrown](Result r) -> Result { return thrown->empty() ? r : Result(Internal(*thrown)); };
    promise = request.send()
                  .then([decode](capnp::Response<Cellserve::InferStreamResults>&& r) { return decode(r.getReply()); },
                        on_error())
                  .then(kj::mv(own_error))
                  .attach(kj::defer([open] { *open = false; }));
  } else {
    auto request = impl->cap.inferRequest();
    EncodeInferRequest(call.model, call.version, call.input, call.timeout_us, call.max_decode_len,
                       request.initRequest());
    promise = request.send().then(
        [decode](capnp::Response<Cellserve::InferResults>&& r) { return decode(r.getReply()); }, on_error());
  }
  return Bounded(timer(), kj::mv(promise), call.client_timeout_ms, "infer");
}

namespace {
// Waits for a promise that never rejects; a kj exception from the loop itself becomes INTERNAL.
template <typename T>
StatusOr<T> Wait(kj::Promise<StatusOr<T>> promise, kj::WaitScope& scope) {
  StatusOr<T> out = Internal("no answer");
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { out = promise.wait(scope); })) {
    return Internal("event loop failed: " + Describe(*e));
  }
  return out;
}
}  // namespace

StatusOr<std::vector<ModelSpec>> Client::Models(int64_t timeout_ms) {
  return Wait(ModelsAsync(timeout_ms), wait_scope());
}
StatusOr<HealthInfo> Client::Health(int64_t timeout_ms) { return Wait(HealthAsync(timeout_ms), wait_scope()); }
StatusOr<ReplyValue> Client::Infer(const InferCall& call) { return Wait(InferAsync(call), wait_scope()); }

}  // namespace cellserve::rpc
