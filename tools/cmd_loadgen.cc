// `cellserve loadgen`: offers load to a running server over RPC and measures what it gets back.
// Where `cellserve bench` runs the serving stack in its own process, loadgen goes through the
// front door (schema/client.h), so it measures the whole path, connection and all.
//
// Method:
//   - Workload: real sentences, one per line of --corpus, tokenized for the served model's spec
//     exactly as `cellserve bench` does (bench/workload.h).
//   - Open loop (default): Poisson arrivals at --rate for --duration-s (bench::PoissonSchedule,
//     seeded). Closed loop (--closed-loop N): N calls outstanding, each answer issues the next,
//     for --duration-s.
//   - One thread, one connection, the async client: a kj timer wakes the sender at each arrival,
//     and thousands of calls can be in flight. Every request is timed from its scheduled send
//     time to its answer, so a late sender counts as latency.
//   - After the duration, answers are awaited up to --drain-s; requests still unanswered then are
//     counted and reported as "unanswered" (and cancelled), never dropped silently.
//   - Latency percentiles are over completed (OK) requests; errors are counted by code.
//     Throughput = completed / (first scheduled send .. last answer).
//   - --answers FILE writes one JSON line per request, as its answer arrives (so not in send
//     order), and one per request still unanswered at the end; every request sent appears exactly
//     once. "i" is the request's index in send order (0, 1, ...), "line" the 0-based line of the
//     corpus its sentence came from (empty and too-long lines count), "code" the status code name:
//       {"i": 0, "line": 12, "code": "OK", "label": 1, "logits": [0.12, -0.40]}   (lstm, treelstm)
//       {"i": 1, "line": 3, "code": "OK", "tokens": [17, 5, 2]}                   (seq2seq)
//       {"i": 2, "line": 7, "code": "UNAVAILABLE", "error": "node n1 was lost"}
//       {"i": 3, "line": 9, "code": "UNANSWERED"}
//     so the answers can be compared with `cellserve serve --stdin` on the same sentences.
// Exit status: 0 ran (errors are results), 1 unanswered requests or a broken connection (or no
// connection at all), 2 bad usage.
#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <kj/async.h>
#include <nlohmann/json.hpp>

#include "bench/report.h"
#include "bench/workload.h"
#include "runtime/atomic_file.h"
#include "runtime/model_spec.h"
#include "schema/client.h"
#include "tools/cli_errors.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/output_paths.h"

namespace cellserve::tools {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
kj::Duration ToKj(Clock::duration d) {
  return std::max<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(), 0) * kj::NANOSECONDS;
}
Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

int BadUsage(const Status& s) { return CommandMisused("loadgen", false, s); }

int Fail(const Status& s) { return CommandFailed("loadgen", false, s); }

// Same default as `cellserve bench`.
struct Config {
  std::string addr, model, corpus, json_path, answers_path;
  bool seq2seq = false;       // the served model's kind: how answers are written
  double rate = 0.0;          // open loop
  int64_t closed_loop = 0;    // > 0: closed loop with this many outstanding
  double duration_s = 10.0;
  double drain_s = 30.0;
  uint64_t seed = 1;
  int64_t timeout_ms = 0;
};

// What a run measured.
struct Tally {
  int64_t sent = 0, completed = 0, unanswered = 0;
  std::map<std::string, int64_t> errors;        // by code name
  std::map<std::string, std::string> samples;   // first message per code
  std::vector<double> latencies_ms;             // completed requests
  std::vector<double> send_lags_ms;             // open loop: how late each call left, against its schedule
  Clock::time_point first_send{}, last_answer{};
  bool connection_broken = false;

  int64_t error_count() const {
    int64_t n = 0;
    for (const auto& [code, count] : errors) n += count;
    return n;
  }
  // Of the answered requests, the share that were errors (0 when none was answered).
  double error_fraction() const {
    const int64_t answered = completed + error_count();
    return answered > 0 ? static_cast<double>(error_count()) / answered : 0.0;
  }
};

// Runs the load on the client's thread; see the file comment.
class LoadGenerator : private kj::TaskSet::ErrorHandler {
 public:
  // `answers`: where --answers lines go (nullptr: none); written on this thread only.
  LoadGenerator(rpc::Client& client, const Config& cfg, const bench::Workload& workload, std::FILE* answers)
      : client_(client), cfg_(cfg), workload_(workload), answers_(answers),
        tasks_(std::make_unique<kj::TaskSet>(static_cast<kj::TaskSet::ErrorHandler&>(*this))) {}

