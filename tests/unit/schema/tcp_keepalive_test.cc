// TCP keepalive on RPC connections (schema/tcp_keepalive.h): the server's accepted sockets and
// the client library's socket get the kernel's keepalive timer with the idle time asked for, and
// none when it is off. Read from /proc/net/tcp, where the kernel shows each socket's pending
// timer (2: keepalive) and when it fires. That a vanished peer is then dropped is the kernel's
// part; tests/integration/vanished_peer_test.sh shows it end to end in a network namespace.
#include "schema/tcp_keepalive.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include "../common/wait_for.h"
#include "schema/client.h"
#include "schema/rpc_server.h"

namespace cellserve::rpc {
namespace {

// An established IPv4 TCP socket's pending timer, as /proc/net/tcp shows it: `kind` 0 none,
// 1 retransmit, 2 keepalive (or another sk_timer), 4 zero-window probe; `when_ticks` until it
// fires, in clock ticks (sysconf(_SC_CLK_TCK)).
struct SocketTimer {
  int kind = -1;
  long when_ticks = -1;
};

// The row whose local port is `local_port` and remote port `remote_port` (-1: any).
std::optional<SocketTimer> TimerOf(int local_port, int remote_port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string slot, local, remote, state, queues, timer;
    if (!(row >> slot >> local >> remote >> state >> queues >> timer)) continue;
    if (state != "01") continue;  // ESTABLISHED
    const int lport = std::stoi(local.substr(local.find(':') + 1), nullptr, 16);
    const int rport = std::stoi(remote.substr(remote.find(':') + 1), nullptr, 16);
    if (lport != local_port || (remote_port >= 0 && rport != remote_port)) continue;
    SocketTimer t;
    t.kind = std::stoi(timer.substr(0, timer.find(':')), nullptr, 16);
    t.when_ticks = std::stol(timer.substr(timer.find(':') + 1), nullptr, 16);
    return t;
  }
  return std::nullopt;
}

long Ticks(int seconds) { return seconds * sysconf(_SC_CLK_TCK); }

TEST(TcpKeepaliveTest, AfterIdleProbesASixthOfItSixTimes) {
  TcpKeepalive k = TcpKeepalive::AfterIdle(60);
  EXPECT_EQ(k.idle_s, 60);
  EXPECT_EQ(k.interval_s, 10);
  EXPECT_EQ(k.count, 6);
  EXPECT_EQ(k.DropAfterS(), 120);
  EXPECT_EQ(TcpKeepalive::AfterIdle(2).interval_s, 1);  // never under a second
  EXPECT_FALSE(TcpKeepalive::AfterIdle(0).on());
  EXPECT_TRUE(TcpKeepalive{}.on());
  EXPECT_EQ(TcpKeepalive{}.DropAfterS(), 120);
}

// A TCP connection on 127.0.0.1 in a kj loop of this thread; `accepted` is the server's end.
struct KjConnection {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Own<kj::AsyncIoStream> connected, accepted;
  KjConnection() {
    auto address = io.provider->getNetwork().parseAddress("127.0.0.1:0").wait(io.waitScope);
    listener = address->listen();
    auto to = io.provider->getNetwork().parseAddress("127.0.0.1", listener->getPort()).wait(io.waitScope);
    auto connecting = to->connect();
    accepted = listener->accept().wait(io.waitScope);
    connected = connecting.wait(io.waitScope);
  }
  int Option(int level, int option) {
    int value = -1;
    kj::uint length = sizeof value;
    accepted->getsockopt(level, option, &value, &length);
    return value;
  }
};

TEST(TcpKeepaliveTest, ApplySetsEachOptionOnTheSocket) {
  KjConnection c;
  EXPECT_EQ(c.Option(SOL_SOCKET, SO_KEEPALIVE), 0);
  TcpKeepalive k;
  k.idle_s = 11;
  k.interval_s = 3;
  k.count = 4;
  ApplyTcpKeepalive(*c.accepted, k);
  EXPECT_EQ(c.Option(SOL_SOCKET, SO_KEEPALIVE), 1);
  EXPECT_EQ(c.Option(IPPROTO_TCP, TCP_KEEPIDLE), 11);
  EXPECT_EQ(c.Option(IPPROTO_TCP, TCP_KEEPINTVL), 3);
  EXPECT_EQ(c.Option(IPPROTO_TCP, TCP_KEEPCNT), 4);
  EXPECT_EQ(c.Option(IPPROTO_TCP, TCP_USER_TIMEOUT), (11 + 3 * 4) * 1000);
}

TEST(TcpKeepaliveTest, ApplyWithKeepaliveOffChangesNothing) {
  KjConnection c;
  ApplyTcpKeepalive(*c.accepted, TcpKeepalive::AfterIdle(0));
  EXPECT_EQ(c.Option(SOL_SOCKET, SO_KEEPALIVE), 0);
  EXPECT_EQ(c.Option(IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
}

// A server (no cluster: it answers not_ready, which is all a connection needs) and a raw client
// socket connected to it; returns the client socket's fd and local port.
struct RawConnection {
  int fd = -1;
  int local_port = 0;
  ~RawConnection() {
    if (fd >= 0) close(fd);
  }
};

void ConnectRaw(int server_port, RawConnection& c) {
  c.fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(c.fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(server_port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(c.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(c.fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  c.local_port = ntohs(addr.sin_port);
}

std::unique_ptr<RpcServer> StartServer(const TcpKeepalive& keepalive) {
  RpcServerOptions options;
  options.listen = "127.0.0.1:0";
  options.keepalive = keepalive;
  auto server = RpcServer::Start(nullptr, options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return server.ok() ? std::move(server).value() : nullptr;
}

// The timers of both ends of a raw connection to a server with `keepalive`: the server's end
// (its local port is the server's, its remote port ours) and ours.
void ConnectionTimers(const TcpKeepalive& keepalive, std::optional<SocketTimer>& server_end,
                      std::optional<SocketTimer>& client_end) {
  auto server = StartServer(keepalive);
  ASSERT_NE(server, nullptr);
  RawConnection client;
  ConnectRaw(server->port(), client);
  ASSERT_TRUE(testutil::WaitFor([&] { return server->stats().connections == 1; }, std::chrono::seconds(10)));
  server_end = TimerOf(server->port(), client.local_port);
  client_end = TimerOf(client.local_port, server->port());
  ASSERT_TRUE(server_end.has_value()) << "no established socket on port " << server->port() << " in /proc/net/tcp";
  ASSERT_TRUE(client_end.has_value());
}

TEST(TcpKeepaliveTest, TheServerProbesItsAcceptedConnectionsAfterTheIdleTimeAsked) {
  std::optional<SocketTimer> server_end, client_end;
  ASSERT_NO_FATAL_FAILURE(ConnectionTimers(TcpKeepalive::AfterIdle(7), server_end, client_end));
  EXPECT_EQ(server_end->kind, 2) << "the server's socket has no keepalive timer";
  EXPECT_LE(server_end->when_ticks, Ticks(7));
  EXPECT_GT(server_end->when_ticks, Ticks(4)) << "the timer is not the 7 s asked for";
  EXPECT_EQ(client_end->kind, 0);  // our raw socket: nothing set it
}

TEST(TcpKeepaliveTest, OffLeavesTheServersConnectionsWithoutProbes) {
  std::optional<SocketTimer> server_end, client_end;
  ASSERT_NO_FATAL_FAILURE(ConnectionTimers(TcpKeepalive::AfterIdle(0), server_end, client_end));
  EXPECT_EQ(server_end->kind, 0);
}

TEST(TcpKeepaliveTest, TheClientLibraryProbesItsConnection) {
  auto server = StartServer(TcpKeepalive::AfterIdle(0));  // only the client's end probes here
  ASSERT_NE(server, nullptr);
  auto client = Client::Connect("127.0.0.1:" + std::to_string(server->port()));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE(testutil::WaitFor([&] { return server->stats().connections == 1; }, std::chrono::seconds(10)));
  // The client's end: the one socket whose remote port is the server's.
  std::ifstream in("/proc/net/tcp");
  std::optional<SocketTimer> client_end;
  std::string line;
  std::getline(in, line);
  int found = 0;
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string slot, local, remote, state;
    if (!(row >> slot >> local >> remote >> state) || state != "01") continue;
    const int lport = std::stoi(local.substr(local.find(':') + 1), nullptr, 16);
    const int rport = std::stoi(remote.substr(remote.find(':') + 1), nullptr, 16);
    if (rport != server->port()) continue;
    ++found;
    client_end = TimerOf(lport, rport);
  }
  ASSERT_EQ(found, 1);
  ASSERT_TRUE(client_end.has_value());
  EXPECT_EQ(client_end->kind, 2) << "the client's socket has no keepalive timer";
  EXPECT_LE(client_end->when_ticks, Ticks(TcpKeepalive{}.idle_s));
  EXPECT_GT(client_end->when_ticks, Ticks(TcpKeepalive{}.idle_s - 5));
  (*client).reset();
}

}  // namespace
}  // namespace cellserve::rpc
