// ZeroFloats: an array of floats that reads as zeros and takes memory from the system page by page
// as it is first written (an anonymous mapping; the kernel supplies zeroed pages on demand), for
// large arrays most of which may never be used: a CPU device's state slots (--state-slots 65536
// of 2 x hidden floats is 512 MiB at hidden 1024, per device and model). Filling them up front
// cost start-up 2.5-3 s of CPU per GiB and made all of it resident at once.
// Every ZeroFloats alive counts in ReservedBytes(), and the pages of it not yet written in
// UntouchedBytes(), which the headroom subtracts besides the resident memory
// (runtime/memory_limit.h, ReservableHeadroom): reservations made at start are checked together
// before any is touched, and the headroom stays where it was as they fill.
// Ownership: move-only; frees its mapping when destroyed. Thread-safety: one owner; ReservedBytes
// and UntouchedBytes from any thread. A page only read counts as touched (the kernel maps its zero
// page, which mincore calls resident) though it is not resident: the headroom then reads high by
// such pages. Errors: the constructor throws std::bad_alloc when the mapping fails.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cellserve {

class ZeroFloats {
 public:
  ZeroFloats() = default;
  explicit ZeroFloats(size_t count);
  ~ZeroFloats();
  ZeroFloats(ZeroFloats&& other) noexcept;
  ZeroFloats& operator=(ZeroFloats&& other) noexcept;
  ZeroFloats(const ZeroFloats&) = delete;
  ZeroFloats& operator=(const ZeroFloats&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return count_; }

  // The bytes of every ZeroFloats alive in this process.
  static int64_t ReservedBytes();
  // Of those, the bytes of pages never written yet (mincore over each mapping): what is reserved
  // and not yet in the process's resident memory. Takes a lock; about a millisecond per GiB.
  static int64_t UntouchedBytes();

 private:
  void Release();
  float* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace cellserve
