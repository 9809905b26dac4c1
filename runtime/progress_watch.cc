// ProgressWatch: see progress_watch.h.
#include "runtime/progress_watch.h"

#include <algorithm>

namespace cellserve {

void ProgressWatch::Began(int64_t now_us) {
  // Only Began raises the count from zero and it has one caller at a time, so a zero read here
  // stays zero until the add below: the progress time is set before any reader sees the work.
  if (outstanding_.load() == 0) progress_us_.store(now_us);
  outstanding_.fetch_add(1);
}

void ProgressWatch::Ended(int64_t now_us) {
  progress_us_.store(now_us);
  outstanding_.fetch_sub(1);
}

int64_t ProgressWatch::StuckForUs(int64_t now_us) const {
  // The count first: a progress time read after it is at least as new as the one that went with it.
  if (outstanding_.load() <= 0) return 0;
  return std::max<int64_t>(now_us - progress_us_.load(), 0);
}

StuckPart LongestStuck(const ProgressWatch* const* parts, int count, int64_t now_us, int64_t limit_us) {
  StuckPart worst;
  if (limit_us <= 0) return worst;
  for (int i = 0; i < count; ++i) {
    const int64_t for_us = parts[i]->StuckForUs(now_us);
    if (for_us > limit_us && for_us > worst.for_us) worst = StuckPart{true, i, for_us};
  }
  return worst;
}

}  // namespace cellserve
