// kernels/cuda/cell_kernels.h implemented on the host for the fake CUDA runtime
// (tests/fakecuda/README.md): each launch is one stream operation that runs the kernel's
// per-element body from kernels/gpu/cell_math.h over every element, the same bodies the CUDA
// kernels run. The argument checks match kernels/cuda/cell_kernels.cu.
#include <cstdint>
#include <initializer_list>
#include <string>

#include "fake_cuda.h"
#include "kernels/cuda/cell_kernels.h"
#include "kernels/gpu/cell_math.h"
#include "runtime/tensor.h"

namespace cellserve::cuda {

namespace {

void Store(void* x, int64_t i, float v, GemmDtype dtype) {
  switch (dtype) {
    case GemmDtype::kF16: static_cast<uint16_t*>(x)[i] = FloatToHalf(v); return;
    case GemmDtype::kBF16: static_cast<uint16_t*>(x)[i] = fakecuda::FloatToBf16(v); return;
    case GemmDtype::kF32: break;
  }
  static_cast<float*>(x)[i] = v;
}

Status Enqueued(cudaError_t e, const char* what) {
  return e == cudaSuccess ? OkStatus() : Internal(std::string(what) + ": " + cudaGetErrorName(e));
}

// A kernel may use only memory its stream's device can: else the launch fails with the reason (on
// a GPU it would fault, or read another GPU's memory).
Status OnItsDevice(const char* what, cudaStream_t stream, std::initializer_list<const void*> pointers) {
  const std::string why = fakecuda::MemoryNotOn(fakecuda::StreamOrCurrentDevice(stream), pointers);
  if (why.empty()) return OkStatus();
  fakecuda::LaunchFailed(stream);
  return Internal(std::string(what) + ": " + why);
}

}  // namespace

int64_t GatherWidth(CellOp op, int64_t input_dim, int64_t hidden) {
  return gpu::GatherWidthOf(op, input_dim, hidden);
}

Status LaunchGather(const GatherArgs& a, cudaStream_t stream) {
  if (a.bucket < 0 || a.hidden < 0 || a.input_dim < 0) return InvalidArgument("LaunchGather: negative size");
  const int64_t width = GatherWidth(a.op, a.input_dim, a.hidden);
  RETURN_IF_ERROR(OnItsDevice("GatherKernel", stream, {a.index, a.embedding, a.state, a.x}));
  return Enqueued(fakecuda::Enqueue(stream,
                                    [a, width] {
                                      for (int32_t row = 0; row < a.bucket; ++row)
                                        for (int64_t col = 0; col < width; ++col)
                                          Store(a.x, row * width + col,
                                                gpu::GatherValue(a.op, a.index, a.bucket, row, col, a.embedding,
                                                                 a.state, a.input_dim, a.hidden),
                                                a.dtype);
                                    }),
                  "GatherKernel");
}

Status LaunchCellPointwise(const PointwiseArgs& a, cudaStream_t stream) {
  if (gpu::GateCount(a.op) == 0) return InvalidArgument("LaunchCellPointwise: a head has no element-wise cell pass");
  if (a.bucket < 0 || a.hidden < 0) return InvalidArgument("LaunchCellPointwise: negative size");
  RETURN_IF_ERROR(OnItsDevice("CellPointwiseKernel", stream, {a.index, a.gates, a.bias, a.folded, a.state}));
  return Enqueued(fakecuda::Enqueue(stream,
                                    [a] {
                                      for (int32_t row = 0; row < a.bucket; ++row)
                                        for (int64_t j = 0; j < a.hidden; ++j)
                                          gpu::CellPointwiseElement(a.op, a.index, a.bucket, row, j, a.gates,
                                                                    a.bias, a.folded, a.state, a.hidden);
                                    }),
                  "CellPointwiseKernel");
}

Status LaunchHeadArgmax(const HeadArgs& a, cudaStream_t stream) {
  if (a.rows < 0) return InvalidArgument("LaunchHeadArgmax: negative row count");
  if (a.rows == 0) return OkStatus();
  if (a.outputs <= 0 || a.outputs > INT32_MAX) return InvalidArgument("LaunchHeadArgmax: outputs out of range");
  RETURN_IF_ERROR(OnItsDevice("HeadArgmaxKernel", stream, {a.logits, a.bias, a.argmax, a.max_value}));
  return Enqueued(fakecuda::Enqueue(stream,
                                    [a] {
                                      // 32 lanes combined in a tree, like the kernel's block.
                                      constexpr int32_t kLanes = 32;
                                      for (int32_t row = 0; row < a.rows; ++row) {
                                        float* logits = a.logits + row * a.outputs;
                                        gpu::ArgMax part[kLanes];
                                        for (int32_t lane = 0; lane < kLanes; ++lane)
                                          part[lane] = gpu::PartialArgMax(logits, a.bias, a.outputs, lane, kLanes);
                                        for (int32_t stride = kLanes / 2; stride > 0; stride /= 2)
                                          for (int32_t lane = 0; lane < stride; ++lane)
                                            part[lane] = gpu::CombineArgMax(part[lane], part[lane + stride]);
                                        a.argmax[row] = part[0].index;
                                        a.max_value[row] = part[0].value;
                                      }
                                    }),
                  "HeadArgmaxKernel");
}

Status LaunchAddBias(float* table, const float* bias, int64_t rows, int64_t width, cudaStream_t stream) {
  if (rows < 0 || width < 0) return InvalidArgument("LaunchAddBias: negative size");
  const int64_t total = rows * width;
  RETURN_IF_ERROR(OnItsDevice("AddBiasKernel", stream, {table, bias}));
  return Enqueued(fakecuda::Enqueue(stream,
                                    [table, bias, width, total] {
                                      for (int64_t i = 0; i < total; ++i)
                                        gpu::AddBiasElement(table, bias, width, i);
                                    }),
                  "AddBiasKernel");
}

Status LaunchConvert(const float* src, void* dst, int64_t n, GemmDtype dtype, cudaStream_t stream) {
  if (n < 0) return InvalidArgument("LaunchConvert: negative size");
  RETURN_IF_ERROR(OnItsDevice("ConvertKernel", stream, {src, dst}));
  return Enqueued(fakecuda::Enqueue(stream,
                                    [src, dst, n, dtype] {
                                      for (int64_t i = 0; i < n; ++i) Store(dst, i, src[i], dtype);
                                    }),
                  "ConvertKernel");
}

}  // namespace cellserve::cuda
