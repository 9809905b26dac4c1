#include "tools/stop_signal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace cellserve::tools {
namespace {

int g_wake[2] = {-1, -1};  // the self-pipe: OnStopSignal writes, readers poll

void OnStopSignal(int) {
  const int saved = errno;
  const char byte = 1;
  (void)!write(g_wake[1], &byte, 1);
  errno = saved;
}

}  // namespace

Status StopSignals::Install() {
  if (g_wake[0] < 0 && pipe2(g_wake, O_NONBLOCK | O_CLOEXEC) != 0)
    return Internal(std::string("pipe: ") + std::strerror(errno));
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  installed_ = true;
  return OkStatus();
}

StopSignals::~StopSignals() {
  if (!installed_) return;
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
}

int StopSignals::fd() const { return g_wake[0]; }

void StopSignals::Fail() {
  failed_ = true;
  OnStopSignal(SIGTERM);
}

bool StopSignals::Arrived() const {
  pollfd fd = {g_wake[0], POLLIN, 0};
  return poll(&fd, 1, 0) > 0;
}

Status StopSignals::Wait() const {
  for (;;) {
    pollfd fd = {g_wake[0], POLLIN, 0};
    if (poll(&fd, 1, -1) > 0) return OkStatus();
    // Only a broken pipe ends the wait. Anything else is waited out: EINTR, ENOMEM, and the
    // kernel's internal restart code (errno 516) that leaks out when a debugger attaches and fails
    // to restore the thread's registers (seen with gdb on a CPU with AMX state): a process serving
    // traffic must not exit because someone looked at it.
    if (errno == EBADF || errno == EFAULT || errno == EINVAL) return Internal(std::string("poll: ") + std::strerror(errno));
    if (errno != EINTR) usleep(10000);
  }
}

}  // namespace cellserve::tools
