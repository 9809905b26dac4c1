// The unfused baseline step and its kernels (unfused_step.cuh).
#include "bench/cuda/unfused_step.cuh"

#include <cstdint>

#include "bench/cuda/device_util.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/gpu/batch_plan.h"

namespace cellserve::lstm_bench {
namespace {

// X[r, col0 + j] = h of slot src[r] (zeros for -1), j < H; X is [B, 2H], the state [slots+1, 2H].
__global__ void GatherHKernel(const float* state, const int32_t* src, int B, int H, float* X, int col0) {
  int64_t n = int64_t{B} * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    int r = static_cast<int>(e / H), j = static_cast<int>(e % H);
    int32_t slot = src[r];
    X[int64_t{r} * 2 * H + col0 + j] = slot < 0 ? 0.f : state[int64_t{slot} * 2 * H + j];
  }
}

__global__ void AddBiasKernel(float* g, const float* bias, int64_t n, int H) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x)
    g[e] += bias[e % H];
}

__global__ void SigmoidKernel(float* g, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x)
    g[e] = 1.f / (1.f + expf(-g[e]));
}

__global__ void TanhKernel(float* g, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x)
    g[e] = tanhf(g[e]);
}

// c_out = f * c_prev + i * g, into the out slots' c.
__global__ void CellUpdateKernel(const float* gi, const float* gf, const float* gg, float* state,
                                 const int32_t* h_src, const int32_t* out, int B, int H) {
  int64_t n = int64_t{B} * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    int r = static_cast<int>(e / H), j = static_cast<int>(e % H);
    float c_prev = h_src[r] < 0 ? 0.f : state[int64_t{h_src[r]} * 2 * H + H + j];
    state[int64_t{out[r]} * 2 * H + H + j] = gf[e] * c_prev + gi[e] * gg[e];
  }
}

// h_out = o * tanh(c_out), into the out slots' h.
__global__ void HiddenUpdateKernel(const float* go, float* state, const int32_t* out, int B, int H) {
  int64_t n = int64_t{B} * H;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    int r = static_cast<int>(e / H), j = static_cast<int>(e % H);
    float* slot = state + int64_t{out[r]} * 2 * H;
    slot[j] = go[e] * tanhf(slot[H + j]);
  }
}

}  // namespace

Status UnfusedStep::Init(Context& ctx, const LstmWeights& w, StatePool& pool) {
  ctx_ = &ctx;
  w_ = &w;
  pool_ = &pool;
  ASSIGN_OR_RETURN(x_, FloatBuffer::Allocate(ctx.device, int64_t{pool.B} * 2 * w.H));
  ASSIGN_OR_RETURN(g_, FloatBuffer::Allocate(ctx.device, int64_t{pool.B} * 4 * w.H));  // 4 gates of [B, H]
  return OkStatus();
}

Status UnfusedStep::Enqueue(int d) const {
  const int H = w_->H, B = pool_->B;
  const int64_t n = int64_t{B} * H;
  const int32_t* idx = pool_->index[d].get();
  float* state = pool_->state.get();
  cudaStream_t s = ctx_->stream;
  GatherHKernel<<<Blocks(n), 256, 0, s>>>(state, idx + gpu::kXSrc * B, B, H, x_.get(), 0);
  CS_CUDA(cudaGetLastError());
  GatherHKernel<<<Blocks(n), 256, 0, s>>>(state, idx + gpu::kHSrc * B, B, H, x_.get(), H);
  CS_CUDA(cudaGetLastError());
  const float one = 1.f, zero = 0.f;
  for (int gate = 0; gate < 4; ++gate) {
    const float* wg = w_->w.get() + int64_t{gate} * H * 2 * H;  // rows [gate*H, gate*H + H)
    CS_CUBLAS(cublasGemmEx(ctx_->blas, CUBLAS_OP_T, CUBLAS_OP_N, H, B, 2 * H, &one, wg, CUDA_R_32F, 2 * H, x_.get(),
                           CUDA_R_32F, 2 * H, &zero, Gate(gate), CUDA_R_32F, H, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
  }
  for (int gate = 0; gate < 4; ++gate) {
    AddBiasKernel<<<Blocks(n), 256, 0, s>>>(Gate(gate), w_->bias.get() + int64_t{gate} * H, n, H);
    CS_CUDA(cudaGetLastError());
  }
  for (int gate : {0, 1, 3}) {  // i, f, o
    SigmoidKernel<<<Blocks(n), 256, 0, s>>>(Gate(gate), n);
    CS_CUDA(cudaGetLastError());
  }
  TanhKernel<<<Blocks(n), 256, 0, s>>>(Gate(2), n);
  CS_CUDA(cudaGetLastError());
  CellUpdateKernel<<<Blocks(n), 256, 0, s>>>(Gate(0), Gate(1), Gate(2), state, idx + gpu::kHSrc * B,
                                            idx + gpu::kOut * B, B, H);
  CS_CUDA(cudaGetLastError());
  HiddenUpdateKernel<<<Blocks(n), 256, 0, s>>>(Gate(3), state, idx + gpu::kOut * B, B, H);
  CS_CUDA(cudaGetLastError());
  return OkStatus();
}

float* UnfusedStep::Gate(int gate) const { return g_.get() + int64_t{gate} * pool_->B * w_->H; }

}  // namespace cellserve::lstm_bench
