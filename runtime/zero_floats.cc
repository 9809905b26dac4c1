// ZeroFloats: see zero_floats.h.
#include "runtime/zero_floats.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace cellserve {

namespace {
// Every live mapping, by address (a move keeps the address), and its bytes.
std::mutex g_mappings_mu;
std::map<const void*, size_t>& Mappings() {  // GUARDED_BY(g_mappings_mu)
  static auto* mappings = new std::map<const void*, size_t>();  // never destroyed: used at exit
  return *mappings;
}
}  // namespace

int64_t ZeroFloats::ReservedBytes() {
  std::lock_guard<std::mutex> lock(g_mappings_mu);
  int64_t reserved = 0;
  for (const auto& [base, bytes] : Mappings()) reserved += static_cast<int64_t>(bytes);
  return reserved;
}

int64_t ZeroFloats::UntouchedBytes() {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::lock_guard<std::mutex> lock(g_mappings_mu);
  int64_t untouched = 0;
  std::vector<unsigned char> resident;
  for (const auto& [base, bytes] : Mappings()) {
    const size_t pages = (bytes + page - 1) / page;
    resident.assign(pages, 0);
    if (::mincore(const_cast<void*>(base), bytes, resident.data()) != 0) continue;  // counted as touched
    size_t touched = 0;
    for (unsigned char r : resident) touched += r & 1;
    untouched += static_cast<int64_t>(bytes) - static_cast<int64_t>(std::min(bytes, touched * page));
  }
  return untouched;
}

ZeroFloats::ZeroFloats(size_t count) : count_(count) {
  if (count == 0) return;
  if (count > SIZE_MAX / sizeof(float)) throw std::bad_alloc();
  const size_t bytes = count * sizeof(float);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  data_ = static_cast<float*>(p);
  std::lock_guard<std::mutex> lock(g_mappings_mu);
  Mappings().emplace(p, bytes);
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
  {
    std::lock_guard<std::mutex> lock(g_mappings_mu);  // before the unmap: UntouchedBytes reads it
    Mappings().erase(data_);
  }
  ::munmap(data_, bytes);
  data_ = nullptr;
  count_ = 0;
}

}  // namespace cellserve
