#include "cluster/tcp_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace cellserve::cluster {
namespace {

// Closes the socket on every path.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

StatusOr<std::vector<std::string>> ResolveAddresses(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0)
    return Unavailable("cannot resolve " + host + ": " + gai_strerror(rc));
  std::vector<std::string> ips;
  for (addrinfo* a = found; a; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* where = a->ai_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
    if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) && inet_ntop(a->ai_family, where, text, sizeof(text)) &&
        std::find(ips.begin(), ips.end(), text) == ips.end())
      ips.push_back(text);
  }
  freeaddrinfo(found);
  if (ips.empty()) return Unavailable("cannot resolve " + host + ": it has no IPv4 or IPv6 address");
  return ips;
}

Status ProbeTcp(const std::string& host, uint16_t port, int64_t timeout_ms, const std::atomic<bool>* stop) {
  if (timeout_ms < 1) return InvalidArgument("a connect timeout must be at least 1 ms");
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0 || !found)
    return Unavailable("cannot resolve " + host + ": " + gai_strerror(rc));
  Fd sock;
  sock.fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int made = errno;
  int rc = sock.fd < 0 ? -1 : connect(sock.fd, found->ai_addr, found->ai_addrlen);
  const int connect_errno = errno;
  freeaddrinfo(found);
  if (sock.fd < 0) return Unavailable("socket for " + where + ": " + std::strerror(made));
  if (rc == 0) return OkStatus();
  if (connect_errno != EINPROGRESS) return Unavailable("cannot connect to " + where + ": " + std::strerror(connect_errno));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (stop && stop->load()) return Cancelled("stopped while connecting to " + where);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return DeadlineExceeded("no answer from " + where + " within " + std::to_string(timeout_ms) + " ms");
    pollfd p = {sock.fd, POLLOUT, 0};
    rc = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 50)));
    if (rc < 0 && errno != EINTR) return Unavailable("poll on " + where + ": " + std::strerror(errno));
    if (rc > 0) {
      int error = 0;
      socklen_t len = sizeof(error);
      if (getsockopt(sock.fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
      if (error != 0) return Unavailable("cannot connect to " + where + ": " + std::strerror(error));
      return OkStatus();
    }
  }
}

}  // namespace cellserve::cluster
