// ProgressWatch: tells a stuck part of a serving process (a device whose round never completes,
// an actor that never gets to its mailbox) from a busy one and from an idle one, so that health
// can say "not ready" while the process still accepts connections (docs/OPERATIONS.md, "A stuck
// node"). The owner of the work calls Began when it hands the part one unit of work (a round, a
// probe message) and the part calls Ended when it has done one; the part is stuck when it has had
// work outstanding and done none of it for longer than a limit. A part that takes long but keeps
// finishing work is not stuck; neither is an idle one, however long ago it last worked.
// Times are the caller's clock (micros); nothing here reads a clock or starts a thread.
// Thread-safety: Began from one thread at a time, Ended from any one thread at a time, StuckForUs
// from any thread, all at once (atomics). A reader never sees a part stuck that was not: Began
// from idle moves the progress time before the count, Ended moves it before the count drops.
#pragma once

#include <atomic>
#include <cstdint>

namespace cellserve {

class ProgressWatch {
 public:
  // One unit of work handed to the part at `now_us`.
  void Began(int64_t now_us);
  // One unit of work done at `now_us` (each Ended matches one earlier Began).
  void Ended(int64_t now_us);
  // Units handed over and not done yet.
  int64_t outstanding() const { return outstanding_.load(); }
  // How long the part has had work outstanding without finishing any (micros since the later of
  // its last Ended and the Began that found it idle); 0 when it has none.
  int64_t StuckForUs(int64_t now_us) const;

 private:
  std::atomic<int64_t> outstanding_{0};
  std::atomic<int64_t> progress_us_{0};  // the last Ended, or the Began that found the part idle
};

// The verdict on a set of watched parts: the one stuck longest beyond `limit_us`, if any.
struct StuckPart {
  bool stuck = false;
  int index = -1;         // the caller's index of the part
  int64_t for_us = 0;     // how long it has been stuck
};
// limit_us <= 0: nothing is ever stuck (the check is off).
StuckPart LongestStuck(const ProgressWatch* const* parts, int count, int64_t now_us, int64_t limit_us);

}  // namespace cellserve
