// Giving the heap a burst freed back to the system once a node is idle. glibc keeps freed memory
// mapped until malloc_trim: after 50 decodes of 65,536 steps a `serve` held 5 MB live and 520 MB
// resident, which counts against a container's memory limit and cellserve_memory_headroom_bytes.
// IdleHeapTrim is the policy (pure: times from the caller's clock, no threads): trim when the last
// request finished, at most once per interval; when a trim is due later, the caller checks again
// then, so a node that stays idle is trimmed too. Not thread-safe: one owner (the node actor).
// ReleaseFreeHeap does it (malloc_trim(0) on glibc, nothing elsewhere): it locks each malloc arena
// in turn and walks its free chunks, so its cost grows with them (20 ms after a burst of long
// decodes, 0.1 ms after a small one).
#pragma once

#include <cstdint>
#include <limits>

namespace cellserve {

class IdleHeapTrim {
 public:
  enum class Action { kNothing, kTrimNow, kCheckLater };
  struct Decision {
    Action action = Action::kNothing;
    int64_t check_in_us = 0;  // kCheckLater: when to call OnIdle again, if the node is idle then
  };
  static constexpr int64_t kDefaultIntervalUs = 10'000'000;  // 10 s

  explicit IdleHeapTrim(int64_t min_interval_us = kDefaultIntervalUs) : interval_us_(min_interval_us) {}

  // The node holds no request at `now_us` (its last one finished, or a check came while it was
  // idle). kTrimNow: call ReleaseFreeHeap. kCheckLater: check again in check_in_us (a check
  // already due gives kNothing).
  Decision OnIdle(int64_t now_us);
  // The check asked for came (call before OnIdle, or instead of it when the node is busy again).
  void CheckCame() { check_due_ = false; }

 private:
  int64_t interval_us_;
  int64_t last_trim_us_ = std::numeric_limits<int64_t>::min();
  bool check_due_ = false;
};

void ReleaseFreeHeap();

}  // namespace cellserve
