// Addresses where no server answers, on 127.0.0.1, for connect and call bounds (the node agent's,
// the RPC client's):
//   Blackhole(): a listener whose accept queue is full (backlog 0, one connection parked in it);
//                the kernel drops further SYNs, so a connect waits as for a host that is gone.
//   Silent():    a listener that never accepts but has room: connects succeed, nothing answers
//                (another service on the port, or a hung process).
// Sockets close when the object goes. Test-only; not thread-safe.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

namespace cellserve::testutil {

class DeadEndListener {
 public:
  static DeadEndListener Blackhole() { return DeadEndListener(0, true); }
  static DeadEndListener Silent() { return DeadEndListener(16, false); }
  DeadEndListener(DeadEndListener&& other) noexcept : listen_fd_(other.listen_fd_), filler_fd_(other.filler_fd_), port_(other.port_) {
    other.listen_fd_ = other.filler_fd_ = -1;
  }
  DeadEndListener(const DeadEndListener&) = delete;
  DeadEndListener& operator=(const DeadEndListener&) = delete;
  DeadEndListener& operator=(DeadEndListener&&) = delete;
  ~DeadEndListener() {
    if (filler_fd_ >= 0) close(filler_fd_);
    if (listen_fd_ >= 0) close(listen_fd_);
  }
  uint16_t port() const { return port_; }  // 0 if the socket could not be set up
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  DeadEndListener(int backlog, bool fill) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listen_fd_, backlog) != 0 || getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      return;
    if (fill) {  // the one connection the queue holds
      filler_fd_ = socket(AF_INET, SOCK_STREAM, 0);
      if (filler_fd_ < 0 || connect(filler_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    }
    port_ = ntohs(addr.sin_port);
  }
  int listen_fd_ = -1, filler_fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace cellserve::testutil