  Tally Run() {
    start_ = Clock::now();
    end_ = start_ + FromSeconds(cfg_.duration_s);
    auto progress = Progress().eagerlyEvaluate(nullptr);
    kj::Promise<void> sending = cfg_.closed_loop > 0 ? ClosedLoop() : OpenLoop();
    sending.exclusiveJoin(client_.WhenDisconnected()).wait(client_.wait_scope());
    sending_done_ = true;
    if (client_.disconnected()) tally_.connection_broken = true;
    if (in_flight_ > 0) {
      auto drained = kj::newPromiseAndFulfiller<void>();
      drained_ = kj::mv(drained.fulfiller);
      drained.promise.exclusiveJoin(SleepUntil(Clock::now() + FromSeconds(cfg_.drain_s)))
          .wait(client_.wait_scope());
      drained_ = nullptr;
    }
    if (client_.disconnected()) tally_.connection_broken = true;
    tally_.unanswered = in_flight_;
    tasks_.reset();  // cancels the unanswered calls (the server drops their cells)
    for (const auto& [i, request] : unanswered_) WriteUnanswered(i, request);
    unanswered_.clear();
    return std::move(tally_);
  }

  // A write to the --answers file failed.
  bool answers_failed() const { return answers_failed_; }

 private:
  void taskFailed(kj::Exception&& e) override {
    // The answer handlers do not throw; a failure here is a bug, counted rather than lost.
    Record(Internal(std::string("load generator: ") + e.getDescription().cStr()), Clock::now());
  }

  void Issue(uint32_t request, Clock::time_point scheduled) {
    rpc::InferCall call;
    call.model = cfg_.model;
    call.input = workload_.requests[request].input;
    call.timeout_us = cfg_.timeout_ms * 1000;
    const int64_t i = tally_.sent;
    if (tally_.sent++ == 0) tally_.first_send = scheduled;
    if (cfg_.closed_loop == 0) tally_.send_lags_ms.push_back(Ms(Clock::now() - scheduled));
    ++in_flight_;
    if (answers_) unanswered_.emplace(i, request);
    tasks_->add(client_.InferAsync(call).then([this, scheduled, i, request](StatusOr<rpc::ReplyValue>&& reply) {
      --in_flight_;
      Record(reply.ok() ? OkStatus() : reply.status(), scheduled);
      if (answers_) {
        unanswered_.erase(i);
        WriteAnswer(i, request, reply);
      }
      if (cfg_.closed_loop > 0 && !sending_done_ && Clock::now() < end_ && !client_.disconnected()) IssueNext();
      if (drained_ && in_flight_ == 0) drained_->fulfill();
    }));
  }

  // The start of an --answers line: request index, 0-based corpus line.
  nlohmann::ordered_json AnswerHead(int64_t i, uint32_t request) const {
    nlohmann::ordered_json j;  // keys in the documented order
    j["i"] = i;
    j["line"] = workload_.requests[request].line - 1;  // BenchRequest::line is 1-based
    return j;
  }

  void WriteLine(const nlohmann::ordered_json& j) {
    const std::string text = JsonText(j) + "\n";
    if (std::fwrite(text.data(), 1, text.size(), answers_) != text.size()) answers_failed_ = true;
  }

  void WriteAnswer(int64_t i, uint32_t request, const StatusOr<rpc::ReplyValue>& reply) {
    nlohmann::ordered_json j = AnswerHead(i, request);
    if (!reply.ok()) {
      j["code"] = StatusCodeName(reply.status().code());
      j["error"] = reply.status().message();
    } else {
      j["code"] = StatusCodeName(StatusCode::kOk);
      if (cfg_.seq2seq) {
        j["tokens"] = reply->result.tokens;
      } else {
        j["label"] = reply->result.label;
        j["logits"] = reply->result.logits;
      }
    }
    WriteLine(j);
  }

  void WriteUnanswered(int64_t i, uint32_t request) {
    nlohmann::ordered_json j = AnswerHead(i, request);
    j["code"] = "UNANSWERED";
    WriteLine(j);
  }

