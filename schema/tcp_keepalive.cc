#include "schema/tcp_keepalive.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

#include <kj/exception.h>

namespace cellserve::rpc {

TcpKeepalive TcpKeepalive::AfterIdle(int idle_s) {
  TcpKeepalive k;
  k.idle_s = std::max(idle_s, 0);
  k.interval_s = std::max(k.idle_s / 6, 1);
  k.count = 6;
  return k;
}

void ApplyTcpKeepalive(kj::AsyncIoStream& stream, const TcpKeepalive& keepalive) {
  if (!keepalive.on()) return;
  const int on = 1, idle = keepalive.idle_s, interval = std::max(keepalive.interval_s, 1),
            count = std::max(keepalive.count, 1);
  const unsigned user_timeout_ms = static_cast<unsigned>(idle + interval * count) * 1000u;
  // kj throws for a stream without a socket, and the kernel refuses the TCP options on a unix
  // socket: either way the connection simply goes without probes.
  kj::Maybe<kj::Exception> refused = kj::runCatchingExceptions([&] {
    stream.setsockopt(SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    stream.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    stream.setsockopt(IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    stream.setsockopt(IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    stream.setsockopt(IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
  });
  (void)refused;
}

}  // namespace cellserve::rpc
