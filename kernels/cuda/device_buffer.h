// RAII owners of CUDA memory: DeviceBuffer (cudaMalloc, never managed memory) and PinnedBuffer
// (cudaMallocHost, page-locked, so cudaMemcpyAsync from it is truly asynchronous). Move-only.
// A DeviceBuffer remembers its GPU and frees there. Allocation errors are Status:
// RESOURCE_EXHAUSTED when out of memory (cuda_check.h). Included only by kernels/cuda sources.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace cellserve::cuda {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `count` elements of T on GPU `gpu` (made current). count 0 gives an empty buffer.
  static StatusOr<DeviceBuffer> Allocate(int gpu, size_t count) {
    DeviceBuffer b;
    b.gpu_ = gpu;
    b.count_ = count;
    if (count == 0) return StatusOr<DeviceBuffer>(std::move(b));
    CS_CUDA(cudaSetDevice(gpu));
    void* p = nullptr;
    CS_CUDA(cudaMalloc(&p, count * sizeof(T)));
    b.ptr_ = static_cast<T*>(p);
    return StatusOr<DeviceBuffer>(std::move(b));
  }
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
      gpu_ = o.gpu_;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t count() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  void Reset() {
    if (!ptr_) return;
    int current = -1;
    cudaGetDevice(&current);
    if (current != gpu_) cudaSetDevice(gpu_);
    cudaFree(ptr_);  // errors here can only be reported by a later call; nothing to do
    if (current != gpu_ && current >= 0) cudaSetDevice(current);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* ptr_ = nullptr;
  size_t count_ = 0;
  int gpu_ = 0;
};

template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  static StatusOr<PinnedBuffer> Allocate(size_t count) {
    PinnedBuffer b;
    b.count_ = count;
    if (count == 0) return StatusOr<PinnedBuffer>(std::move(b));
    void* p = nullptr;
    CS_CUDA(cudaMallocHost(&p, count * sizeof(T)));
    b.ptr_ = static_cast<T*>(p);
    return StatusOr<PinnedBuffer>(std::move(b));
  }
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept { *this = std::move(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      if (ptr_) cudaFreeHost(ptr_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t count() const { return count_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace cellserve::cuda
