#include <cstdlib>
#include "bench/workload.h"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <system_error>

#include "bench/report.h"
#include "runtime/text.h"

namespace cellserve::bench {

namespace {

// Uniform in [0, bound) without modulo bias; portable (mt19937_64's output is standardized).
uint64_t UniformBelow(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  for (;;) {
    const uint64_t r = gen();
    if (r >= threshold) return r % bound;
  }
}

// Uniform in [0, 1) with 53 random bits.
double UniformUnit(std::mt19937_64& gen) { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }

}  // namespace

WorkloadOptions WorkloadOptionsFor(const ModelSpec& spec) {
  WorkloadOptions options;
  options.kind = spec.kind;
  options.vocab_size = spec.vocab_size;
  options.max_input_tokens = spec.max_input_tokens;
  return options;
}

Workload MakeWorkload(const std::vector<std::string>& sentences, const WorkloadOptions& options) {
  Workload w;
  HashTokenizer tokenizer(options.vocab_size);
  int64_t total = 0;
  for (const auto& raw : sentences) {
    ++w.stats.lines;
    std::string_view line = raw;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::vector<int32_t> tokens = tokenizer.Encode(line);
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) {
      ++w.stats.empty;
      continue;
    }
    if (n > options.max_input_tokens) {
      ++w.stats.too_long;
      continue;
    }
    BenchRequest r;
    r.length = n;
    r.line = w.stats.lines;
    if (options.kind == ModelKind::kTreeLstm) {
      r.input.tree = BracketBalanced(tokens);
      r.input.has_tree = true;
    } else {
      r.input.tokens = std::move(tokens);
    }
    total += n;
    w.stats.max_length = std::max(w.stats.max_length, n);
    w.requests.push_back(std::move(r));
  }
  w.stats.used = static_cast<int64_t>(w.requests.size());
  if (w.stats.used > 0) {
    w.stats.mean_length = static_cast<double>(total) / static_cast<double>(w.stats.used);
    w.stats.median_length = w.requests[MedianRequest(w)].length;
    w.stats.p99_length = w.requests[RequestAtLengthPercentile(w, 99)].length;
  }
  return w;
}

StatusOr<Workload> ReadWorkload(std::istream& in, const WorkloadOptions& options) {
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  Workload w = MakeWorkload(lines, options);
  if (w.requests.empty()) {
    return InvalidArgument("the corpus has no usable sentence (" + std::to_string(w.stats.lines) +
                           " lines, " + std::to_string(w.stats.empty) + " empty, " +
                           std::to_string(w.stats.too_long) + " longer than " +
                           std::to_string(options.max_input_tokens) + " tokens)");
  }
  return w;
}

Status CheckCorpusIsNotAFolder(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return InvalidArgument("corpus " + path + " is a folder; give a text file, one sentence per line "
                           "(`cellserve corpus --input FOLDER --out FILE` makes one from a folder of texts)");
  return OkStatus();
}

StatusOr<Workload> LoadWorkload(const std::string& path, const WorkloadOptions& options) {
  RETURN_IF_ERROR(CheckCorpusIsNotAFolder(path));
  std::ifstream in(path);
  if (!in) {
    return NotFound("cannot open corpus " + path +
                    " (one sentence per line; `./cellserve.sh corpus` makes the State of the Union one,"
                    " or pass --corpus FILE with any text, one sentence per line)");
  }
  auto w = ReadWorkload(in, options);
  if (!w.ok()) return w.status().WithContext("corpus " + path);
  return w;
}

size_t RequestAtLengthPercentile(const Workload& workload, double p) {
  const auto& rs = workload.requests;
  std::vector<double> lengths;
  lengths.reserve(rs.size());
  for (const BenchRequest& r : rs) lengths.push_back(static_cast<double>(r.length));
  std::sort(lengths.begin(), lengths.end());
  // The percentile's length, then the first request of that length in corpus order.
  const auto length = static_cast<int64_t>(NearestRank(lengths, p));
  for (size_t i = 0; i < rs.size(); ++i)
    if (rs[i].length == length) return i;
  return 0;  // unreachable
}

size_t MedianRequest(const Workload& workload) { return RequestAtLengthPercentile(workload, 50); }

std::vector<uint32_t> SeededShuffle(size_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  std::iota(p.begin(), p.end(), uint32_t{0});
  std::mt19937_64 gen(seed);
  for (size_t i = n; i > 1; --i) {
    const size_t j = static_cast<size_t>(UniformBelow(gen, i));
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

std::vector<Arrival> PoissonSchedule(double rate_per_s, double duration_s, size_t num_requests,
                                     uint64_t seed) {
  std::vector<Arrival> out;
  if (!(rate_per_s > 0.0) || !(duration_s > 0.0) || num_requests == 0) return out;
  const std::vector<uint32_t> order = SeededShuffle(num_requests, MixSeed(seed, 1));
  std::mt19937_64 gen(MixSeed(seed, 0));
  out.reserve(static_cast<size_t>(rate_per_s * duration_s * 1.1) + 16);
  double t = 0.0;
  for (size_t i = 0;; ++i) {
    t += -std::log1p(-UniformUnit(gen)) / rate_per_s;
    if (t >= duration_s) break;
    Arrival a;
    a.at_us = static_cast<int64_t>(t * 1e6);
    a.request = order[i % order.size()];
    out.push_back(a);
  }
  return out;
}

Status CheckScheduleSize(double rate_per_s, double duration_s) {
  const double expected = rate_per_s * duration_s;
  if (!(expected <= kMaxScheduledArrivals)) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "--rate %g per s for --duration-s %g would schedule about %.3g requests, more than one run "
                  "holds (%.0f): lower the rate or shorten the run",
                  rate_per_s, duration_s, expected, kMaxScheduledArrivals);
    return InvalidArgument(buf);
  }
  return OkStatus();
}

uint64_t MixSeed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::string DefaultCorpusPath() {
  const char* cache = std::getenv("CELLSERVE_CACHE");
  if (cache && *cache) return std::string(cache) + "/sotu_sentences.txt";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/cellserve/sotu_sentences.txt";  // as cellserve.sh
}

}  // namespace cellserve::bench
