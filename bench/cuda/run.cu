// The bench's main flow (run.cuh).
#include "bench/cuda/run.cuh"

#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "bench/cuda/check.cuh"
#include "bench/cuda/context.cuh"
#include "bench/cuda/cudnn_check.cuh"
#include "bench/cuda/cudnn_lstm.cuh"
#include "bench/cuda/lstm_problem.cuh"
#include "bench/cuda/output.cuh"
#include "bench/cuda/results.h"
#include "bench/cuda/shape.cuh"
#include "bench/cuda/timing.cuh"
#include "kernels/cuda/cuda_check.h"

namespace cellserve::lstm_bench {
namespace {

StatusOr<DeviceInfo> QueryDevice() {
  int dev = 0;
  CS_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  CS_CUDA(cudaGetDeviceProperties(&p, dev));
  DeviceInfo d;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.major = p.major;
  d.minor = p.minor;
  d.l2_bytes = p.l2CacheSize;
  d.memory_bytes = p.totalGlobalMem;
  return d;
}

Status RunHidden(Context& ctx, const Options& opt, int H, Report& rep) {
  LstmWeights w;
  RETURN_IF_ERROR(w.Init(ctx, H));
#ifdef CELLSERVE_HAVE_CUDNN
  CudnnLstm dnn;
  Status dnn_status = dnn.Init(ctx, w, opt.cudnn_fma);
  if (!dnn_status.ok()) Warn("cuDNN setup H=" + std::to_string(H) + " (cuDNN columns n/a)", dnn_status);
#endif
  rep.floor_us.push_back({H, w.bytes() / (rep.bandwidth_gbs * 1e9) * 1e6});
  for (int B : opt.batches) {
    Shape s;
    std::string where = "H=" + std::to_string(H) + " batch=" + std::to_string(B);
    RETURN_IF_ERROR(BuildShape(ctx, w, B, s).WithContext(where));
#ifdef CELLSERVE_HAVE_CUDNN
    BuildCudnn(ctx, dnn_status.ok() ? &dnn : nullptr, dnn_status.ToString(), w, s);
#endif
    StatusOr<Row> row = TimeShape(ctx, opt, w, s);
    if (!row.ok()) return row.status().WithContext(where);
    PrintRow(*row);
    rep.rows.push_back(*row);
    StatusOr<Check> check = RunCheck(ctx, w, s);
    if (!check.ok()) return check.status().WithContext(where + " check");
    rep.checks.push_back(*check);
  }
  return OkStatus();
}

}  // namespace

int Run(const Options& opt) {
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "bench_cuda_lstm: %s\n", st.ToString().c_str());
    return 1;
  };
  Report rep;
  StatusOr<DeviceInfo> dev = QueryDevice();
  if (!dev.ok()) return fail(dev.status());
  rep.device = *dev;
  PrintBanner(rep.device, opt);
  Context ctx;
  Status st = ctx.Init();
  if (!st.ok()) return fail(st);
  StatusOr<double> bw = MeasureBandwidthGBs(ctx);
  if (!bw.ok()) return fail(bw.status());
  rep.bandwidth_gbs = *bw;
  std::printf("\n");
  PrintHeader();
  for (int H : opt.hidden) {
    Status run = RunHidden(ctx, opt, H, rep);
    if (!run.ok()) return fail(run);
  }
  PrintSummary(rep);
  if (!opt.json.empty()) {
    Status written = WriteJson(opt.json, opt, rep);
    if (!written.ok()) return fail(written);
    std::printf("wrote %s\n", opt.json.c_str());
  }
  for (const Check& c : rep.checks)
    if (!c.pass) return 1;
  return 0;
}

}  // namespace cellserve::lstm_bench
