#include "bench/report.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/atomic_file.h"

namespace cellserve::bench {

namespace {

std::string Num(double v, int precision) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", precision, v);
  return buf;
}

std::string Opt(const std::optional<double>& v, int precision) { return v ? Num(*v, precision) : ""; }

// Columns of the CSV, in order (the JSON has the same keys).
const char* const kColumns[] = {
    "policy",  "model",      "offered_rps", "throughput_rps", "completed", "rejected",   "failed",
    "p50_ms",  "p90_ms",     "p99_ms",      "max_ms",         "device_busy", "unanswered", "sent",
    "mean_ms", "duration_s", "load",        "saturation_rps", "floor_ms",  "mean_batch", "padding"};

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// A string for a gnuplot double-quoted literal.
std::string GpString(const std::string& s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    if (c == '\n' || c == '\r') c = ' ';
    q += c;
  }
  return q + "\"";
}

// A string for a gnuplot single-quoted literal (file names: no escapes but '').
std::string GpPath(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("''") : std::string(1, c);
  return q + "'";
}

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string FindInPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// FILE.png -> FILE.gp (FILE -> FILE.gp).
std::string ScriptPathFor(const std::string& png_path) {
  const size_t dot = png_path.rfind('.');
  const size_t slash = png_path.rfind('/');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return (has_ext ? png_path.substr(0, dot) : png_path) + ".gp";
}

// Atomically (runtime/atomic_file.h): a run interrupted while writing leaves the old file whole.
Status WriteFile(const std::string& path, const std::string& text) { return WriteFileAtomically(path, text); }

}  // namespace

double NearestRank(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  const double n = static_cast<double>(sorted.size());
  // The rank ceil(p/100 * n), at least 1; the small epsilon keeps 0.9 * 10 from becoming 9.000001.
  int64_t rank = static_cast<int64_t>(std::ceil(p / 100.0 * n - 1e-9));
  rank = std::clamp<int64_t>(rank, 1, static_cast<int64_t>(sorted.size()));
  return sorted[static_cast<size_t>(rank - 1)];
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

LatencyStats ComputeLatencyStats(std::vector<double> latencies_ms) {
  LatencyStats s;
  if (latencies_ms.empty()) return s;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  s.count = static_cast<int64_t>(latencies_ms.size());
  double sum = 0.0;
  for (double v : latencies_ms) sum += v;
  s.mean_ms = sum / static_cast<double>(s.count);
  s.p50_ms = NearestRank(latencies_ms, 50);
  s.p90_ms = NearestRank(latencies_ms, 90);
  s.p99_ms = NearestRank(latencies_ms, 99);
  s.max_ms = latencies_ms.back();
  return s;
}

void Row::SetLatency(const LatencyStats& stats) {
  mean_ms = stats.mean_ms;
  p50_ms = stats.p50_ms;
  p90_ms = stats.p90_ms;
  p99_ms = stats.p99_ms;
  max_ms = stats.max_ms;
}

std::string RowsToJson(const std::vector<Row>& rows) {
  nlohmann::json list = nlohmann::json::array();
  auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  for (const Row& r : rows) {
    nlohmann::json j;  // nlohmann sorts keys; the order of kColumns is the CSV's
    j["policy"] = r.policy;
    j["model"] = r.model;
    j["offered_rps"] = r.offered_rps;
    j["throughput_rps"] = r.throughput_rps;
    j["completed"] = r.completed;
    j["rejected"] = r.rejected;
    j["failed"] = r.failed;
    j["p50_ms"] = r.p50_ms;
    j["p90_ms"] = r.p90_ms;
    j["p99_ms"] = r.p99_ms;
    j["max_ms"] = r.max_ms;
    j["device_busy"] = r.device_busy;
    j["unanswered"] = r.unanswered;
    j["sent"] = r.sent;
    j["mean_ms"] = r.mean_ms;
    j["duration_s"] = r.duration_s;
    j["load"] = opt(r.load);
    j["saturation_rps"] = opt(r.saturation_rps);
    j["floor_ms"] = opt(r.floor_ms);
    j["mean_batch"] = r.mean_batch;
    j["padding"] = r.padding;
    list.push_back(std::move(j));
  }
  return list.dump(2) + "\n";
}

std::string CsvHeader() {
  std::string h;
  for (const char* c : kColumns) h += (h.empty() ? "" : ",") + std::string(c);
  return h;
}

std::string RowsToCsv(const std::vector<Row>& rows) {
  std::string out = CsvHeader() + "\n";
  for (const Row& r : rows) {
    const std::vector<std::string> fields = {
        CsvField(r.policy), CsvField(r.model), Num(r.offered_rps, 3), Num(r.throughput_rps, 3),
        std::to_string(r.completed), std::to_string(r.rejected), std::to_string(r.failed),
        Num(r.p50_ms, 3), Num(r.p90_ms, 3), Num(r.p99_ms, 3), Num(r.max_ms, 3), Num(r.device_busy, 4),
        std::to_string(r.unanswered), std::to_string(r.sent), Num(r.mean_ms, 3), Num(r.duration_s, 3),
        Opt(r.load, 4), Opt(r.saturation_rps, 3), Opt(r.floor_ms, 3), Num(r.mean_batch, 2),
        Num(r.padding, 4)};
    std::string line;
    for (size_t i = 0; i < fields.size(); ++i) line += (i ? "," : "") + fields[i];
    out += line + "\n";
  }
  return out;
}

Status WriteJson(const std::string& path, const std::vector<Row>& rows) {
  return WriteFile(path, RowsToJson(rows));
}

Status WriteCsv(const std::string& path, const std::vector<Row>& rows) {
  return WriteFile(path, RowsToCsv(rows));
}

std::string FormatTable(const std::vector<Row>& rows) {
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%-10s %9s %9s %8s %6s %5s %6s %9s %9s %9s %9s %6s %6s\n", "policy",
                "offered/s", "done/s", "done", "rej", "fail", "unans", "p50 ms", "p90 ms", "p99 ms",
                "max ms", "busy", "batch");
  out += buf;
  std::string last_policy;
  for (const Row& r : rows) {
    if (!last_policy.empty() && r.policy != last_policy) out += "\n";
    last_policy = r.policy;
    std::snprintf(buf, sizeof(buf), "%-10s %9.1f %9.1f %8lld %6lld %5lld %6lld %9.2f %9.2f %9.2f %9.2f %5.0f%% %6.1f\n",
                  r.policy.c_str(), r.offered_rps, r.throughput_rps, static_cast<long long>(r.completed),
                  static_cast<long long>(r.rejected), static_cast<long long>(r.failed),
                  static_cast<long long>(r.unanswered), r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms,
                  100.0 * r.device_busy, r.mean_batch);
    out += buf;
  }
  return out;
}