  void Record(const Status& status, Clock::time_point scheduled) {
    const auto now = Clock::now();
    tally_.last_answer = std::max(tally_.last_answer, now);
    if (status.ok()) {
      const double ms = Ms(now - scheduled);
      ++tally_.completed;
      tally_.latencies_ms.push_back(ms);
      recent_ms_.push_back(ms);
      return;
    }
    const std::string code = StatusCodeName(status.code());
    if (tally_.errors[code]++ == 0) tally_.samples[code] = status.message();
  }

  // Resolves at `t` (steady clock). The kj timer's idea of now is only as fresh as the loop's last
  // poll, so a delay can end early: check, and sleep again for what is left.
  kj::Promise<void> SleepUntil(Clock::time_point t) {
    const auto now = Clock::now();
    if (now >= t) return kj::READY_NOW;
    return client_.timer().afterDelay(ToKj(t - now)).then([this, t] { return SleepUntil(t); });
  }

  // Open loop: each arrival at its time, then the rest of the duration.
  kj::Promise<void> OpenLoop() {
    schedule_ = bench::PoissonSchedule(cfg_.rate, cfg_.duration_s, workload_.requests.size(), cfg_.seed);
    return SendDue(0).then([this] { return SleepUntil(end_); });
  }

  kj::Promise<void> SendDue(size_t next) {
    const auto now = Clock::now();
    for (; next < schedule_.size(); ++next) {
      const auto at = start_ + std::chrono::microseconds(schedule_[next].at_us);
      if (at > now) break;
      Issue(schedule_[next].request, at);
    }
    if (next >= schedule_.size()) return kj::READY_NOW;
    const auto at = start_ + std::chrono::microseconds(schedule_[next].at_us);
    return SleepUntil(at).then([this, next] { return SendDue(next); });
  }

  // Closed loop: cfg_.closed_loop calls now; each answer issues the next (Issue) until the end.
  kj::Promise<void> ClosedLoop() {
    order_ = bench::SeededShuffle(workload_.requests.size(), cfg_.seed);
    for (int64_t i = 0; i < cfg_.closed_loop; ++i) IssueNext();
    return SleepUntil(end_);
  }

  void IssueNext() { Issue(order_[static_cast<size_t>(next_++) % order_.size()], Clock::now()); }

  // About once a second on stderr, until the run ends.
  kj::Promise<void> Progress(int64_t tick = 1) {
    return SleepUntil(start_ + std::chrono::seconds(tick)).then([this, tick] {
      std::sort(recent_ms_.begin(), recent_ms_.end());
      const int64_t answered = tally_.completed + tally_.error_count();
      std::fprintf(stderr, "loadgen %6.1f s: sent %lld, answered %lld (%lld errors), in flight %lld, p50 %s\n",
                   Seconds(Clock::now() - start_), static_cast<long long>(tally_.sent),
                   static_cast<long long>(answered), static_cast<long long>(tally_.error_count()),
                   static_cast<long long>(in_flight_),
                   recent_ms_.empty() ? "-"
                                      : (FormatMs(bench::NearestRank(recent_ms_, 50)) + " (last 1 s)").c_str());
      recent_ms_.clear();
      return Progress(tick + 1);
    });
  }

  static std::string FormatMs(double ms) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f ms", ms);
    return buf;
  }

  rpc::Client& client_;
  const Config& cfg_;
  const bench::Workload& workload_;
  std::FILE* answers_;                         // --answers, or nullptr
  bool answers_failed_ = false;                // a write to it failed
  std::map<int64_t, uint32_t> unanswered_;     // --answers: request index -> workload request, in flight
  Tally tally_;
  std::vector<double> recent_ms_;  // completed since the last progress line
  std::vector<bench::Arrival> schedule_;
  std::vector<uint32_t> order_;
  int64_t next_ = 0;
  int64_t in_flight_ = 0;
  bool sending_done_ = false;
  Clock::time_point start_, end_;
  kj::Own<kj::PromiseFulfiller<void>> drained_;
  std::unique_ptr<kj::TaskSet> tasks_;  // last: destroyed (cancelling calls) before what they use
};

std::string Mode(const Config& cfg) {
  char buf[64];
  if (cfg.closed_loop > 0) std::snprintf(buf, sizeof(buf), "closed loop, %lld outstanding", static_cast<long long>(cfg.closed_loop));
  else std::snprintf(buf, sizeof(buf), "open loop, %g req/s", cfg.rate);
  return buf;
}

