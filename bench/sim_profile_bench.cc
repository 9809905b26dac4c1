// bench_sim_profile: measures a sim profile (kernels/sim/sim_profile.h) from our CPU kernels.
// For each cell kind of the model it times CpuBackend::Run at batch sizes 1 .. max (medians of
// --reps runs, one thread), fits cost = a_us * rows + c_us by least squares on relative error
// (so batch 1 counts as much as batch 256), prints the table and the fit's worst error, and
// writes the profile JSON. The lstm cost is measured on the model's first layer type, with its
// token input folded (kernels/cpu/cell_weights.h) unless --fold-max-mib 0 says not to.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/sim/sim_profile.h"
#include "runtime/model_repository.h"

namespace cs = cellserve;

namespace {

int Usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: bench_sim_profile --model-repo DIR --model NAME --out FILE [--name NAME] [--reps N (7)]\n"
               "                         [--max-batch N (256)] [--fold-max-mib N (512; 0: measure unfolded)]\n"
               "Times our CPU kernels per cell kind and batch size and writes a sim profile (a*rows + c us).\n");
  return rc;
}

double MedianUs(cs::cpu::CpuBackend& backend, const cs::CellBatch& batch, int reps) {
  std::vector<double> t;
  for (int i = 0; i < 2; ++i) (void)backend.Run(batch);  // warm: weights in cache, buffers sized
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = backend.Run(batch);
    const auto t1 = std::chrono::steady_clock::now();
    if (!r.ok()) {
      std::fprintf(stderr, "bench_sim_profile: %s\n", r.status().ToString().c_str());
      std::exit(1);
    }
    t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Least squares of y = a*x + c minimizing sum(((a*x + c) - y) / y)^2.
cs::sim::SimCost Fit(const std::vector<double>& x, const std::vector<double>& y) {
  double sww = 0, swx = 0, swxx = 0, swy = 0, swxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double w = 1.0 / (y[i] * y[i]);
    sww += w;
    swx += w * x[i];
    swxx += w * x[i] * x[i];
    swy += w * y[i];
    swxy += w * x[i] * y[i];
  }
  const double det = sww * swxx - swx * swx;
  cs::sim::SimCost c;
  c.a_us = std::max(0.0, (sww * swxy - swx * swy) / det);
  c.c_us = std::max(0.0, (swy - c.a_us * swx) / sww);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  std::string repo, model_name, out, name;
  int reps = 7, max_batch = 256;
  int64_t fold_max_mib = cs::cpu::CellWeightOptions{}.fold_max_bytes >> 20;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") return Usage(0);
    if (i + 1 >= argc) return Usage(2);
    std::string v = argv[++i];
    if (k == "--model-repo") repo = v;
    else if (k == "--model") model_name = v;
    else if (k == "--out") out = v;
    else if (k == "--name") name = v;
    else if (k == "--reps") reps = std::stoi(v);
    else if (k == "--max-batch") max_batch = std::stoi(v);
    else if (k == "--fold-max-mib") fold_max_mib = std::stoll(v);
    else return Usage(2);
  }
  if (repo.empty() || model_name.empty() || out.empty()) return Usage(2);
  auto model = cs::LoadModel(repo, model_name);
  if (!model.ok()) {
    std::fprintf(stderr, "bench_sim_profile: %s\n", model.status().ToString().c_str());
    return 1;
  }
  const cs::Model& m = **model;
  cs::cpu::CpuBackendOptions options;
  options.cell_weights.fold_max_bytes = fold_max_mib << 20;
  cs::cpu::CpuBackend backend(options);
  const int32_t slots = 2 * max_batch + 2;
  if (!backend.RegisterModel(m, slots).ok()) return 1;

  // One cell type per kind.
  std::map<std::string, int> types;
  for (int t = 0; t < static_cast<int>(m.cell_types().size()); ++t)
    types.emplace(cs::sim::SimKindName(m.cell_type(t).op), t);

  nlohmann::ordered_json costs = nlohmann::ordered_json::object();
  cs::sim::SimCost lstm_like{};
  std::printf("%-14s %6s %10s %10s %7s\n", "kind", "batch", "measured", "fit", "error");
  for (const auto& [kind, type] : types) {
    const cs::CellType& ct = m.cell_type(type);
    std::vector<double> xs, ys;
    for (int b = 1; b <= std::min<int64_t>(max_batch, ct.max_batch); b *= 2) {
      cs::CellBatch batch{&m, type, {}};
      for (int r = 0; r < b; ++r) {
        cs::CellRow row;
        if (ct.embedding) row.token = 4 + r;
        else row.x_slot = r;
        if (ct.op == cs::CellOp::kLstm || ct.op == cs::CellOp::kTreeInternal) row.state_slot[0] = r;
        if (ct.op == cs::CellOp::kTreeInternal) row.state_slot[1] = max_batch + r;
        if (ct.op != cs::CellOp::kHeadLogits && ct.op != cs::CellOp::kHeadArgmax) row.out_slot = max_batch + 1 + r;
        batch.rows.push_back(row);
      }
      xs.push_back(b);
      ys.push_back(MedianUs(backend, batch, reps));
    }
    const cs::sim::SimCost fit = Fit(xs, ys);
    double worst = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const double f = fit.a_us * xs[i] + fit.c_us;
      worst = std::max(worst, std::abs(f - ys[i]) / ys[i]);
      std::printf("%-14s %6.0f %9.1fus %9.1fus %6.0f%%\n", kind.c_str(), xs[i], ys[i], f, 100 * (f - ys[i]) / ys[i]);
    }
    std::printf("%-14s fit: a = %.2f us/row, c = %.1f us (worst error %.0f%%)\n\n", kind.c_str(), fit.a_us, fit.c_us,
                100 * worst);
    costs[kind] = {{"a_us", std::round(fit.a_us * 100) / 100}, {"c_us", std::round(fit.c_us * 10) / 10}};
    if (kind == "lstm" || (kind == "tree_internal" && lstm_like.a_us == 0)) lstm_like = fit;
  }
  nlohmann::ordered_json j;
  j["name"] = name.empty() ? "cpu-" + model_name : name;
  j["description"] = "Measured by bench/bench_sim_profile on our CPU kernels (one thread, packed GEMM, " +
                     std::to_string(reps) + " runs per point, medians), model '" + model_name + "' (" +
                     cs::ModelKindName(m.spec().kind) + ", hidden " + std::to_string(m.spec().hidden) +
                     "); cost = a_us * rows + c_us fitted on relative error over batch 1.." +
                     std::to_string(max_batch) + ".";
  j["costs"] = costs;
  j["default"] = {{"a_us", std::round(lstm_like.a_us * 100) / 100}, {"c_us", std::round(lstm_like.c_us * 10) / 10}};
  std::ofstream(out) << j.dump(2) << "\n";
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