void PrintTable(std::FILE* out, const std::vector<Row>& rows) {
  const std::string table = FormatTable(rows);
  std::fputs(table.c_str(), out);
  std::fflush(out);
}

std::string PlotScript(const std::vector<Row>& rows, const std::string& png_path,
                       const std::string& title) {
  // Policies in order of first appearance; points in order of offered rate.
  std::vector<std::string> policies;
  std::map<std::string, std::vector<const Row*>> points;
  for (const Row& r : rows) {
    if (r.completed <= 0) continue;  // no latency to draw (and 0 has no place on a log scale)
    if (!points.count(r.policy)) policies.push_back(r.policy);
    points[r.policy].push_back(&r);
  }
  std::ostringstream gp;
  gp << "# Made by `cellserve bench`: latency against throughput, one line per policy.\n"
     << "# Run again with: gnuplot " << GpPath(ScriptPathFor(png_path)) << "\n"
     << "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n"
     << "  set terminal pngcairo size 1400,560 enhanced font \",10\"\n"
     << "} else {\n"
     << "  set terminal png size 1400,560\n"
     << "}\n"
     << "set output " << GpPath(png_path) << "\n";
  for (size_t i = 0; i < policies.size(); ++i) {
    auto& pts = points[policies[i]];
    std::stable_sort(pts.begin(), pts.end(),
                     [](const Row* a, const Row* b) { return a->offered_rps < b->offered_rps; });
    gp << "$d" << i << " << EOD\n# offered_rps throughput_rps p50_ms p99_ms\n";
    for (const Row* r : pts) {
      // Latencies below 1 us would break the log scale; nothing real is that fast.
      gp << Num(r->offered_rps, 3) << " " << Num(r->throughput_rps, 3) << " "
         << Num(std::max(r->p50_ms, 1e-3), 4) << " " << Num(std::max(r->p99_ms, 1e-3), 4) << "\n";
    }
    gp << "EOD\n";
  }
  gp << "set multiplot layout 1,2 title " << GpString(title) << "\n"
     << "set logscale y\n"
     << "set grid xtics ytics mytics\n"
     << "set key top left\n"
     << "set xlabel \"throughput (requests/s)\"\n";
  for (int plot = 0; plot < 2; ++plot) {
    const int column = plot == 0 ? 4 : 3;
    gp << "set ylabel " << (plot == 0 ? "\"p99 latency (ms)\"" : "\"p50 latency (ms)\"") << "\n"
       << "set title " << (plot == 0 ? "\"p99 latency\"" : "\"median latency\"") << "\n"
       << "plot ";
    for (size_t i = 0; i < policies.size(); ++i) {
      gp << (i ? ", \\\n     " : "") << "$d" << i << " using 2:" << column
         << " with linespoints lw 2 pt 7 title " << GpString(policies[i]);
    }
    gp << "\n";
  }
  gp << "unset multiplot\n";
  return gp.str();
}

Status WritePlot(const std::vector<Row>& rows, const std::string& png_path, const std::string& title) {
  if (std::none_of(rows.begin(), rows.end(), [](const Row& r) { return r.completed > 0; }))
    return InvalidArgument("nothing to plot: no run completed a request");
  const std::string script_path = ScriptPathFor(png_path);
  RETURN_IF_ERROR(WriteFile(script_path, PlotScript(rows, png_path, title)));
  const std::string gnuplot = FindInPath("gnuplot");
  if (gnuplot.empty()) {
    return Unavailable("gnuplot is not installed (apt-get install gnuplot-nox); wrote " + script_path +
                       " but no PNG");
  }
  const std::string command = ShellQuote(gnuplot) + " " + ShellQuote(script_path);
  const int rc = std::system(command.c_str());
  if (rc != 0) return Internal("gnuplot " + script_path + " failed (status " + std::to_string(rc) + ")");
  return OkStatus();
}

}  // namespace cellserve::bench
