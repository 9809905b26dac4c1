// StopSignals: SIGTERM and SIGINT as a readable file descriptor (a self-pipe), for the long-running
// commands (serve, node, router). The handler only writes a byte (async-signal-safe); a handler
// rather than sigwait because threads we do not start (OpenBLAS's pool, made when the library
// loads) would otherwise take the signal with its default action.
// One instance per process; construct and destroy it on the main thread. The destructor restores
// the default actions and leaves the pipe open: a handler still running on another thread at that
// moment must not write into a descriptor that has been closed and handed out again. The pipe
// does not block (a flood of signals cannot hang a handler) and is not inherited by children.
#pragma once

#include <atomic>

#include "runtime/status.h"

namespace cellserve::tools {

class StopSignals {
 public:
  StopSignals() = default;
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // Installs the handlers. INTERNAL if the pipe cannot be made.
  Status Install();
  int fd() const;  // readable once a signal arrived
  // Blocks until a signal arrives. INTERNAL if the pipe is broken (EBADF, EFAULT, EINVAL); other
  // poll errors are waited out.
  Status Wait() const;
  // Whether a signal (or Fail) has arrived, without waiting or taking it. Any thread.
  bool Arrived() const;

  // Wakes Wait() (and fd()) as a signal does, and marks that part of the process failed (an
  // actor that ended on its own): the command stops as at SIGTERM, then exits 1. Any thread;
  // Install first.
  void Fail();
  bool failed() const { return failed_.load(); }

 private:
  bool installed_ = false;
  std::atomic<bool> failed_{false};
};

}  // namespace cellserve::tools