nlohmann::ordered_json SummaryJson(const Config& cfg, const Tally& t, const bench::LatencyStats& stats,
                                   double throughput, double elapsed_s, const bench::LatencyStats& lag) {
  nlohmann::ordered_json j;
  j["model"] = cfg.model;
  j["addr"] = cfg.addr;
  j["mode"] = cfg.closed_loop > 0 ? "closed_loop" : "open_loop";
  if (cfg.closed_loop > 0) j["offered_rps"] = nullptr;
  else j["offered_rps"] = cfg.rate;
  j["duration_s"] = cfg.duration_s;
  j["sent"] = t.sent;
  j["completed"] = t.completed;
  j["errors"] = nlohmann::ordered_json::object();
  for (const auto& [code, n] : t.errors) j["errors"][code] = n;
  j["answered"] = t.completed + t.error_count();
  j["unanswered"] = t.unanswered;
  j["throughput_rps"] = throughput;
  j["p50_ms"] = stats.p50_ms;
  j["p90_ms"] = stats.p90_ms;
  j["p99_ms"] = stats.p99_ms;
  j["max_ms"] = stats.max_ms;
  // Extras.
  j["latency_of"] = "ok_answers";          // the percentiles: of OK answers only
  j["error_fraction"] = t.error_fraction();
  if (cfg.closed_loop > 0) {
    j["send_lag_p99_ms"] = nullptr;
    j["send_lag_max_ms"] = nullptr;
  } else {  // how late calls left against the schedule (counted in the latencies)
    j["send_lag_p99_ms"] = lag.p99_ms;
    j["send_lag_max_ms"] = lag.max_ms;
  }
  j["mean_ms"] = stats.mean_ms;
  j["elapsed_s"] = elapsed_s;
  if (cfg.closed_loop > 0) j["concurrency"] = cfg.closed_loop;
  j["timeout_ms"] = cfg.timeout_ms;
  j["seed"] = cfg.seed;
  j["corpus"] = cfg.corpus;
  j["connection_broken"] = t.connection_broken;
  j["error_samples"] = nlohmann::ordered_json::object();
  for (const auto& [code, message] : t.samples) j["error_samples"][code] = message;
  return j;
}

}  // namespace

