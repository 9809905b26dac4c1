// WaitFor: polls a condition every 5 ms until it holds or `timeout` passes, for tests that wait on
// another thread's progress with a bound rather than a fixed sleep. Returns whether it held.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace cellserve::testutil {

inline bool WaitFor(const std::function<bool()>& done, std::chrono::seconds timeout) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace cellserve::testutil
