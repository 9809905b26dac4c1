// Our fused step: gather + one GEMM + fused pointwise (ours_step.cuh).
#include "bench/cuda/ours_step.cuh"

#include <cstdint>
#include <string>

#include "kernels/cuda/cell_kernels.h"
#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {

Status OursStep::Init(Context& ctx, const LstmWeights& w, StatePool& pool) {
  ctx_ = &ctx;
  w_ = &w;
  pool_ = &pool;
  int64_t k = cuda::GatherWidth(CellOp::kLstm, w.H, w.H);
  if (k != 2 * w.H) return Internal("GatherWidth(kLstm, H, H) = " + std::to_string(k) + ", expected 2H");
  ASSIGN_OR_RETURN(x_, FloatBuffer::Allocate(ctx.device, int64_t{pool.B} * k));
  ASSIGN_OR_RETURN(g_, FloatBuffer::Allocate(ctx.device, int64_t{pool.B} * 4 * w.H));
  return OkStatus();
}

Status OursStep::Enqueue(int d) const {
  const int H = w_->H, B = pool_->B;
  cuda::GatherArgs ga;
  ga.op = CellOp::kLstm;
  ga.index = pool_->index[d].get();
  ga.bucket = B;
  ga.embedding = nullptr;
  ga.state = pool_->state.get();
  ga.input_dim = H;
  ga.hidden = H;
  ga.x = x_.get();
  ga.dtype = cuda::GemmDtype::kF32;
  RETURN_IF_ERROR(cuda::LaunchGather(ga, ctx_->stream));
  const float one = 1.f, zero = 0.f;
  // G (col-major [4H, B] = row-major [B, 4H]) = W (row-major [4H, 2H], so op T) x X^T.
  CS_CUBLAS(cublasGemmEx(ctx_->blas, CUBLAS_OP_T, CUBLAS_OP_N, 4 * H, B, 2 * H, &one, w_->w.get(), CUDA_R_32F,
                         2 * H, x_.get(), CUDA_R_32F, 2 * H, &zero, g_.get(), CUDA_R_32F, 4 * H, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
  cuda::PointwiseArgs pa;
  pa.op = CellOp::kLstm;
  pa.index = pool_->index[d].get();
  pa.bucket = B;
  pa.gates = g_.get();
  pa.bias = w_->bias.get();
  pa.state = pool_->state.get();
  pa.hidden = H;
  return cuda::LaunchCellPointwise(pa, ctx_->stream);
}

}  // namespace cellserve::lstm_bench
