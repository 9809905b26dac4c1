// The bench's table, summary and JSON (output.cuh).
#include "bench/cuda/output.cuh"

#include <cuda_runtime.h>
#ifdef CELLSERVE_HAVE_CUDNN
#include <cudnn.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace cellserve::lstm_bench {
namespace {

std::string Num(double v, int decimals = 2) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

std::string JsonNum(double v, int decimals = 4) { return std::isnan(v) ? "null" : Num(v, decimals); }

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out + "\"";
}

}  // namespace

void PrintBanner(const DeviceInfo& device, const Options& opt) {
  std::printf("GPU: %s (compute %d.%d), %d SMs, %.1f GiB, L2 %.1f MiB\n", device.name.c_str(), device.major,
              device.minor, device.sm_count, device.memory_bytes / double(1 << 30), device.l2_bytes / double(1 << 20));
#ifdef CELLSERVE_HAVE_CUDNN
  std::printf("cuDNN %zu, %s; cuBLAS fp32 (CUBLAS_COMPUTE_32F, no TF32)\n", cudnnGetVersion(),
              opt.cudnn_fma ? "CUDNN_FMA_MATH (strict fp32)" : "CUDNN_DEFAULT_MATH (TF32 allowed)");
#else
  std::printf("built WITHOUT cuDNN (cudnn.h or libcudnn not found at configure time): cuDNN columns are n/a\n");
#endif
  std::printf("%s: %d warm-up + %d timed steps per repetition, median of %d; us per step\n",
              opt.quick ? "quick" : "full", opt.warmup(), opt.iters(), kRepeats);
  std::printf("%d-step columns: ours and unfused = %d graph launches back to back (one per step), cuDNN = one "
              "cudnnRNNForward on a %d-step sequence\n", kSeqSteps, kSeqSteps, kSeqSteps);
}

void PrintHeader() {
  std::printf("%5s %6s %11s %13s %13s %10s %12s %14s %13s %12s %9s %12s\n", "H", "batch", "ours_graph",
              "ours_nograph", "ours_cold_l2", "unfused", "cudnn_1step", "cudnn_24/step", "ours_24/step",
              "unf_24/step", "dnn/ours", "dnn24/ours24");
}

void PrintRow(const Row& r) {
  std::printf("%5d %6d %11s %13s %13s %10s %12s %14s %13s %12s %9s %12s\n", r.H, r.B, Num(r.ours_graph).c_str(),
              Num(r.ours_nograph).c_str(), Num(r.ours_cold).c_str(), Num(r.unfused).c_str(),
              Num(r.cudnn_1).c_str(), Num(r.cudnn_24).c_str(), Num(r.ours_24).c_str(), Num(r.unfused_24).c_str(),
              Num(r.cudnn_1 / r.ours_graph).c_str(), Num(r.cudnn_24 / r.ours_24).c_str());
  std::fflush(stdout);
}

void PrintSummary(const Report& rep) {
  std::printf("\nbandwidth (device-to-device cudaMemcpy, 1 GiB, read + write): %.1f GB/s\n", rep.bandwidth_gbs);
  for (const auto& [H, floor_us] : rep.floor_us) {
    const Row* b1 = nullptr;
    for (const Row& r : rep.rows)
      if (r.H == H && r.B == 1) b1 = &r;
    std::printf("H=%d: weights %.1f MiB, read once = %.2f us", H, 4.0 * H * 2 * H * 4 / (1 << 20), floor_us);
    if (b1 != nullptr)
      std::printf("; ours at batch 1: %.2fx that (graph, L2 warm), %.2fx (cold L2)", b1->ours_graph / floor_us,
                  b1->ours_cold / floor_us);
    std::printf("\n");
  }
  bool all = true;
  std::printf("\ncorrectness (one step from the same pool; max |diff| of h and c, tolerance %g):\n", kTolerance);
  for (const Check& c : rep.checks) {
    std::printf("  H=%d batch=%d: vs cuDNN %s, vs unfused %s, vs host (first %d rows) %s  %s\n", c.H, c.B,
                Num(c.vs_cudnn, 7).c_str(), Num(c.vs_unfused, 7).c_str(), std::min(c.B, kHostRefRows),
                Num(c.vs_host, 7).c_str(), c.pass ? "PASS" : "FAIL");
    all = all && c.pass;
  }
  std::printf("check: %s%s\n", all ? "PASS" : "FAIL",
#ifdef CELLSERVE_HAVE_CUDNN
              ""
#else
              " (built without cuDNN: compared with the unfused step and the host reference only)"
#endif
  );
}

