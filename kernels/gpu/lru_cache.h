// LruCache: a bounded map that evicts the least recently used entry when full. The CUDA backend
// keeps its captured graphs in one (GraphKey -> RAII graph handle), so that a model with many cell
// types and buckets cannot grow device memory without bound.
// Contract: capacity >= 1 (0 is taken as 1). Find and Insert mark the entry most recently used.
// An evicted or replaced V is destroyed at once, inside Insert (its destructor frees what it owns).
// Pointers and references to a V stay valid until that V is evicted, replaced or the cache dies.
// K needs operator<; V needs to be movable only. Not thread-safe: the owner locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <map>
#include <utility>

namespace cellserve::gpu {

template <class K, class V>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}
  LruCache(const LruCache&) = delete;
  LruCache& operator=(const LruCache&) = delete;
  LruCache(LruCache&&) = default;  // list and map nodes move with their iterators intact
  LruCache& operator=(LruCache&&) = default;

  // The value of `key` (now the most recently used), or null.
  V* Find(const K& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    MarkUsed(it->second);
    return &it->second->second;
  }

  // Stores `value` under `key`, replacing (and destroying) an existing value of that key, else
  // evicting the least recently used entry first when the cache is full. Returns the stored value.
  V& Insert(K key, V value) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      it->second->second = std::move(value);
      MarkUsed(it->second);
      return it->second->second;
    }
    if (entries_.size() >= capacity_) EvictLeastRecentlyUsed();
    entries_.emplace_front(std::move(key), std::move(value));
    index_.emplace(entries_.front().first, entries_.begin());
    return entries_.front().second;
  }

  size_t size() const { return entries_.size(); }
  size_t capacity() const { return capacity_; }
  // Entries evicted to make room so far (replacements are not evictions).
  int64_t evictions() const { return evictions_; }

 private:
  using Entries = std::list<std::pair<K, V>>;  // most recently used first

  void MarkUsed(typename Entries::iterator entry) { entries_.splice(entries_.begin(), entries_, entry); }

  void EvictLeastRecentlyUsed() {
    auto last = std::prev(entries_.end());
    index_.erase(last->first);
    entries_.erase(last);  // destroys the V
    ++evictions_;
  }

  size_t capacity_;
  Entries entries_;
  std::map<K, typename Entries::iterator> index_;
  int64_t evictions_ = 0;
};

}  // namespace cellserve::gpu
