#include "bench/loopback_rtt.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

namespace cellserve::bench {

namespace {

constexpr size_t kMessage = 64;

Status Errno(const std::string& call) { return Internal(call + ": " + std::strerror(errno)); }

// Closes the descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool ExactIo(int fd, char* buf, bool write) {
  size_t done = 0;
  while (done < kMessage) {
    const ssize_t n = write ? ::write(fd, buf + done, kMessage - done) : ::read(fd, buf + done, kMessage - done);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) errno = EPIPE;  // the other side closed
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

void NoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

StatusOr<LoopbackRtt> MeasureLoopbackRtt(int back_to_back, int after_idle, int idle_ms) {
  Fd listener, client, server;
  listener.fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listener.fd < 0) return Errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listener.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Errno("bind 127.0.0.1:0");
  if (::listen(listener.fd, 1) != 0) return Errno("listen");
  socklen_t len = sizeof(addr);
  if (::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return Errno("getsockname");
  client.fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (client.fd < 0) return Errno("socket");
  if (::connect(client.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Errno("connect");
  server.fd = ::accept(listener.fd, nullptr, nullptr);
  if (server.fd < 0) return Errno("accept");
  NoDelay(client.fd);
  NoDelay(server.fd);

  // The echo thread answers each message until the client shuts its side down.
  std::thread echo([fd = server.fd] {
    char buf[kMessage];
    while (ExactIo(fd, buf, false) && ExactIo(fd, buf, true)) {
    }
  });
  LoopbackRtt rtt;
  Status status = OkStatus();
  char buf[kMessage] = {};
  for (int i = 0; i < back_to_back + after_idle && status.ok(); ++i) {
    const bool idle = i >= back_to_back;
    if (idle) std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
    const auto t0 = std::chrono::steady_clock::now();
    if (!ExactIo(client.fd, buf, true) || !ExactIo(client.fd, buf, false)) {
      status = Errno("loopback echo");
      break;
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    (idle ? rtt.after_idle_us : rtt.back_to_back_us).push_back(us);
  }
  ::shutdown(client.fd, SHUT_WR);
  echo.join();
  if (!status.ok()) return status;
  return rtt;
}

}  // namespace cellserve::bench
