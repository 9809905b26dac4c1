// StatePool: index management for a device's state slots (DESIGN.md §2). A slot stores one
// cell's output (h and c); the storage itself lives on the device (kernels/), this class only hands
// out indices and counts readers. A slot is allocated with the number of cells that will read it
// and freed when the last one has (Consume), or at once by its owner (Free: request finished,
// cancelled or failed). The pool is bounded: a full pool is RESOURCE_EXHAUSTED, never a crash or a
// wait. Not thread-safe: owned by one worker.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/status.h"

namespace cellserve {

using SlotId = int32_t;

class StatePool {
 public:
  explicit StatePool(int32_t capacity);

  // A free slot whose output `readers` (>= 1) cells will read, or RESOURCE_EXHAUSTED.
  StatusOr<SlotId> Allocate(int32_t readers);
  // One reader is done with `slot`; frees it after the last. Returns true if it was freed.
  bool Consume(SlotId slot);
  // Frees `slot` now, whatever readers remain (no-op if it is already free).
  void Free(SlotId slot);

  bool in_use(SlotId slot) const { return readers_[slot] > 0; }
  int32_t readers(SlotId slot) const { return readers_[slot]; }
  int32_t capacity() const { return static_cast<int32_t>(readers_.size()); }
  int32_t used() const { return capacity() - static_cast<int32_t>(free_.size()); }
  int32_t available() const { return static_cast<int32_t>(free_.size()); }

 private:
  std::vector<int32_t> readers_;  // 0 = free
  std::vector<SlotId> free_;      // LIFO: recently freed slots are warm in cache
};

}  // namespace cellserve
