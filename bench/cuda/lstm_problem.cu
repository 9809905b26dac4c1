// The weights and the state pool of the benchmarked step (lstm_problem.cuh).
#include "bench/cuda/lstm_problem.cuh"

#include <cmath>

#include "bench/cuda/device_util.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/gpu/batch_plan.h"

namespace cellserve::lstm_bench {

Status LstmWeights::Init(Context& ctx, int hidden) {
  H = hidden;
  int64_t n = int64_t{4} * H * 2 * H;
  ASSIGN_OR_RETURN(w, FloatBuffer::Allocate(ctx.device, n));
  ASSIGN_OR_RETURN(bias, FloatBuffer::Allocate(ctx.device, int64_t{4} * H));
  float k = 1.0f / std::sqrt(static_cast<float>(H));  // PyTorch's LSTM init range
  RETURN_IF_ERROR(FillUniform(w.get(), n, 1000u + H, -k, k, ctx.stream));
  RETURN_IF_ERROR(FillUniform(bias.get(), int64_t{4} * H, 2000u + H, -k, k, ctx.stream));
  host_w.resize(n);
  host_bias.resize(int64_t{4} * H);
  CS_CUDA(cudaMemcpyAsync(host_w.data(), w.get(), n * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(host_bias.data(), bias.get(), host_bias.size() * sizeof(float), cudaMemcpyDeviceToHost,
                          ctx.stream));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  return OkStatus();
}

std::vector<int32_t> StatePool::Plan(int B, int from, int to) {
  std::vector<int32_t> idx(static_cast<size_t>(gpu::kPlanArrays) * B);
  for (int r = 0; r < B; ++r) {
    idx[gpu::kXSrc * B + r] = from + (B - 1 - r);  // x: the h of another slot of the same set
    idx[gpu::kHSrc * B + r] = from + r;
    idx[gpu::kH2Src * B + r] = -1;
    idx[gpu::kOut * B + r] = to + r;
  }
  return idx;
}

Status StatePool::Init(Context& ctx, int hidden, int batch) {
  H = hidden;
  B = batch;
  ASSIGN_OR_RETURN(state, FloatBuffer::Allocate(ctx.device, floats()));
  host_index[0] = Plan(B, 0, B);
  host_index[1] = Plan(B, B, 0);
  for (int d = 0; d < 2; ++d) {
    ASSIGN_OR_RETURN(index[d], IndexBuffer::Allocate(ctx.device, host_index[d].size()));
    CS_CUDA(cudaMemcpyAsync(index[d].get(), host_index[d].data(), host_index[d].size() * sizeof(int32_t),
                            cudaMemcpyHostToDevice, ctx.stream));
  }
  return Randomize(ctx, 77u);
}

Status StatePool::Randomize(Context& ctx, uint32_t seed) {
  return FillUniform(state.get(), floats(), seed + 31u * B + H, -1.f, 1.f, ctx.stream);
}

}  // namespace cellserve::lstm_bench
