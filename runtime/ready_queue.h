// ReadyQueue: one cell type's ready cells, in the order the scheduler serves them (DESIGN.md §4):
// oldest request first, then the earliest cell of it. Pushes collect apart and are merged in
// before the next look at the front (empty()), so the common cases cost no merge: a round's
// successors are older than everything still queued (they go back in front, where the round made
// room) and new requests are younger (appended). Amortised O(1) per cell, against a heap's
// O(log n). Stale entries (cells of requests that have gone) are the caller's to skip.
// Not thread-safe: owned by one scheduler. Header-only; pure.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <vector>

namespace cellserve {

// A ready cell: `seq` is its request's admission order (smaller is older, unique per admission);
// `index` finds the request in the scheduler's slab without hashing.
struct ReadyCell {
  uint64_t seq;
  int32_t cell;  // a CellId
  uint32_t index;
  bool operator<(const ReadyCell& o) const { return seq != o.seq ? seq < o.seq : cell < o.cell; }
};

class ReadyQueue {
 public:
  void push(const ReadyCell& c) { incoming_.push_back(c); }
  // Merges what was pushed since the last call; true when nothing is queued.
  bool empty() {
    Merge();
    return head_ == items_.size();
  }
  const ReadyCell& top() const { return items_[head_]; }  // precondition: !empty() just returned
  void pop() { ++head_; }
  // Queued entries, merged or not, counting stale ones not yet met.
  size_t size() const { return items_.size() - head_ + incoming_.size(); }

 private:
  void Merge() {
    if (incoming_.empty()) return;
    if (!std::is_sorted(incoming_.begin(), incoming_.end())) std::sort(incoming_.begin(), incoming_.end());
    const size_t n = incoming_.size();
    if (head_ == items_.size() || items_.back() < incoming_.front()) {
      items_.insert(items_.end(), incoming_.begin(), incoming_.end());
    } else if (incoming_.back() < items_[head_] && head_ >= n) {
      head_ -= n;
      std::copy(incoming_.begin(), incoming_.end(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
    } else {
      merged_.clear();
      merged_.reserve(items_.size() - head_ + n);
      std::merge(items_.begin() + static_cast<std::ptrdiff_t>(head_), items_.end(), incoming_.begin(),
                 incoming_.end(), std::back_inserter(merged_));
      items_.swap(merged_);
      head_ = 0;
    }
    incoming_.clear();
    if (head_ > 1024 && head_ * 2 > items_.size()) {  // drop the consumed prefix now and then
      items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  std::vector<ReadyCell> items_, incoming_, merged_;
  size_t head_ = 0;
};

}  // namespace cellserve
