#include "runtime/state_pool.h"

#include <cassert>

namespace cellserve {

StatePool::StatePool(int32_t capacity) : readers_(capacity > 0 ? capacity : 0, 0) {
  free_.reserve(readers_.size());
  for (int32_t i = capacity - 1; i >= 0; --i) free_.push_back(i);
}

StatusOr<SlotId> StatePool::Allocate(int32_t readers) {
  if (readers < 1) return Internal("a state slot needs at least one reader");
  if (free_.empty())
    return ResourceExhausted("state pool is full (" + std::to_string(capacity()) + " slots in use)");
  SlotId slot = free_.back();
  free_.pop_back();
  readers_[slot] = readers;
  return slot;
}

bool StatePool::Consume(SlotId slot) {
  assert(readers_[slot] > 0);
  if (readers_[slot] <= 0) return false;
  if (--readers_[slot] > 0) return false;
  free_.push_back(slot);
  return true;
}

void StatePool::Free(SlotId slot) {
  if (readers_[slot] <= 0) return;
  readers_[slot] = 0;
  free_.push_back(slot);
}

}  // namespace cellserve
