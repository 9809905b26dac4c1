// Giving an idle node's freed heap back to the system (see heap_trim.h).
#include "runtime/heap_trim.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace cellserve {

IdleHeapTrim::Decision IdleHeapTrim::OnIdle(int64_t now_us) {
  if (last_trim_us_ == std::numeric_limits<int64_t>::min() || now_us - last_trim_us_ >= interval_us_) {
    last_trim_us_ = now_us;
    return {Action::kTrimNow, 0};
  }
  if (check_due_) return {};
  check_due_ = true;
  return {Action::kCheckLater, last_trim_us_ + interval_us_ - now_us};
}

void ReleaseFreeHeap() {
#if defined(__GLIBC__)
  (void)malloc_trim(0);
#endif
}

}  // namespace cellserve
