// Building and timing one (H, batch) (shape.cuh).
#include "bench/cuda/shape.cuh"

#include "bench/cuda/cudnn_check.cuh"
#include "bench/cuda/timing.cuh"
#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {
namespace {

#ifdef CELLSERVE_HAVE_CUDNN
void TimeCudnn(Context& ctx, const Options& opt, Shape& s, Row& row) {
  row.cudnn_error = s.dnn_error;
  if (!s.dnn_ok) return;
  StatusOr<double> one = MedianUsPerStep(ctx, opt, 1, [&] { return s.seq1.Run(); });
  StatusOr<double> seq = one.ok() ? MedianUsPerStep(ctx, opt, kSeqSteps, [&] { return s.seq24.Run(); })
                                  : StatusOr<double>(one.status());
  if (one.ok()) row.cudnn_1 = *one;
  if (seq.ok()) row.cudnn_24 = *seq;
  if (!seq.ok()) {
    row.cudnn_error = seq.status().ToString();
    Warn("cuDNN timing H=" + std::to_string(row.H) + " batch=" + std::to_string(row.B), seq.status());
  }
}
#endif

}  // namespace

Status BuildShape(Context& ctx, const LstmWeights& w, int B, Shape& s) {
  RETURN_IF_ERROR(s.pool.Init(ctx, w.H, B));
  RETURN_IF_ERROR(s.ours.Init(ctx, w, s.pool));
  RETURN_IF_ERROR(s.unfused.Init(ctx, w, s.pool));
  // A plain step first, so that cuBLAS has picked and loaded its kernels before capture.
  RETURN_IF_ERROR(s.ours.Enqueue(0));
  RETURN_IF_ERROR(s.unfused.Enqueue(0));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  RETURN_IF_ERROR(CaptureBoth(ctx, s.ours, s.ours_graph));
  RETURN_IF_ERROR(CaptureBoth(ctx, s.unfused, s.unfused_graph));
  return OkStatus();
}

#ifdef CELLSERVE_HAVE_CUDNN
void BuildCudnn(Context& ctx, const CudnnLstm* dnn, const std::string& error, const LstmWeights& w, Shape& s) {
  if (dnn == nullptr) {
    s.dnn_error = error;
    return;
  }
  Status st = s.seq1.Init(ctx, *dnn, w.H, s.pool.B, 1);
  if (st.ok()) st = s.seq24.Init(ctx, *dnn, w.H, s.pool.B, kSeqSteps);
  s.dnn_ok = st.ok();
  if (!st.ok()) {
    s.dnn_error = st.ToString();
    Warn("cuDNN setup H=" + std::to_string(w.H) + " batch=" + std::to_string(s.pool.B), st);
  }
}
#endif

StatusOr<Row> TimeShape(Context& ctx, const Options& opt, const LstmWeights& w, Shape& s) {
  Row row;
  row.H = w.H;
  row.B = s.pool.B;
  int parity = 0;
  ASSIGN_OR_RETURN(row.ours_graph, MedianUsPerStep(ctx, opt, 1, PingPong(ctx, s.ours_graph, 1, &parity)));
  ASSIGN_OR_RETURN(row.ours_nograph, MedianUsPerStep(ctx, opt, 1, [&] {
                     Status st = s.ours.Enqueue(parity);
                     parity ^= 1;
                     return st;
                   }));
  ASSIGN_OR_RETURN(row.ours_cold, MedianColdUs(ctx, opt, PingPong(ctx, s.ours_graph, 1, &parity)));
  ASSIGN_OR_RETURN(row.unfused, MedianUsPerStep(ctx, opt, 1, PingPong(ctx, s.unfused_graph, 1, &parity)));
  ASSIGN_OR_RETURN(row.ours_24,
                   MedianUsPerStep(ctx, opt, kSeqSteps, PingPong(ctx, s.ours_graph, kSeqSteps, &parity)));
  ASSIGN_OR_RETURN(row.unfused_24,
                   MedianUsPerStep(ctx, opt, kSeqSteps, PingPong(ctx, s.unfused_graph, kSeqSteps, &parity)));
#ifdef CELLSERVE_HAVE_CUDNN
  TimeCudnn(ctx, opt, s, row);
#else
  row.cudnn_error = "built without cuDNN";
#endif
  return row;
}

}  // namespace cellserve::lstm_bench
