// The fake cuBLAS (tests/fakecuda/README.md): cublasGemmEx with cuBLAS's documented column-major
// semantics, C(m x n) = alpha * op(A)(m x k) * op(B)(k x n) + beta * C, element (r, c) of a
// matrix M with leading dimension ld at M[r + c * ld]; inputs fp32, fp16 or bf16, output fp32,
// accumulated in fp32 (in K chunks by batch size, as a GPU). Enqueued on the handle's stream
// (captured when the stream captures).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "cublas_v2.h"
#include "fake_cuda.h"
#include "runtime/tensor.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  int device = 0;  // current at cublasCreate: the handle's device
};

namespace {

float Load(const void* p, cudaDataType_t type, int64_t i) {
  switch (type) {
    case CUDA_R_16F: return cellserve::HalfToFloat(static_cast<const uint16_t*>(p)[i]);
    case CUDA_R_16BF: return fakecuda::Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case CUDA_R_32F: break;
  }
  return static_cast<const float*>(p)[i];
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext();
  (*handle)->device = fakecuda::StreamOrCurrentDevice(nullptr);
  fakecuda::CountCublasHandle(1);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle) fakecuda::CountCublasHandle(-1);
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t, cublasGemmAlgo_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (fakecuda::InjectedFailure("cublasGemmEx")) {
    fakecuda::LaunchFailed(handle->stream);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  if (m < 0 || n < 0 || k < 0 || Ctype != CUDA_R_32F || transa == CUBLAS_OP_C || transb == CUBLAS_OP_C)
    return CUBLAS_STATUS_INVALID_VALUE;
  // cuBLAS's argument checks: each leading dimension covers its stored rows.
  if (lda < (transa == CUBLAS_OP_N ? m : k) || ldb < (transb == CUBLAS_OP_N ? k : n) || ldc < m)
    return CUBLAS_STATUS_INVALID_VALUE;
  // The handle's device runs it: its stream and its matrices must be that device's (on a GPU,
  // cuBLAS would fail the launch or fault).
  if (handle->stream && fakecuda::StreamOrCurrentDevice(handle->stream) != handle->device) {
    std::fprintf(stderr, "fake cuBLAS: cublasGemmEx: the handle's stream is on another device\n");
    fakecuda::LaunchFailed(handle->stream);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  const std::string why = fakecuda::MemoryNotOn(handle->device, {A, B, C});
  if (!why.empty()) {
    std::fprintf(stderr, "fake cuBLAS: cublasGemmEx: %s\n", why.c_str());
    fakecuda::LaunchFailed(handle->stream);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);  // host scalars
  // As a GPU sums (CUBLAS_COMPUTE_32F): in fp32, in K chunks whose size depends on the batch (n),
  // as cuBLAS picks another split-K kernel per shape; so the tests' tolerances hold against the
  // rounding a real GPU has, not a double-precision sum's, and results may differ by batch size
  // in the last bits, as they may on a GPU.
  const int chunk = n <= 8 ? 32 : n <= 64 ? 64 : 256;
  fakecuda::Enqueue(handle->stream, [=] {
    float* c_out = static_cast<float*>(C);
    for (int col = 0; col < n; ++col)
      for (int row = 0; row < m; ++row) {
        float sum = 0;
        for (int k0 = 0; k0 < k; k0 += chunk) {
          float part = 0;
          for (int i = k0; i < std::min(k, k0 + chunk); ++i) {
            const int64_t ai = transa == CUBLAS_OP_N ? row + int64_t{i} * lda : i + int64_t{row} * lda;
            const int64_t bi = transb == CUBLAS_OP_N ? i + int64_t{col} * ldb : col + int64_t{i} * ldb;
            part = std::fma(Load(A, Atype, ai), Load(B, Btype, bi), part);
          }
          sum += part;
        }
        float& out = c_out[row + int64_t{col} * ldc];
        out = a * sum + (b == 0.0f ? 0.0f : b * out);
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}
