// The cuDNN side of bench_cuda_lstm (only with CELLSERVE_HAVE_CUDNN; empty without it):
// CudnnLstm is one LSTM layer (cuDNN 9 API: CUDNN_LSTM, ALGO_STANDARD, double bias, fp32) holding
// a copy of our weights in cuDNN's layout (recurrent bias 0, so it computes what ours does);
// CudnnSeq is its inputs, outputs and workspace for a T-step sequence of batch B, and Run is one
// cudnnRNNForward (inference mode) on ctx.stream.
// Contract: the layer must outlive its sequences; math is CUDNN_FMA_MATH (strict fp32) when `fma`,
// else CUDNN_DEFAULT_MATH (may use TF32). Errors are Status (cudnn_check.h), never fatal by design:
// the caller turns them into n/a columns.
#pragma once

#ifdef CELLSERVE_HAVE_CUDNN
#include <cudnn.h>

#include <cstddef>

#include "bench/cuda/context.cuh"
#include "bench/cuda/lstm_problem.cuh"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

class CudnnLstm {
 public:
  CudnnLstm() = default;
  CudnnLstm(const CudnnLstm&) = delete;
  CudnnLstm& operator=(const CudnnLstm&) = delete;
  ~CudnnLstm();

  // Returns with the stream synchronized (the weights copied).
  Status Init(Context& ctx, const LstmWeights& w, bool fma);

  cudnnRNNDescriptor_t rnn() const { return rnn_; }
  const void* weights() const { return weights_.get(); }
  size_t weight_bytes() const { return weight_bytes_; }

 private:
  // Copies ours into cuDNN's per-gate matrices: linLayerID 0-3 = input weights of i, f, g, o
  // (our columns [0, H)), 4-7 = recurrent (columns [H, 2H)); input bias = ours, recurrent bias 0.
  Status LoadWeights(Context& ctx, const LstmWeights& w);
  Status LoadOne(Context& ctx, const LstmWeights& w, int id, cudnnTensorDescriptor_t m_desc,
                 cudnnTensorDescriptor_t b_desc);

  int H_ = 0;
  cudnnDropoutDescriptor_t dropout_ = nullptr;
  cudnnRNNDescriptor_t rnn_ = nullptr;
  ByteBuffer weights_;
  size_t weight_bytes_ = 0;
};

class CudnnSeq {
 public:
  CudnnSeq() = default;
  CudnnSeq(const CudnnSeq&) = delete;
  CudnnSeq& operator=(const CudnnSeq&) = delete;
  ~CudnnSeq();

  // Random x, hx, cx (fixed seeds); returns with the stream synchronized.
  Status Init(Context& ctx, const CudnnLstm& lstm, int H, int B, int T);
  Status Run() const;

  float* x() const { return x_.get(); }
  float* hx() const { return hx_.get(); }
  float* cx() const { return cx_.get(); }
  const float* hy() const { return hy_.get(); }
  const float* cy() const { return cy_.get(); }

 private:
  Context* ctx_ = nullptr;
  const CudnnLstm* lstm_ = nullptr;
  cudnnRNNDataDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnTensorDescriptor_t h_desc_ = nullptr;
  FloatBuffer x_, y_, hx_, cx_, hy_, cy_;
  IndexBuffer lengths_;
  ByteBuffer work_;
  size_t work_bytes_ = 0;
};

}  // namespace cellserve::lstm_bench
#endif  // CELLSERVE_HAVE_CUDNN
