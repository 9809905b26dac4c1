// TCP keepalive on RPC connections, at both ends. A peer that vanished without closing its
// connection (its machine lost power, a network partition, a NAT or firewall that forgot the
// flow) sends no FIN and no RST, so nothing ever tells the other end: a server kept the
// connection's slot (--max-connections) for good, and a client waited for good on a call without
// a deadline. With keepalive the kernel probes a connection on which nothing arrived for
// `idle_s`, every `interval_s`; after `count` unanswered probes the connection fails with
// ETIMEDOUT and the usual disconnect path runs (the server cancels its calls and frees the slot;
// the client's calls end UNAVAILABLE). A peer that is alive answers the probes in its kernel,
// however busy or stopped its process, so it is never dropped this way. Probes go only while
// nothing is unacknowledged; an answer written to a vanished client is bounded by TCP_USER_TIMEOUT,
// set to the same DropAfterS() (without it, the kernel's retransmissions go on for about 15
// minutes, net.ipv4.tcp_retries2). That also drops a live peer whose receive window
// stays shut that long: one that stopped reading while answers wait for it.
// Threads: ApplyTcpKeepalive runs on the thread of the kj loop that owns the stream. Errors: none
// returned; a stream that is not a TCP socket (a unix socket) is left as it is.
#pragma once

#include <kj/async-io.h>

namespace cellserve::rpc {

struct TcpKeepalive {
  int idle_s = 60;      // probes start after this long with nothing received; 0: keepalive off
  int interval_s = 10;  // between probes
  int count = 6;        // unanswered probes before the connection fails

  bool on() const { return idle_s > 0; }
  // About how long after its last word a vanished peer's connection fails.
  int DropAfterS() const { return idle_s + interval_s * count; }
  // Probes after `idle_s`, then every max(1, idle_s / 6) s, 6 of them: a vanished peer is dropped
  // after about 2 x idle_s (the default, 60 s: 2 minutes). 0: off.
  static TcpKeepalive AfterIdle(int idle_s);
};

// Sets SO_KEEPALIVE with TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT, and TCP_USER_TIMEOUT of
// DropAfterS(), on `stream`'s socket when `keepalive.on()`; leaves it alone otherwise.
void ApplyTcpKeepalive(kj::AsyncIoStream& stream, const TcpKeepalive& keepalive);

}  // namespace cellserve::rpc
