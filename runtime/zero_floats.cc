// ZeroFloats: see zero_floats.h.
#include "runtime/zero_floats.h"

#include <sys/mman.h>

#include <atomic>
#include <new>
#include <utility>

namespace cellserve {

namespace {
std::atomic<int64_t> g_reserved{0};  // the bytes of every ZeroFloats alive
}  // namespace

int64_t ZeroFloats::ReservedBytes() { return g_reserved.load(); }

ZeroFloats::ZeroFloats(size_t count) : count_(count) {
  if (count == 0) return;
  const size_t bytes = count * sizeof(float);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  data_ = static_cast<float*>(p);
  g_reserved += static_cast<int64_t>(bytes);
}

ZeroFloats::~ZeroFloats() { Release(); }

ZeroFloats::ZeroFloats(ZeroFloats&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}

ZeroFloats& ZeroFloats::operator=(ZeroFloats&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

void ZeroFloats::Release() {
  if (!data_) return;
  const size_t bytes = count_ * sizeof(float);
  ::munmap(data_, bytes);
  g_reserved -= static_cast<int64_t>(bytes);
  data_ = nullptr;
  count_ = 0;
}

}  // namespace cellserve
