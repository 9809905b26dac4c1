#include "runtime/clock.h"

#include <chrono>

namespace cellserve {

int64_t SteadyClock::NowMicros() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace cellserve
