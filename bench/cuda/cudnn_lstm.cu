// cuDNN's LSTM layer and sequence buffers (cudnn_lstm.cuh); nothing without CELLSERVE_HAVE_CUDNN.
#include "bench/cuda/cudnn_lstm.cuh"

#ifdef CELLSERVE_HAVE_CUDNN
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/cuda/cudnn_check.cuh"
#include "bench/cuda/device_util.cuh"
#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {
namespace {

class TensorDesc {
 public:
  TensorDesc() = default;
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  ~TensorDesc() {
    if (d_ != nullptr) cudnnDestroyTensorDescriptor(d_);
  }
  Status Create() {
    CS_CUDNN(cudnnCreateTensorDescriptor(&d_));
    return OkStatus();
  }
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

struct NdShape {
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int nb = 0, dims[8] = {}, strides[8] = {};
  int64_t count() const {
    int64_t n = 1;
    for (int i = 0; i < nb; ++i) n *= dims[i];
    return n;
  }
  std::string ToString() const {
    std::string s = "dims";
    for (int i = 0; i < nb; ++i) s += (i ? "," : " ") + std::to_string(dims[i]);
    s += " strides";
    for (int i = 0; i < nb; ++i) s += (i ? "," : " ") + std::to_string(strides[i]);
    return s;
  }
};

StatusOr<NdShape> GetShape(cudnnTensorDescriptor_t d) {
  NdShape s;
  CS_CUDNN(cudnnGetTensorNdDescriptor(d, 8, &s.type, &s.nb, s.dims, s.strides));
  if (s.type != CUDNN_DATA_FLOAT) return Internal("cuDNN weight params: not fp32");
  return s;
}

Status ExpectCount(cudnnTensorDescriptor_t d, int64_t n, const char* what) {
  ASSIGN_OR_RETURN(NdShape s, GetShape(d));
  if (s.count() == n) return OkStatus();
  return Internal(std::string("cuDNN weight ") + what + ": " + s.ToString() + ", expected " + std::to_string(n) +
                  " elements");
}

// A row-major [rows, cols] block, as PyTorch also assumes: dims {1, rows, cols}, strides {.., cols, 1}.
// Another layout with the right element count is copied the same way with a warning: the
// correctness check then tells whether the copy was right.
Status ExpectMatrix(cudnnTensorDescriptor_t d, int rows, int cols) {
  ASSIGN_OR_RETURN(NdShape s, GetShape(d));
  if (s.nb == 3 && s.dims[0] == 1 && s.dims[1] == rows && s.dims[2] == cols && s.strides[2] == 1 &&
      s.strides[1] == cols)
    return OkStatus();
  if (s.count() != int64_t{rows} * cols)
    return Internal("cuDNN weight matrix: " + s.ToString() + ", expected [" + std::to_string(rows) + ", " +
                    std::to_string(cols) + "]");
  std::fprintf(stderr, "bench_cuda_lstm: warning: cuDNN weight matrix %s, assumed row-major [%d, %d]\n",
               s.ToString().c_str(), rows, cols);
  return OkStatus();
}

}  // namespace

CudnnLstm::~CudnnLstm() {
  if (rnn_ != nullptr) cudnnDestroyRNNDescriptor(rnn_);
  if (dropout_ != nullptr) cudnnDestroyDropoutDescriptor(dropout_);
}

Status CudnnLstm::Init(Context& ctx, const LstmWeights& w, bool fma) {
  H_ = w.H;
  CS_CUDNN(cudnnCreateDropoutDescriptor(&dropout_));
  CS_CUDNN(cudnnSetDropoutDescriptor(dropout_, ctx.dnn, 0.f, nullptr, 0, 0));
  CS_CUDNN(cudnnCreateRNNDescriptor(&rnn_));
  CS_CUDNN(cudnnSetRNNDescriptor_v8(rnn_, CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, CUDNN_RNN_DOUBLE_BIAS,
                                    CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT,
                                    fma ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH, H_, H_, H_, 1, dropout_,
                                    CUDNN_RNN_PADDED_IO_DISABLED));
  CS_CUDNN(cudnnGetRNNWeightSpaceSize(ctx.dnn, rnn_, &weight_bytes_));
  ASSIGN_OR_RETURN(weights_, ByteBuffer::Allocate(ctx.device, weight_bytes_));
  return LoadWeights(ctx, w);
}

Status CudnnLstm::LoadWeights(Context& ctx, const LstmWeights& w) {
  TensorDesc m_desc, b_desc;
  RETURN_IF_ERROR(m_desc.Create());
  RETURN_IF_ERROR(b_desc.Create());
  for (int id = 0; id < 8; ++id) RETURN_IF_ERROR(LoadOne(ctx, w, id, m_desc.get(), b_desc.get()));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  return OkStatus();
}

Status CudnnLstm::LoadOne(Context& ctx, const LstmWeights& w, int id, cudnnTensorDescriptor_t m_desc,
                          cudnnTensorDescriptor_t b_desc) {
  void* m_addr = nullptr;
  void* b_addr = nullptr;
  CS_CUDNN(cudnnGetRNNWeightParams(ctx.dnn, rnn_, 0, weight_bytes_, weights_.get(), id, m_desc, &m_addr, b_desc,
                                   &b_addr));
  if (m_addr == nullptr || b_addr == nullptr) return Internal("cudnnGetRNNWeightParams: null matrix or bias");
  RETURN_IF_ERROR(ExpectMatrix(m_desc, H_, H_));
  RETURN_IF_ERROR(ExpectCount(b_desc, H_, "bias"));
  const int gate = id % 4;
  const float* src = w.w.get() + int64_t{gate} * H_ * 2 * H_ + (id < 4 ? 0 : H_);
  CS_CUDA(cudaMemcpy2DAsync(m_addr, H_ * sizeof(float), src, 2 * H_ * sizeof(float), H_ * sizeof(float), H_,
                            cudaMemcpyDeviceToDevice, ctx.stream));
  if (id < 4) {
    CS_CUDA(cudaMemcpyAsync(b_addr, w.bias.get() + int64_t{gate} * H_, H_ * sizeof(float), cudaMemcpyDeviceToDevice,
                            ctx.stream));
  } else {
    CS_CUDA(cudaMemsetAsync(b_addr, 0, H_ * sizeof(float), ctx.stream));
  }
  return OkStatus();
}

CudnnSeq::~CudnnSeq() {
  if (x_desc_ != nullptr) cudnnDestroyRNNDataDescriptor(x_desc_);
  if (y_desc_ != nullptr) cudnnDestroyRNNDataDescriptor(y_desc_);
  if (h_desc_ != nullptr) cudnnDestroyTensorDescriptor(h_desc_);
}

Status CudnnSeq::Init(Context& ctx, const CudnnLstm& lstm, int H, int B, int T) {
  ctx_ = &ctx;
  lstm_ = &lstm;
  std::vector<int> lengths(B, T);
  float fill = 0.f;
  CS_CUDNN(cudnnCreateRNNDataDescriptor(&x_desc_));
  CS_CUDNN(cudnnSetRNNDataDescriptor(x_desc_, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, H,
                                     lengths.data(), &fill));
  CS_CUDNN(cudnnCreateRNNDataDescriptor(&y_desc_));
  CS_CUDNN(cudnnSetRNNDataDescriptor(y_desc_, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, H,
                                     lengths.data(), &fill));
  CS_CUDNN(cudnnCreateTensorDescriptor(&h_desc_));
  int dims[3] = {1, B, H}, strides[3] = {B * H, H, 1};
  CS_CUDNN(cudnnSetTensorNdDescriptor(h_desc_, CUDNN_DATA_FLOAT, 3, dims, strides));
  size_t reserve = 0;
  CS_CUDNN(cudnnGetRNNTempSpaceSizes(ctx.dnn, lstm.rnn(), CUDNN_FWD_MODE_INFERENCE, x_desc_, &work_bytes_,
                                     &reserve));
  // At least a few bytes, so cudnnRNNForward gets a real workspace address even when it needs none.
  ASSIGN_OR_RETURN(work_, ByteBuffer::Allocate(ctx.device, std::max<size_t>(work_bytes_, 4)));
  const int64_t seq = int64_t{T} * B * H, state = int64_t{B} * H;
  for (FloatBuffer* b : {&x_, &y_}) {
    ASSIGN_OR_RETURN(*b, FloatBuffer::Allocate(ctx.device, seq));
  }
  for (FloatBuffer* b : {&hx_, &cx_, &hy_, &cy_}) {
    ASSIGN_OR_RETURN(*b, FloatBuffer::Allocate(ctx.device, state));
  }
  ASSIGN_OR_RETURN(lengths_, IndexBuffer::Allocate(ctx.device, B));
  CS_CUDA(cudaMemcpyAsync(lengths_.get(), lengths.data(), B * sizeof(int32_t), cudaMemcpyHostToDevice, ctx.stream));
  RETURN_IF_ERROR(FillUniform(x_.get(), seq, 501u + T, -1.f, 1.f, ctx.stream));
  RETURN_IF_ERROR(FillUniform(hx_.get(), state, 502u, -1.f, 1.f, ctx.stream));
  RETURN_IF_ERROR(FillUniform(cx_.get(), state, 503u, -1.f, 1.f, ctx.stream));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  return OkStatus();
}

Status CudnnSeq::Run() const {
  CS_CUDNN(cudnnRNNForward(ctx_->dnn, lstm_->rnn(), CUDNN_FWD_MODE_INFERENCE, lengths_.get(), x_desc_, x_.get(),
                           y_desc_, y_.get(), h_desc_, hx_.get(), hy_.get(), h_desc_, cx_.get(), cy_.get(),
                           lstm_->weight_bytes(), lstm_->weights(), work_bytes_, work_.get(), 0, nullptr));
  return OkStatus();
}

}  // namespace cellserve::lstm_bench
#endif  // CELLSERVE_HAVE_CUDNN
