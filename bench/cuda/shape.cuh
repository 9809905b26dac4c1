// One (H, batch) of bench_cuda_lstm: everything its row needs (state pool, our step, the unfused
// step, their ping-pong graphs, cuDNN's 1-step and 24-step sequences), how it is built, and how
// its row of timings is measured.
// Contract: BuildShape before TimeShape (and RunCheck, check.cuh); the weights and ctx must
// outlive the Shape. cuDNN problems never fail a shape: its columns become n/a with the reason in
// Row::cudnn_error (and on stderr); any other error is returned.
#pragma once

#include <string>

#include "bench/cuda/context.cuh"
#include "bench/cuda/cudnn_lstm.cuh"
#include "bench/cuda/graph.cuh"
#include "bench/cuda/lstm_problem.cuh"
#include "bench/cuda/options.h"
#include "bench/cuda/ours_step.cuh"
#include "bench/cuda/results.h"
#include "bench/cuda/unfused_step.cuh"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

// Everything the row needs, built once per (H, B).
struct Shape {
  StatePool pool;
  OursStep ours;
  UnfusedStep unfused;
  Graph ours_graph[2], unfused_graph[2];
#ifdef CELLSERVE_HAVE_CUDNN
  bool dnn_ok = false;  // seq1 and seq24 are usable
  std::string dnn_error;
  CudnnSeq seq1, seq24;
#endif
};

// The pool, both steps, and their graphs (after one plain step each, so that cuBLAS has picked
// and loaded its kernels before capture).
Status BuildShape(Context& ctx, const LstmWeights& w, int B, Shape& s);

#ifdef CELLSERVE_HAVE_CUDNN
// The cuDNN side of a shape; `dnn` is null when the layer's setup failed (reason in `error`).
void BuildCudnn(Context& ctx, const CudnnLstm* dnn, const std::string& error, const LstmWeights& w, Shape& s);
#endif

// Every column of the shape's row (Row in results.h).
StatusOr<Row> TimeShape(Context& ctx, const Options& opt, const LstmWeights& w, Shape& s);

}  // namespace cellserve::lstm_bench
