// The correctness check of one (H, batch) (check.cuh).
#include "bench/cuda/check.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/cuda/cudnn_check.cuh"
#include "bench/cuda/options.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/gpu/batch_plan.h"

namespace cellserve::lstm_bench {
namespace {

// Max |diff| over h and c of the out slots of direction 0 between two pools (host copies).
double MaxDiffOut(const StatePool& pool, const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  const int64_t row = 2 * int64_t{pool.H};
  for (int r = 0; r < pool.B; ++r) {
    int64_t base = int64_t{pool.host_index[0][gpu::kOut * pool.B + r]} * row;
    for (int64_t j = 0; j < row; ++j) m = std::max(m, std::fabs(double{a[base + j]} - double{b[base + j]}));
  }
  return m;
}

Status Download(Context& ctx, const FloatBuffer& buf, int64_t floats, std::vector<float>* out) {
  out->resize(floats);
  CS_CUDA(cudaMemcpyAsync(out->data(), buf.get(), floats * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  return OkStatus();
}

// Double-precision LSTM step for the first rows of direction 0; max |diff| against `after`.
double HostReferenceDiff(const LstmWeights& w, const StatePool& pool, const std::vector<float>& before,
                         const std::vector<float>& after) {
  const int H = w.H, B = pool.B;
  const int64_t row = 2 * int64_t{H};
  double m = 0;
  std::vector<double> xh(2 * H), gates(4 * H);
  for (int r = 0; r < std::min(B, kHostRefRows); ++r) {
    const int32_t* idx = pool.host_index[0].data();
    const float* xs = before.data() + idx[gpu::kXSrc * B + r] * row;
    const float* hs = before.data() + idx[gpu::kHSrc * B + r] * row;
    for (int j = 0; j < H; ++j) {
      xh[j] = xs[j];
      xh[H + j] = hs[j];
    }
    for (int g = 0; g < 4 * H; ++g) {
      const float* wr = w.host_w.data() + int64_t{g} * 2 * H;
      double acc = w.host_bias[g];
      for (int k = 0; k < 2 * H; ++k) acc += double{wr[k]} * xh[k];
      gates[g] = acc;
    }
    const float* out = after.data() + idx[gpu::kOut * B + r] * row;
    for (int j = 0; j < H; ++j) {
      auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
      double c = sig(gates[H + j]) * hs[H + j] + sig(gates[j]) * std::tanh(gates[2 * H + j]);
      double h = sig(gates[3 * H + j]) * std::tanh(c);
      m = std::max({m, std::fabs(h - out[j]), std::fabs(c - out[H + j])});
    }
  }
  return m;
}

#ifdef CELLSERVE_HAVE_CUDNN
// cuDNN's step from the same inputs as ours' direction 0: x, hx, cx gathered on the host.
StatusOr<double> CudnnDiff(Context& ctx, const StatePool& pool, const CudnnSeq& seq1, const std::vector<float>& before,
                           const std::vector<float>& ours_after) {
  const int H = pool.H, B = pool.B;
  const int64_t row = 2 * int64_t{H};
  const int32_t* idx = pool.host_index[0].data();
  std::vector<float> x(int64_t{B} * H), hx(x.size()), cx(x.size());
  for (int r = 0; r < B; ++r) {
    const float* xs = before.data() + idx[gpu::kXSrc * B + r] * row;
    const float* hs = before.data() + idx[gpu::kHSrc * B + r] * row;
    std::copy(xs, xs + H, x.begin() + int64_t{r} * H);
    std::copy(hs, hs + H, hx.begin() + int64_t{r} * H);
    std::copy(hs + H, hs + 2 * H, cx.begin() + int64_t{r} * H);
  }
  const size_t bytes = x.size() * sizeof(float);
  CS_CUDA(cudaMemcpyAsync(seq1.x(), x.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(seq1.hx(), hx.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(seq1.cx(), cx.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
  RETURN_IF_ERROR(seq1.Run());
  std::vector<float> hy(x.size()), cy(x.size());
  CS_CUDA(cudaMemcpyAsync(hy.data(), seq1.hy(), bytes, cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(cy.data(), seq1.cy(), bytes, cudaMemcpyDeviceToHost, ctx.stream));
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  double m = 0;
  for (int r = 0; r < B; ++r) {
    const float* out = ours_after.data() + idx[gpu::kOut * B + r] * row;
    for (int j = 0; j < H; ++j) {
      m = std::max({m, std::fabs(double{out[j]} - hy[int64_t{r} * H + j]),
                    std::fabs(double{out[H + j]} - cy[int64_t{r} * H + j])});
    }
  }
  return m;
}
#endif

}  // namespace

StatusOr<Check> RunCheck(Context& ctx, const LstmWeights& w, Shape& s) {
  Check c;
  c.H = w.H;
  c.B = s.pool.B;
  const int64_t floats = s.pool.floats();
  std::vector<float> before, ours_after, unfused_after;
  RETURN_IF_ERROR(s.pool.Randomize(ctx, 4242u));
  RETURN_IF_ERROR(Download(ctx, s.pool.state, floats, &before));
  RETURN_IF_ERROR(s.ours.Enqueue(0));
  RETURN_IF_ERROR(Download(ctx, s.pool.state, floats, &ours_after));
  CS_CUDA(cudaMemcpyAsync(s.pool.state.get(), before.data(), floats * sizeof(float), cudaMemcpyHostToDevice,
                          ctx.stream));
  RETURN_IF_ERROR(s.unfused.Enqueue(0));
  RETURN_IF_ERROR(Download(ctx, s.pool.state, floats, &unfused_after));
  c.vs_unfused = MaxDiffOut(s.pool, ours_after, unfused_after);
  c.vs_host = HostReferenceDiff(w, s.pool, before, ours_after);
  c.pass = c.vs_unfused <= kTolerance && c.vs_host <= kTolerance;
#ifdef CELLSERVE_HAVE_CUDNN
  if (s.dnn_ok) {
    StatusOr<double> d = CudnnDiff(ctx, s.pool, s.seq1, before, ours_after);
    if (d.ok()) {
      c.vs_cudnn = *d;
      c.pass = c.pass && c.vs_cudnn <= kTolerance;
    } else {
      Warn("cuDNN check H=" + std::to_string(c.H) + " batch=" + std::to_string(c.B), d.status());
    }
  }
#endif
  return c;
}

}  // namespace cellserve::lstm_bench
