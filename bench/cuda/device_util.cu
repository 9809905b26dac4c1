// The bench's utility kernels (device_util.cuh).
#include "bench/cuda/device_util.cuh"

#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {
namespace {

__device__ uint32_t HashU32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

__global__ void FillUniformKernel(float* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = HashU32(static_cast<uint32_t>(i) ^ HashU32(seed + static_cast<uint32_t>(i >> 32) * 0x9e3779b9U));
    p[i] = lo + (hi - lo) * static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
  }
}

// Reads n float4s; writes only if their sum is an impossible value (so the reads stay).
__global__ void ReadAllKernel(const float4* p, int64_t n, float* sink) {
  float s = 0.f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float4 v = p[i];
    s += v.x + v.y + v.z + v.w;
  }
  if (s == 1234567.0f) *sink = s;
}

}  // namespace

Status FillUniform(float* p, int64_t n, uint32_t seed, float lo, float hi, cudaStream_t s) {
  FillUniformKernel<<<Blocks(n), 256, 0, s>>>(p, n, seed, lo, hi);
  CS_CUDA(cudaGetLastError());
  return OkStatus();
}

Status ReadAll(const float4* p, int64_t n, float* sink, cudaStream_t s) {
  ReadAllKernel<<<Blocks(n), 256, 0, s>>>(p, n, sink);
  CS_CUDA(cudaGetLastError());
  return OkStatus();
}

}  // namespace cellserve::lstm_bench