Status WriteJson(const std::string& path, const Options& opt, const Report& rep) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return InvalidArgument("cannot write " + path + ": " + std::strerror(errno));
  std::fprintf(f, "{\n  \"device\": {\"name\": %s, \"sm_count\": %d, \"memory_bytes\": %zu, \"l2_bytes\": %d, "
               "\"compute_capability\": \"%d.%d\"},\n", JsonString(rep.device.name).c_str(), rep.device.sm_count,
               rep.device.memory_bytes, rep.device.l2_bytes, rep.device.major, rep.device.minor);
#ifdef CELLSERVE_HAVE_CUDNN
  std::fprintf(f, "  \"cudnn\": {\"version\": %zu, \"math\": \"%s\"},\n", cudnnGetVersion(),
               opt.cudnn_fma ? "CUDNN_FMA_MATH" : "CUDNN_DEFAULT_MATH");
#else
  std::fprintf(f, "  \"cudnn\": null,\n");
#endif
  int cuda_rt = 0;
  cudaRuntimeGetVersion(&cuda_rt);
  std::fprintf(f, "  \"cuda_runtime\": %d,\n  \"quick\": %s,\n  \"repeats\": %d,\n  \"steps_per_repeat\": %d,\n",
               cuda_rt, opt.quick ? "true" : "false", kRepeats, opt.iters());
  std::fprintf(f, "  \"seq_steps\": %d,\n  \"ours_seq_mode\": \"%d graph launches back to back, one per step\",\n",
               kSeqSteps, kSeqSteps);
  std::fprintf(f, "  \"bandwidth_gbs\": %s,\n  \"weights_floor_us\": {", JsonNum(rep.bandwidth_gbs).c_str());
  for (size_t i = 0; i < rep.floor_us.size(); ++i)
    std::fprintf(f, "%s\"%d\": %s", i ? ", " : "", rep.floor_us[i].first, JsonNum(rep.floor_us[i].second).c_str());
  std::fprintf(f, "},\n  \"rows\": [\n");
  for (size_t i = 0; i < rep.rows.size(); ++i) {
    const Row& r = rep.rows[i];
    std::fprintf(f,
                 "    {\"H\": %d, \"batch\": %d, \"ours_graph_us\": %s, \"ours_nograph_us\": %s, "
                 "\"ours_cold_l2_us\": %s, \"unfused_us\": %s, \"cudnn_1step_us\": %s, "
                 "\"cudnn_24step_per_step_us\": %s, \"ours_24step_per_step_us\": %s, "
                 "\"unfused_24step_per_step_us\": %s, \"cudnn_error\": %s}%s\n",
                 r.H, r.B, JsonNum(r.ours_graph).c_str(), JsonNum(r.ours_nograph).c_str(), JsonNum(r.ours_cold).c_str(),
                 JsonNum(r.unfused).c_str(), JsonNum(r.cudnn_1).c_str(), JsonNum(r.cudnn_24).c_str(),
                 JsonNum(r.ours_24).c_str(), JsonNum(r.unfused_24).c_str(),
                 r.cudnn_error.empty() ? "null" : JsonString(r.cudnn_error).c_str(),
                 i + 1 < rep.rows.size() ? "," : "");
  }
  std::fprintf(f, "  ],\n  \"tolerance\": %g,\n  \"checks\": [\n", kTolerance);
  for (size_t i = 0; i < rep.checks.size(); ++i) {
    const Check& c = rep.checks[i];
    std::fprintf(f,
                 "    {\"H\": %d, \"batch\": %d, \"max_diff_vs_cudnn\": %s, \"max_diff_vs_unfused\": %s, "
                 "\"max_diff_vs_host\": %s, \"pass\": %s}%s\n",
                 c.H, c.B, JsonNum(c.vs_cudnn, 9).c_str(), JsonNum(c.vs_unfused, 9).c_str(),
                 JsonNum(c.vs_host, 9).c_str(), c.pass ? "true" : "false",
                 i + 1 < rep.checks.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  if (std::fclose(f) != 0) return Internal("error writing " + path);
  return OkStatus();
}

}  // namespace cellserve::lstm_bench
