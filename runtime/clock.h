// Clock: the only source of time in runtime/. Production code gets SteadyClock; tests get
// FakeClock, which moves only when the test says so (as TF-Serving's FakeClockEnv).
// SteadyClock is thread-safe; FakeClock is thread-compatible (one owner thread).
#pragma once

#include <cstdint>

namespace cellserve {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic microseconds since an arbitrary epoch.
  virtual int64_t NowMicros() const = 0;
};

class SteadyClock final : public Clock {
 public:
  int64_t NowMicros() const override;
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 0) : now_us_(start_us) {}
  int64_t NowMicros() const override { return now_us_; }
  void AdvanceMicros(int64_t delta_us) { now_us_ += delta_us; }
  void SetMicros(int64_t now_us) { now_us_ = now_us; }

 private:
  int64_t now_us_;
};

}  // namespace cellserve
