// Benchmark results: latency statistics, one Row per (policy, offered rate) run, and the ways
// `cellserve bench` writes them: JSON (the interface scripts rely on), CSV, a printed table and a
// latency-vs-throughput PNG drawn by gnuplot.
//
// JSON: a list of rows. Every row has the keys of issue 3's interface, which scripts rely on:
//   policy, model, offered_rps, throughput_rps, completed, rejected, p50_ms, p90_ms, p99_ms, max_ms
// and these extras (more may be added, none removed): failed, unanswered, sent, device_busy,
// mean_ms, duration_s, load, saturation_rps, floor_ms, mean_batch, padding. Unknown values
// (saturation_rps, floor_ms or load when not measured) are null. Latency figures of a run with
// nothing completed are 0.
// Pure functions except WriteCsv/WriteJson/WritePlot (files) and PrintTable; thread-compatible.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace cellserve::bench {

struct LatencyStats {
  int64_t count = 0;
  double mean_ms = 0.0, p50_ms = 0.0, p90_ms = 0.0, p99_ms = 0.0, max_ms = 0.0;
};

// The nearest-rank percentile (the smallest value with at least p% of the values at or below it)
// of ascending `sorted`; 0 for an empty vector. p in (0, 100].
double NearestRank(const std::vector<double>& sorted, double p);
// The median of `values` (any order): the middle one, or the mean of the middle two for an even
// count; 0 for none. For a handful of rounds' figures, where nearest rank would pick a side.
double Median(std::vector<double> values);
// All of LatencyStats over `latencies_ms` (any order); zeros when empty.
LatencyStats ComputeLatencyStats(std::vector<double> latencies_ms);

struct Row {
  std::string policy, model;
  double offered_rps = 0.0;     // the schedule's rate
  double throughput_rps = 0.0;  // completed / (first arrival .. last answer)
  int64_t completed = 0;        // answered OK
  int64_t rejected = 0;         // answered RESOURCE_EXHAUSTED (queues or pool full)
  int64_t failed = 0;           // answered with another error
  double p50_ms = 0.0, p90_ms = 0.0, p99_ms = 0.0, max_ms = 0.0;  // completed requests only
  double device_busy = 0.0;     // fraction of the run's wall time the devices ran batches (mean)

  // Extras.
  int64_t sent = 0;             // requests issued
  int64_t unanswered = 0;       // no answer within the drain bound (then cancelled)
  double mean_ms = 0.0;
  double duration_s = 0.0;      // first arrival .. last answer
  std::optional<double> load;            // offered_rps / the reference saturation (--rates auto)
  std::optional<double> saturation_rps;  // this policy's closed-loop saturation, when measured
  std::optional<double> floor_ms;        // the median sentence alone on an idle cluster
  double mean_batch = 0.0;      // real cells per round
  double padding = 0.0;         // padding rows / all rows

  void SetLatency(const LatencyStats& stats);
};

// The JSON text of `rows` (a list), pretty-printed.
std::string RowsToJson(const std::vector<Row>& rows);
std::string CsvHeader();  // the column names, comma-separated, no newline
std::string RowsToCsv(const std::vector<Row>& rows);  // header + one line per row
Status WriteJson(const std::string& path, const std::vector<Row>& rows);
Status WriteCsv(const std::string& path, const std::vector<Row>& rows);

// The table `cellserve bench` prints.
std::string FormatTable(const std::vector<Row>& rows);
void PrintTable(std::FILE* out, const std::vector<Row>& rows);

// The gnuplot script for a PNG at `png_path`: two plots side by side, p99 and p50 latency (ms,
// log scale) against throughput (req/s), one line per policy, data inline.
std::string PlotScript(const std::vector<Row>& rows, const std::string& png_path,
                       const std::string& title);
// Writes the script next to the PNG (same name, .gp) and runs gnuplot on it. UNAVAILABLE if
// gnuplot is not installed (the script is still written), INTERNAL if gnuplot fails,
// INVALID_ARGUMENT if there is nothing to plot.
Status WritePlot(const std::vector<Row>& rows, const std::string& png_path, const std::string& title);

}  // namespace cellserve::bench
