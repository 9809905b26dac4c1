// The benchmark workload (DESIGN.md §9): real sentences turned into requests for one model kind,
// and an open-loop Poisson arrival schedule over them.
//
// Corpus: a text file with one sentence per line (`cellserve corpus` makes the State of the Union
// one). Each line is tokenized by HashTokenizer(vocab_size); lstm and seq2seq requests carry the
// tokens, treelstm requests the BracketBalanced tree over them. Lines with no tokens are skipped
// as empty, lines with more than max_input_tokens tokens as too long; both are counted.
//
// Schedule: arrival gaps are exponential with mean 1/rate (a Poisson process), drawn from a
// seeded generator whose output is the same on every platform (mt19937_64's raw output, our own
// conversion to doubles and bounded integers; no std::*_distribution). Arrivals fall in
// [0, duration); each takes the next request of a seeded shuffle of the corpus, wrapping around.
// The same (rate, duration, seed, corpus size) always gives the same schedule.
// Pure functions and values; thread-compatible.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "runtime/cell_graph.h"
#include "runtime/model_spec.h"
#include "runtime/status.h"

namespace cellserve::bench {

struct WorkloadOptions {
  ModelKind kind = ModelKind::kLstm;
  int64_t vocab_size = 32000;
  int64_t max_input_tokens = 1024;  // longer sentences are skipped (counted as too_long)
};

// The options a model's spec asks for.
WorkloadOptions WorkloadOptionsFor(const ModelSpec& spec);

struct BenchRequest {
  RequestInput input;
  int64_t length = 0;  // tokens (lstm, seq2seq) or leaves (treelstm)
  int64_t line = 0;    // 1-based line of the corpus it came from
};

struct CorpusStats {
  int64_t lines = 0;     // lines read
  int64_t empty = 0;     // skipped: no tokens
  int64_t too_long = 0;  // skipped: more than max_input_tokens
  int64_t used = 0;      // requests made
  double mean_length = 0.0;
  int64_t median_length = 0;  // the length of MedianRequest's request
  int64_t p99_length = 0;     // the length of RequestAtLengthPercentile(w, 99)
  int64_t max_length = 0;
};

struct Workload {
  std::vector<BenchRequest> requests;  // in corpus order
  CorpusStats stats;
};

// Builds requests from sentences (one per element; a trailing '\r' is ignored).
Workload MakeWorkload(const std::vector<std::string>& sentences, const WorkloadOptions& options);
// Reads one sentence per line. INVALID_ARGUMENT if no line gives a request.
StatusOr<Workload> ReadWorkload(std::istream& in, const WorkloadOptions& options);
// The default corpus: ${CELLSERVE_CACHE:-$HOME/.cache/cellserve}/sotu_sentences.txt (made by
// `./cellserve.sh corpus`).
std::string DefaultCorpusPath();

// INVALID_ARGUMENT if `path` is a folder (which opens, and reads as an empty corpus); OK otherwise.
Status CheckCorpusIsNotAFolder(const std::string& path);

// NOT_FOUND if the file cannot be opened (the message says how to make the default corpus).
StatusOr<Workload> LoadWorkload(const std::string& path, const WorkloadOptions& options);

// The index of a request whose length is the p-th percentile of the lengths (nearest rank, as
// the latency percentiles; among equal lengths the first in corpus order), 0 < p <= 100.
// Precondition: the workload is not empty.
size_t RequestAtLengthPercentile(const Workload& workload, double p);

// RequestAtLengthPercentile(workload, 50): the lower median.
size_t MedianRequest(const Workload& workload);

// A permutation of 0..n-1 (Fisher-Yates) from the seed; portable.
std::vector<uint32_t> SeededShuffle(size_t n, uint64_t seed);

struct Arrival {
  int64_t at_us = 0;     // offset from the start of the run
  uint32_t request = 0;  // index into Workload::requests
};

// Open-loop Poisson arrivals at `rate_per_s` for `duration_s`, ascending in time, drawing requests
// from a seeded shuffle of `num_requests` (wrapping around). Empty if rate, duration or
// num_requests is not positive. Callers check the size with CheckScheduleSize first: the schedule
// is held in memory whole (16 bytes an arrival).
std::vector<Arrival> PoissonSchedule(double rate_per_s, double duration_s, size_t num_requests,
                                     uint64_t seed);

// The most arrivals one open-loop run schedules (about 800 MB of schedule; hours at any rate this
// project has served).
constexpr double kMaxScheduledArrivals = 5e7;
// INVALID_ARGUMENT, naming --rate and --duration-s, unless rate_per_s * duration_s is at most
// kMaxScheduledArrivals.
Status CheckScheduleSize(double rate_per_s, double duration_s);

// Derives an independent seed for stream `index` of a run seeded `seed` (splitmix64).
uint64_t MixSeed(uint64_t seed, uint64_t index);

}  // namespace cellserve::bench
