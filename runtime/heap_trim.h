// Giving the heap a burst freed back to the system once a node is idle. glibc keeps freed memory
// mapped until malloc_trim: after 50 decodes of 65,536 steps a `serve` held 5 MB live and 520 MB
// resident, which counts against a container's memory limit and cellserve_memory_headroom_bytes.
// IdleHeapTrim is the policy (pure: times from the caller's clock, no threads): trim when the last
// request finished, at most once per interval; when a trim is due later, the caller checks again
// then, so a node that stays idle is trimmed too. Not thread-safe: one owner (the node actor).
// ReleaseFreeHeap does it (malloc_trim(0) on glibc, nothing elsewhere): it locks each malloc arena
// in turn, so it takes milliseconds after a big burst and microseconds on a heap already trimmed.
#pragma once

#include <cstdint>
#include <limits>

namespace cellserve {

class IdleHeapTrim {
 public:
  enum class Action { kNothing, kTrimNow, kCheckLater };
  static constexpr int64_t kDefaultIntervalUs = 10'000'000;  // 10 s

  explicit IdleHeapTrim(int64_t min_interval_us = kDefaultIntervalUs) : interval_us_(min_interval_us) {}

  // The node holds no request at `now_us` (its last one finished, or a check came while it was
  // idle). kTrimNow: call ReleaseFreeHeap. kCheckLater: call OnIdle again after later_us(), if the
  // node is idle then (a check already due gives kNothing).
  Action OnIdle(int64_t now_us);
  // The check asked for came (call before OnIdle, or instead of it when the node is busy again).
  void CheckCame() { check_due_ = false; }
  int64_t later_us() const { return later_us_; }

 private:
  int64_t interval_us_;
  int64_t last_trim_us_ = std::numeric_limits<int64_t>::min();
  int64_t later_us_ = 0;
  bool check_due_ = false;
};

void ReleaseFreeHeap();

}  // namespace cellserve