int LoadgenCommand(int argc, char** argv) {
  Flags flags("loadgen",
              "Offers load to a cellserve server (`cellserve serve --listen`) over RPC and measures it:\n"
              "open-loop Poisson arrivals at --rate (or --closed-loop N calls outstanding) of real\n"
              "sentences for --duration-s, every request timed from its scheduled send to its answer.\n"
              "Prints progress about once a second on stderr, then a summary; --json FILE writes it as\n"
              "one JSON object: model, addr, mode, offered_rps, duration_s, sent, completed, errors\n"
              "(by code), answered, unanswered, throughput_rps, p50_ms, p90_ms, p99_ms, max_ms (+ extras).\n"
              "Throughput and latencies are of the OK answers; error_fraction says how many were not;\n"
              "send_lag_p99_ms and send_lag_max_ms how late calls left against the open loop's schedule\n"
              "(null in a closed loop; the lag is in the latencies; over 10 ms at p99 loadgen warns).\n"
              "--answers FILE writes every request's answer (or UNANSWERED), one JSON line each, e.g. to\n"
              "compare with `cellserve serve --stdin` on the same corpus lines.\n"
              "Exit status: 0 ran, 1 a request unanswered after --drain-s or the connection broke,\n"
              "2 bad usage.");
  flags.Add("addr", rpc::kDefaultAddress, "server address HOST:PORT", false, "CELLSERVE_ADDR")
      .Add("model", "", "model name (`cellserve models` lists the served ones)", true)
      .Add("corpus", "", "text file, one sentence per line (default: "
                         "${CELLSERVE_CACHE:-~/.cache/cellserve}/sotu_sentences.txt, made by ./cellserve.sh corpus)")
      .Add("rate", "", "open loop: mean arrivals per second (Poisson); required unless --closed-loop")
      .Add("closed-loop", "0", "closed loop instead: keep this many calls outstanding (0 = open loop)")
      .Add("duration-s", "10", "seconds of sending")
      .Add("drain-s", "30", "after sending, wait this long at most for the answers still due")
      .Add("timeout-ms", "0", "per-request deadline, from the server's receipt; 0 = none")
      .Add("seed", "1", "seed of the arrival schedule and the sentence order")
      .Add("connect-timeout-ms", "5000", "give up connecting after this long")
      .Add("json", "", "write the summary as JSON to this file ('-' = stdout)")
      .Add("answers", "", "write one JSON line per request to this file ('-' = stdout), as answers arrive: {\"i\": send index, "
                          "\"line\": 0-based corpus line, \"code\": \"OK\"|error code|\"UNANSWERED\", then "
                          "\"label\"+\"logits\" (lstm, treelstm), \"tokens\" (seq2seq) or \"error\": message}");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;

  Config cfg;
  cfg.addr = flags.Get("addr");
  cfg.model = flags.Get("model");
  cfg.corpus = flags.Get("corpus").empty() ? bench::DefaultCorpusPath() : flags.Get("corpus");
  cfg.json_path = flags.Get("json");
  cfg.answers_path = flags.Get("answers");
  if (Status s = CheckOutputPaths({{"--json", cfg.json_path}, {"--answers", cfg.answers_path}}, {{"--corpus", cfg.corpus}});
      !s.ok())
    return BadUsage(s);
  // --timeout-ms: the wire carries the deadline in 32-bit milliseconds (about 49 days).
  const StatusOr<int64_t> closed_loop = flags.GetIntIn("closed-loop", 0, INT64_MAX),
                          timeout_ms = flags.GetIntIn("timeout-ms", 0, UINT32_MAX),
                          seed = flags.GetIntIn("seed", 0, INT64_MAX),
                          connect_timeout_ms = flags.GetIntIn("connect-timeout-ms", 1, INT64_MAX);
  for (const StatusOr<int64_t>* v : {&closed_loop, &timeout_ms, &seed, &connect_timeout_ms})
    if (!v->ok()) return BadUsage(v->status());
  const StatusOr<double> duration_s = flags.GetDouble("duration-s"), drain_s = flags.GetDouble("drain-s");
  for (const StatusOr<double>* v : {&duration_s, &drain_s})  // finite, or an error
    if (!v->ok()) return BadUsage(v->status());
  if (!(*duration_s > 0)) return BadUsage(InvalidArgument("--duration-s must be > 0"));
  if (*drain_s < 0) return BadUsage(InvalidArgument("--drain-s must be >= 0"));
  cfg.closed_loop = *closed_loop;
  cfg.timeout_ms = *timeout_ms;
  cfg.seed = static_cast<uint64_t>(*seed);
  cfg.duration_s = *duration_s;
  cfg.drain_s = *drain_s;
  const bool has_rate = !flags.Get("rate").empty();
  if (cfg.closed_loop > 0 && has_rate) return BadUsage(InvalidArgument("give --rate or --closed-loop, not both"));
  if (cfg.closed_loop == 0) {
    if (!has_rate) return BadUsage(InvalidArgument("give --rate R (open loop) or --closed-loop N"));
    auto rate = flags.GetDouble("rate");
    if (!rate.ok()) return BadUsage(rate.status());
    if (*rate <= 0) return BadUsage(InvalidArgument("--rate must be > 0"));
    if (Status s = bench::CheckScheduleSize(*rate, *duration_s); !s.ok()) return BadUsage(s);
    cfg.rate = *rate;
  }

  auto client = rpc::Client::Connect(cfg.addr, *connect_timeout_ms);
  if (!client.ok() && client.status().code() == StatusCode::kInvalidArgument)
    return BadUsage(client.status().WithContext("--addr"));
  if (!client.ok()) return Fail(client.status());
  auto served = (*client)->Models();
  if (!served.ok()) return Fail(served.status().WithContext("listing the served models"));
  auto spec = rpc::FindModel(*served, cfg.model, 0);
  if (!spec.ok())
    return Fail(Status(spec.status().code(), spec.status().message() + "; `cellserve models --addr " + cfg.addr +
                                                 "` lists them"));
  auto workload = bench::LoadWorkload(cfg.corpus, bench::WorkloadOptionsFor(*spec));
  if (!workload.ok()) return Fail(workload.status());
  const auto& st = workload->stats;
  std::fprintf(stderr,
               "loadgen: %s at %s: model %s (%s); corpus %s: %lld requests (%lld lines, %lld empty, %lld too long)\n",
               Mode(cfg).c_str(),
               cfg.addr.c_str(), cfg.model.c_str(), ModelKindName(spec->kind), cfg.corpus.c_str(),
               static_cast<long long>(st.used), static_cast<long long>(st.lines), static_cast<long long>(st.empty),
               static_cast<long long>(st.too_long));

  cfg.seq2seq = spec->kind == ModelKind::kSeq2Seq;
  std::FILE* answers = nullptr;
  if (cfg.answers_path == "-") {
    answers = stdout;
  } else if (!cfg.answers_path.empty()) {
    answers = std::fopen(cfg.answers_path.c_str(), "w");
    if (!answers) return Fail(Internal("cannot write --answers " + cfg.answers_path + ": " + std::strerror(errno)));
  }
  // Line by line, as answers arrive: an interrupted run leaves whole lines.
  if (answers) std::setvbuf(answers, nullptr, _IOLBF, 1 << 16);

  Tally tally;
  bool answers_failed = false;
  {
    LoadGenerator generator(**client, cfg, *workload, answers);
    tally = generator.Run();
    answers_failed = generator.answers_failed();
  }
  if (answers && (answers == stdout ? std::fflush(answers) : std::fclose(answers)) != 0) answers_failed = true;
  const bench::LatencyStats stats = bench::ComputeLatencyStats(tally.latencies_ms);
  const double elapsed_s = tally.sent > 0 ? std::max(Seconds(tally.last_answer - tally.first_send), 0.0) : 0.0;
  const double throughput = elapsed_s > 0 ? tally.completed / elapsed_s : 0.0;

  std::fprintf(stderr, "loadgen: sent %lld, completed %lld, errors %lld, unanswered %lld\n",
               static_cast<long long>(tally.sent), static_cast<long long>(tally.completed),
               static_cast<long long>(tally.error_count()), static_cast<long long>(tally.unanswered));
  for (const auto& [code, n] : tally.errors)
    std::fprintf(stderr, "  %lld x %s, e.g. %s\n", static_cast<long long>(n), code.c_str(), tally.samples[code].c_str());
  std::fprintf(stderr, "loadgen: throughput %.1f req/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
               throughput, stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.max_ms);
  // The latencies are the OK answers': with errors among the answers (refusals come fast) a
  // percentile over every request would differ, and past 1% of them p99 would lie among them.
  const double error_fraction = tally.error_fraction();
  if (error_fraction > 0.01)
    std::fprintf(stderr, "loadgen: %.1f%% of the answers were errors: the latencies above are of the %lld OK answers "
                         "only, not of every request\n",
                 100.0 * error_fraction, static_cast<long long>(tally.completed));
  // The generator's own lag: a call that leaves late is timed from its schedule (no coordinated
  // omission), so the lag shows as the server's latency; say when it is large.
  const bench::LatencyStats lag = bench::ComputeLatencyStats(tally.send_lags_ms);
  if (cfg.closed_loop == 0 && !tally.send_lags_ms.empty()) {
    std::fprintf(stderr, "loadgen: calls left late against the schedule by p99 %.2f ms, max %.2f ms\n", lag.p99_ms,
                 lag.max_ms);
    if (lag.p99_ms > 10.0)
      std::fprintf(stderr, "loadgen: warning: this load generator fell behind its schedule (its thread is busy or the "
                           "machine is): the lag counts in the latencies above; run several loadgens with lower "
                           "rates, or on another machine\n");
  }
  if (tally.unanswered > 0)
    std::fprintf(stderr, "loadgen: %lld request(s) had no answer %.1f s after sending ended (counted as unanswered, "
                         "cancelled); the server is overloaded or stuck; try a lower --rate or a larger --drain-s\n",
                 static_cast<long long>(tally.unanswered), cfg.drain_s);
  if (tally.connection_broken)
    std::fprintf(stderr, "loadgen: the connection to %s broke during the run; is the server still running?\n",
                 cfg.addr.c_str());

  if (!cfg.json_path.empty()) {
    const std::string text =
        JsonText(SummaryJson(cfg, tally, stats, throughput, elapsed_s, lag), 2) + "\n";
    if (cfg.json_path == "-") {
      std::fputs(text.c_str(), stdout);
    } else {
      // Whole or not at all, like every other output file (runtime/atomic_file.h).
      if (Status s = WriteFileAtomically(cfg.json_path, text); !s.ok()) return Fail(s);
    }
  }
  if (answers_failed) return Fail(Internal("cannot write --answers " + cfg.answers_path));
  return tally.unanswered > 0 || tally.connection_broken ? 1 : 0;
}

}  // namespace cellserve::tools
