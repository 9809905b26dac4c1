// ReadFromAFifo: makes a FIFO at `path` and calls `read` on it from another thread, for tests that
// a reader refuses a FIFO instead of waiting for a writer that never comes. If `read` has not
// returned within 10 s, a writer is opened to let it go and the answer is INTERNAL "waited for a
// writer"; otherwise it is what `read` returned. The FIFO is removed either way.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <string>

#include "runtime/status.h"

namespace cellserve::testutil {

inline Status ReadFromAFifo(const std::string& path, const std::function<Status(const std::string&)>& read) {
  std::remove(path.c_str());
  if (::mkfifo(path.c_str(), 0600) != 0) return Internal("mkfifo " + path + " failed");
  auto reading = std::async(std::launch::async, [&] { return read(path); });
  Status result = OkStatus();
  if (reading.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    const int unblock = ::open(path.c_str(), O_WRONLY);  // let the reader go
    reading.wait();
    ::close(unblock);
    result = Internal("waited for a writer on the FIFO " + path);
  } else {
    result = reading.get();
  }
  std::remove(path.c_str());
  return result;
}

}  // namespace cellserve::testutil
