// Event timing, medians and the copy bandwidth (timing.cuh).
#include "bench/cuda/timing.cuh"

#include <algorithm>
#include <cstddef>

#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

EventPair::~EventPair() {
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
}

Status EventPair::Init() {
  CS_CUDA(cudaEventCreate(&start_));
  CS_CUDA(cudaEventCreate(&stop_));
  return OkStatus();
}

Status EventPair::Start(cudaStream_t s) { return cuda::CudaStatus(cudaEventRecord(start_, s), "cudaEventRecord"); }

Status EventPair::Stop(cudaStream_t s) { return cuda::CudaStatus(cudaEventRecord(stop_, s), "cudaEventRecord"); }

StatusOr<double> EventPair::ElapsedUs() const {
  float ms = 0;
  CS_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
  return 1000.0 * ms;
}

StatusOr<double> MedianUsPerStep(Context& ctx, const Options& opt, int steps_per_call, const Enqueue& call) {
  int calls = std::max(3, (opt.iters() + steps_per_call - 1) / steps_per_call);
  int warm = std::max(2, (opt.warmup() + steps_per_call - 1) / steps_per_call);
  for (int i = 0; i < warm; ++i) RETURN_IF_ERROR(call());
  CS_CUDA(cudaStreamSynchronize(ctx.stream));
  EventPair ev;
  RETURN_IF_ERROR(ev.Init());
  std::vector<double> per_step;
  for (int r = 0; r < kRepeats; ++r) {
    RETURN_IF_ERROR(ev.Start(ctx.stream));
    for (int i = 0; i < calls; ++i) RETURN_IF_ERROR(call());
    RETURN_IF_ERROR(ev.Stop(ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    ASSIGN_OR_RETURN(double us, ev.ElapsedUs());
    per_step.push_back(us / (static_cast<double>(calls) * steps_per_call));
  }
  return Median(per_step);
}

StatusOr<double> MedianColdUs(Context& ctx, const Options& opt, const Enqueue& call) {
  for (int i = 0; i < 2; ++i) RETURN_IF_ERROR(call());
  std::vector<double> samples;
  EventPair ev;
  RETURN_IF_ERROR(ev.Init());
  for (int r = 0; r < opt.cold_samples(); ++r) {
    RETURN_IF_ERROR(ctx.FlushL2());
    RETURN_IF_ERROR(ev.Start(ctx.stream));
    RETURN_IF_ERROR(call());
    RETURN_IF_ERROR(ev.Stop(ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    ASSIGN_OR_RETURN(double us, ev.ElapsedUs());
    samples.push_back(us);
  }
  return Median(samples);
}

StatusOr<double> MeasureBandwidthGBs(Context& ctx) {
  constexpr size_t kBytes = size_t{1} << 30;
  ASSIGN_OR_RETURN(ByteBuffer src, ByteBuffer::Allocate(ctx.device, kBytes));
  ASSIGN_OR_RETURN(ByteBuffer dst, ByteBuffer::Allocate(ctx.device, kBytes));
  CS_CUDA(cudaMemsetAsync(src.get(), 1, kBytes, ctx.stream));
  CS_CUDA(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, ctx.stream));  // warm-up
  EventPair ev;
  RETURN_IF_ERROR(ev.Init());
  std::vector<double> gbs;
  for (int r = 0; r < 5; ++r) {
    RETURN_IF_ERROR(ev.Start(ctx.stream));
    CS_CUDA(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, ctx.stream));
    RETURN_IF_ERROR(ev.Stop(ctx.stream));
    CS_CUDA(cudaStreamSynchronize(ctx.stream));
    ASSIGN_OR_RETURN(double us, ev.ElapsedUs());
    gbs.push_back(2.0 * kBytes / (us * 1e-6) / 1e9);
  }
  return Median(gbs);
}

}  // namespace cellserve::lstm_bench
