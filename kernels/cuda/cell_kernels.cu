// The CUDA kernels of one round (kernels/cuda/cell_kernels.h): thin grid-stride wrappers around the
// per-element math of kernels/gpu/cell_math.h, which host tests check against the CPU backend.
#include "kernels/cuda/cell_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/gpu/cell_math.h"

namespace cellserve::cuda {

namespace {

using gpu::ArgMax;

constexpr int kThreadsPerBlock = 256;
// Grid-stride kernels cap their grid here; each thread then handles several elements.
constexpr int64_t kMaxBlocks = 65535;
// The head kernel's block: a power of two (the shared-memory tree halves it each step).
constexpr int kHeadThreads = 256;
static_assert((kHeadThreads & (kHeadThreads - 1)) == 0, "the head reduction needs a power of two");

int BlocksFor(int64_t elements) {
  return static_cast<int>(std::min(kMaxBlocks, (elements + kThreadsPerBlock - 1) / kThreadsPerBlock));
}

__device__ inline int64_t GridStrideStart() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t GridStride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__device__ inline void StoreAs(float* dst, float v) { *dst = v; }
__device__ inline void StoreAs(__half* dst, float v) { *dst = __float2half_rn(v); }
__device__ inline void StoreAs(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16_rn(v); }

// X[row, col] for every element of [bucket, width].
template <typename T>
__global__ void GatherKernel(CellOp op, const int32_t* __restrict__ index, int32_t bucket,
                             const float* __restrict__ embedding, const float* __restrict__ state,
                             int64_t input_dim, int64_t hidden, int64_t width, T* __restrict__ x) {
  const int64_t total = static_cast<int64_t>(bucket) * width;
  for (int64_t i = GridStrideStart(); i < total; i += GridStride()) {
    const int32_t row = static_cast<int32_t>(i / width);
    const int64_t col = i - static_cast<int64_t>(row) * width;
    StoreAs(x + i, gpu::GatherValue(op, index, bucket, row, col, embedding, state, input_dim, hidden));
  }
}

// One thread per (row, j < H). Not __restrict__ on state: a row's out slot may be its own h_src.
__global__ void CellPointwiseKernel(CellOp op, const int32_t* __restrict__ index, int32_t bucket,
                                    const float* __restrict__ gates, const float* __restrict__ bias,
                                    const float* __restrict__ folded, float* state, int64_t hidden) {
  const int64_t total = static_cast<int64_t>(bucket) * hidden;
  for (int64_t i = GridStrideStart(); i < total; i += GridStride()) {
    const int32_t row = static_cast<int32_t>(i / hidden);
    const int64_t j = i - static_cast<int64_t>(row) * hidden;
    gpu::CellPointwiseElement(op, index, bucket, row, j, gates, bias, folded, state, hidden);
  }
}

__global__ void AddBiasKernel(float* __restrict__ table, const float* __restrict__ bias, int64_t width,
                              int64_t total) {
  for (int64_t i = GridStrideStart(); i < total; i += GridStride()) gpu::AddBiasElement(table, bias, width, i);
}

// One block of kHeadThreads per row: each thread adds the bias to its strided columns and keeps
// their argmax; a shared-memory tree of CombineArgMax reduces the block (first index wins ties).
__global__ void __launch_bounds__(kHeadThreads)
    HeadArgmaxKernel(float* __restrict__ logits, const float* __restrict__ bias, int64_t outputs,
                     int32_t* __restrict__ argmax, float* __restrict__ max_value) {
  __shared__ ArgMax partial[kHeadThreads];
  const int32_t row = static_cast<int32_t>(blockIdx.x);
  const int32_t lane = static_cast<int32_t>(threadIdx.x);
  float* row_logits = logits + static_cast<int64_t>(row) * outputs;
  partial[lane] = gpu::PartialArgMax(row_logits, bias, outputs, lane, kHeadThreads);
  __syncthreads();
  for (int32_t stride = kHeadThreads / 2; stride > 0; stride /= 2) {
    if (lane < stride) partial[lane] = gpu::CombineArgMax(partial[lane], partial[lane + stride]);
    __syncthreads();
  }
  if (lane == 0) {
    argmax[row] = partial[0].index;
    max_value[row] = partial[0].value;
  }
}

template <typename T>
__global__ void ConvertKernel(const float* __restrict__ src, T* __restrict__ dst, int64_t n) {
  for (int64_t i = GridStrideStart(); i < n; i += GridStride()) StoreAs(dst + i, src[i]);
}

template <typename T>
void LaunchGatherAs(const GatherArgs& a, int64_t width, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(a.bucket) * width;
  (void)cudaGetLastError();  // clear an earlier call's error: the check after the launch is this launch's
  GatherKernel<T><<<BlocksFor(total), kThreadsPerBlock, 0, stream>>>(
      a.op, a.index, a.bucket, a.embedding, a.state, a.input_dim, a.hidden, width, static_cast<T*>(a.x));
}

template <typename T>
void LaunchConvertAs(const float* src, void* dst, int64_t n, cudaStream_t stream) {
  (void)cudaGetLastError();
  ConvertKernel<T><<<BlocksFor(n), kThreadsPerBlock, 0, stream>>>(src, static_cast<T*>(dst), n);
}

bool KnownDtype(GemmDtype d) {
  return d == GemmDtype::kF32 || d == GemmDtype::kF16 || d == GemmDtype::kBF16;
}

}  // namespace

int64_t GatherWidth(CellOp op, int64_t input_dim, int64_t hidden) {
  return gpu::GatherWidthOf(op, input_dim, hidden);
}

Status LaunchGather(const GatherArgs& args, cudaStream_t stream) {
  if (args.bucket < 0 || args.hidden < 0 || args.input_dim < 0 || !KnownDtype(args.dtype))
    return InvalidArgument("LaunchGather: negative size or unknown dtype");
  const int64_t width = GatherWidth(args.op, args.input_dim, args.hidden);
  if (static_cast<int64_t>(args.bucket) * width == 0) return OkStatus();
  switch (args.dtype) {
    case GemmDtype::kF32: LaunchGatherAs<float>(args, width, stream); break;
    case GemmDtype::kF16: LaunchGatherAs<__half>(args, width, stream); break;
    case GemmDtype::kBF16: LaunchGatherAs<__nv_bfloat16>(args, width, stream); break;
  }
  return CudaStatus(cudaGetLastError(), "GatherKernel");
}

Status LaunchCellPointwise(const PointwiseArgs& args, cudaStream_t stream) {
  if (gpu::GateCount(args.op) == 0)
    return InvalidArgument("LaunchCellPointwise: a head has no element-wise cell pass");
  if (args.bucket < 0 || args.hidden < 0) return InvalidArgument("LaunchCellPointwise: negative size");
  const int64_t total = static_cast<int64_t>(args.bucket) * args.hidden;
  if (total == 0) return OkStatus();
  (void)cudaGetLastError();
  CellPointwiseKernel<<<BlocksFor(total), kThreadsPerBlock, 0, stream>>>(
      args.op, args.index, args.bucket, args.gates, args.bias, args.folded, args.state, args.hidden);
  return CudaStatus(cudaGetLastError(), "CellPointwiseKernel");
}

Status LaunchHeadArgmax(const HeadArgs& args, cudaStream_t stream) {
  if (args.rows < 0) return InvalidArgument("LaunchHeadArgmax: negative row count");
  if (args.rows == 0) return OkStatus();
  if (args.outputs <= 0 || args.outputs > INT32_MAX)
    return InvalidArgument("LaunchHeadArgmax: outputs must be in [1, 2^31), got " +
                           std::to_string(args.outputs));
  (void)cudaGetLastError();
  HeadArgmaxKernel<<<static_cast<unsigned>(args.rows), kHeadThreads, 0, stream>>>(
      args.logits, args.bias, args.outputs, args.argmax, args.max_value);
  return CudaStatus(cudaGetLastError(), "HeadArgmaxKernel");
}

Status LaunchAddBias(float* table, const float* bias, int64_t rows, int64_t width, cudaStream_t stream) {
  if (rows < 0 || width < 0) return InvalidArgument("LaunchAddBias: negative size");
  const int64_t total = rows * width;
  if (total == 0) return OkStatus();
  (void)cudaGetLastError();
  AddBiasKernel<<<BlocksFor(total), kThreadsPerBlock, 0, stream>>>(table, bias, width, total);
  return CudaStatus(cudaGetLastError(), "AddBiasKernel");
}

Status LaunchConvert(const float* src, void* dst, int64_t n, GemmDtype dtype, cudaStream_t stream) {
  if (n < 0 || !KnownDtype(dtype)) return InvalidArgument("LaunchConvert: negative size or unknown dtype");
  if (n == 0) return OkStatus();
  switch (dtype) {
    case GemmDtype::kF32: LaunchConvertAs<float>(src, dst, n, stream); break;
    case GemmDtype::kF16: LaunchConvertAs<__half>(src, dst, n, stream); break;
    case GemmDtype::kBF16: LaunchConvertAs<__nv_bfloat16>(src, dst, n, stream); break;
  }
  return CudaStatus(cudaGetLastError(), "ConvertKernel");
}

}  // namespace cellserve::cuda
