// `cellserve run`: runs sentences through a model on the CPU backend with the synchronous
// executor, first each sentence alone (its latency on an idle device), then all of them batched
// cell type by cell type, and prints a table: output and time per sentence, the batched
// throughput, and whether every batched result equals the one computed alone. With
// --compare-precision, also all of them batched under the other --cpu-precision, and how many
// answers that changed, by sentence length (runtime/answer_diff.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "bench/workload.h"
#include "kernels/cpu/amx_gemm.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/answer_diff.h"
#include "runtime/cell_graph.h"
#include "runtime/model_repository.h"
#include "runtime/sync_executor.h"
#include "runtime/text.h"
#include "tools/commands.h"
#include "tools/cli_errors.h"
#include "tools/flags.h"
#include "tools/cpu_precision_flag.h"
#include "tools/retired_flags.h"
#include "tools/fold_flag.h"

namespace cellserve::tools {

namespace {

int Fail(const Status& s) { return CommandFailed("run", false, s); }

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

std::string Describe(const ModelSpec& spec, const StatusOr<RequestResult>& r) {
  if (!r.ok()) return std::string("error ") + StatusCodeName(r.status().code());
  char buf[64];
  if (spec.kind != ModelKind::kSeq2Seq) {
    std::snprintf(buf, sizeof(buf), "class %d (logit %+.4f)", r->label, r->logits[r->label]);
    return buf;
  }
  std::string s = std::to_string(r->tokens.size()) + " tok:";
  for (size_t i = 0; i < r->tokens.size() && i < 4; ++i) s += " " + std::to_string(r->tokens[i]);
  if (r->tokens.size() > 4) s += " ...";
  return s;
}

StatusOr<std::vector<std::string>> ReadSentences(const std::string& path, int64_t count) {
  RETURN_IF_ERROR(bench::CheckCorpusIsNotAFolder(path));
  std::ifstream in(path);
  if (!in) return NotFound("cannot open corpus " + path + " (one sentence per line; ./cellserve.sh corpus makes one)");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)  // blank lines are no sentences (as bench reads them)
    if (line.find_first_not_of(" \t\r\f\v") != std::string::npos) lines.push_back(line);
  if (lines.empty()) return InvalidArgument("corpus " + path + " has no sentences");
  // An even sample through the file, so old and new addresses both appear.
  std::vector<std::string> picked;
  const size_t n = std::min<size_t>(static_cast<size_t>(count), lines.size());
  for (size_t i = 0; i < n; ++i) picked.push_back(lines[i * lines.size() / n]);
  return picked;
}

const char* PrecisionName(bool bf16) { return bf16 ? "bf16" : "fp32"; }

// Every sentence batched cell type by cell type on `backend`: results[i] is sentence i's answer
// (the error of its graph if it has none); ms counts making the graphs and running them.
struct BatchedRun {
  std::vector<StatusOr<RequestResult>> results;
  double ms = 0.0;
  SyncExecutorStats stats;
};

template <typename GraphOf>
BatchedRun RunBatched(Backend& backend, const Model& model, int64_t slots, size_t count, const GraphOf& graph_of) {
  BatchedRun run;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<RequestGraph>> graphs;
  std::vector<size_t> index;  // graphs[i] is sentence index[i]
  run.results.assign(count, StatusOr<RequestResult>(Internal("not run")));
  for (size_t i = 0; i < count; ++i) {
    auto graph = graph_of(i);
    if (!graph.ok()) {
      run.results[i] = graph.status();
      continue;
    }
    graphs.push_back(std::move(*graph));
    index.push_back(i);
  }
  SyncExecutor executor(&backend, &model, static_cast<int32_t>(slots));
  auto results = executor.Run(graphs);
  run.ms = Ms(std::chrono::steady_clock::now() - start);
  run.stats = executor.stats();
  for (size_t i = 0; i < index.size(); ++i) run.results[index[i]] = std::move(results[i]);
  return run;
}

// Runs every sentence batched on a backend like `options` but under the other precision, and
// prints how its answers differ from `answers` (this run's, batched), by sentence length.
template <typename GraphOf>
Status ComparePrecision(const Model& model, cpu::CpuBackendOptions options, bool other_bf16, const GraphOf& graph_of,
                        int64_t slots, const std::vector<int64_t>& words,
                        const std::vector<StatusOr<RequestResult>>& answers, double answers_ms) {
  options.cell_weights.bf16_compute = other_bf16;
  cpu::CpuBackend backend(options);
  RETURN_IF_ERROR(backend.RegisterModel(model, static_cast<int32_t>(slots)));
  const BatchedRun other = RunBatched(backend, model, slots, words.size(), graph_of);
  const double other_ms = other.ms;
  std::vector<AnswerDiff> diffs;
  int64_t changed = 0;
  for (size_t i = 0; i < words.size(); ++i) {
    diffs.push_back(DiffAnswers(answers[i], other.results[i]));
    changed += diffs.back().changed ? 1 : 0;
  }
  const char* self = PrecisionName(!other_bf16);
  const char* them = PrecisionName(other_bf16);
  std::printf("\n%s against %s compute, all %zu sentences batched (--compare-precision):\n", self, them, words.size());
  std::printf("  %-18s %.1f ms %s, %.1f ms %s (%s is %.2fx faster)\n", "time:", answers_ms, self, other_ms, them,
              answers_ms > other_ms ? them : self, std::max(answers_ms, other_ms) / std::max(std::min(answers_ms, other_ms), 1e-9));
  std::printf("  %-18s %lld of %zu (%.1f%%): %s\n", "answers changed:", (long long)changed, words.size(),
              100.0 * changed / std::max<size_t>(words.size(), 1),
              model.spec().kind == ModelKind::kSeq2Seq ? "output tokens" : "class");
  std::printf("  %-10s %10s %8s %12s %12s\n", "words", "sentences", "changed", "mean |d|", "max |d|");
  for (const AnswerDiffBucket& b : SummarizeByLength(words, diffs, {20, 40, 80})) {
    const std::string range = b.max_words == std::numeric_limits<int64_t>::max()
                                  ? std::to_string(b.min_words) + "+"
                                  : std::to_string(b.min_words) + "-" + std::to_string(b.max_words);
    std::printf("  %-10s %10lld %8lld %12.4g %12.4g\n", range.c_str(), (long long)b.answers, (long long)b.changed,
                b.mean_abs, b.max_abs);
  }
  std::printf("  (|d|: the largest difference of an answer's %s)\n",
              model.spec().kind == ModelKind::kSeq2Seq ? "step scores" : "logits");
  return OkStatus();
}

}  // namespace

int RunCommand(int argc, char** argv) {
  Flags flags("run",
              "Runs sentences through a model on the CPU: each alone, then all batched cell by cell.\n"
              "Sentences come from the positional TEXT arguments or from --corpus.");
  flags.Add("model-repo", "", "model repository folder", true, "CELLSERVE_MODEL_REPO")
      .Add("model", "", "model name in the repository", true)
      .Add("corpus", "", "text file, one sentence per line (used when no TEXT is given)")
      .Add("sentences", "20", "how many sentences to take from the corpus (an even sample)")
      .AddBool("compare-precision",
               "also run the sentences batched under the other --cpu-precision (fp32 or bf16; needs AMX-BF16) and "
               "report how many answers changed and how far the logits or scores moved, by sentence length")
      .Positional("TEXT...", "sentences to run");
  AddFoldFlag(flags);
  AddCpuPrecisionFlag(flags);
  AddRetiredFlags(flags);
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  WarnAboutRetiredFlags(flags, "run");

  auto t0 = std::chrono::steady_clock::now();
  auto model = LoadModel(flags.Get("model-repo"), flags.Get("model"));
  if (!model.ok()) return Fail(model.status());
  const ModelSpec& spec = (*model)->spec();
  std::printf("loaded model '%s' (%s, hidden %lld, %lld layer(s), vocab %lld) in %.0f ms\n",
              spec.name.c_str(), ModelKindName(spec.kind), (long long)spec.hidden, (long long)spec.layers,
              (long long)spec.vocab_size, Ms(std::chrono::steady_clock::now() - t0));

  std::vector<std::string> sentences = flags.positional();
  if (sentences.empty()) {
    if (flags.Get("corpus").empty()) return FlagValueFailed("run", InvalidArgument("give TEXT arguments or --corpus FILE"));
    auto count = flags.GetIntIn("sentences", 1, INT64_MAX);
    if (!count.ok()) return FlagValueFailed("run", count.status());
    auto read = ReadSentences(flags.Get("corpus"), *count);
    if (!read.ok()) return Fail(read.status());
    sentences = std::move(*read);
  }
  auto fold_max = FoldMaxBytes(flags);
  if (!fold_max.ok()) return FlagValueFailed("run", fold_max.status());
  auto bf16 = CpuBf16Compute(flags);
  if (!bf16.ok()) return FlagValueFailed("run", bf16.status());
  const bool compare = flags.GetBool("compare-precision");
  if (const std::string why = compare ? cpu::AmxBf16Missing() : ""; !why.empty())  // asks the kernel only then
    return Fail(Unavailable("--compare-precision runs bf16 compute beside fp32, which needs AMX-BF16: " + why +
                            "; run it on a CPU that has it"));

  HashTokenizer tokenizer(spec.vocab_size);
  auto make_graph = [&](const std::string& text) {
    RequestInput input;
    input.tokens = tokenizer.Encode(text);
    if (spec.kind == ModelKind::kTreeLstm && !input.tokens.empty()) {
      input.tree = BracketBalanced(input.tokens);
      input.has_tree = true;
      input.tokens.clear();
    }
    return BuildRequestGraph(*model, input);
  };

  cpu::CpuBackendOptions options;
  options.cell_weights.fold_max_bytes = *fold_max;
  options.cell_weights.bf16_compute = *bf16;
  cpu::CpuBackend backend(options);
  // Enough slots for every sentence at once: each cell holds one until its readers ran.
  int64_t slots = 0;
  for (const auto& s : sentences)
    slots += (static_cast<int64_t>(tokenizer.Words(s).size()) + spec.max_decode_len + 2) * spec.layers * 2;
  slots = std::min<int64_t>(std::max<int64_t>(slots, 64), 1 << 20);
  const auto t_register = std::chrono::steady_clock::now();
  if (auto s = backend.RegisterModel(**model, static_cast<int32_t>(slots)); !s.ok()) return Fail(s);
  if (const int64_t folded = backend.FoldedBytes(**model); folded > 0)
    std::printf("token inputs folded into per-token tables: %.1f MiB; model registered in %.0f ms (--fold-max-mib 0: no tables)\n",
                static_cast<double>(folded) / (1 << 20), Ms(std::chrono::steady_clock::now() - t_register));

  // Each sentence alone: the latency floor of an idle device.
  std::vector<StatusOr<RequestResult>> alone;
  std::vector<double> alone_ms;
  for (const auto& text : sentences) {
    auto start = std::chrono::steady_clock::now();
    auto graph = make_graph(text);
    if (!graph.ok()) {
      alone.emplace_back(graph.status());
      alone_ms.push_back(0.0);
      continue;
    }
    std::vector<std::unique_ptr<RequestGraph>> one;
    one.push_back(std::move(*graph));
    SyncExecutor executor(&backend, model->get(), static_cast<int32_t>(slots));
    alone.push_back(std::move(executor.Run(one)[0]));
    alone_ms.push_back(Ms(std::chrono::steady_clock::now() - start));
  }

  // All sentences batched together, cell type by cell type.
  auto graph_of = [&](size_t i) { return make_graph(sentences[i]); };
  const BatchedRun batched = RunBatched(backend, **model, slots, sentences.size(), graph_of);

  std::printf("\n%3s  %5s  %-24s  %9s  %s\n", "#", "words", "output", "alone ms", "sentence");
  double total_alone_ms = 0.0, max_diff = 0.0;
  for (size_t i = 0; i < sentences.size(); ++i) {
    // Cut at a character's start (not inside a UTF-8 sequence), control bytes (a CRLF corpus's
    // '\r') shown as spaces: the column is for a terminal.
    std::string text = sentences[i];
    if (text.size() > 60) {
      size_t cut = 57;
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
      text = text.substr(0, cut) + "...";
    }
    for (char& ch : text)
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) ch = ' ';
    std::printf("%3zu  %5zu  %-24s  %9.2f  %s\n", i + 1, tokenizer.Words(sentences[i]).size(),
                Describe(spec, alone[i]).c_str(), alone_ms[i], text.c_str());
    if (!alone[i].ok()) std::printf("       %s\n", alone[i].status().ToString().c_str());
    total_alone_ms += alone_ms[i];
    const AnswerDiff d = DiffAnswers(alone[i], batched.results[i]);  // any change is a difference
    max_diff = std::max(max_diff, d.changed ? INFINITY : d.max_abs);
  }
  const SyncExecutorStats& st = batched.stats;
  std::printf("\n%-34s %10.1f ms  (%.1f sentences/s)\n", "one at a time, total:", total_alone_ms,
              1000.0 * sentences.size() / std::max(total_alone_ms, 1e-9));
  std::printf("%-34s %10.1f ms  (%.1f sentences/s, %.2fx)\n", "batched cell by cell, total:", batched.ms,
              1000.0 * sentences.size() / std::max(batched.ms, 1e-9), total_alone_ms / std::max(batched.ms, 1e-9));
  std::printf("%-34s %lld cells in %lld batches (mean batch %.1f)\n", "batched work:", (long long)st.cells,
              (long long)st.batches, st.batches ? double(st.cells) / st.batches : 0.0);
  std::printf("%-34s %s (max |difference| %.2g)\n", "batched results equal alone:",
              max_diff <= 1e-6 ? "yes" : "NO", max_diff);
  if (compare) {
    std::vector<int64_t> words;
    for (const auto& text : sentences) words.push_back(static_cast<int64_t>(tokenizer.Words(text).size()));
    if (Status s = ComparePrecision(**model, options, !*bf16, graph_of, slots, words, batched.results, batched.ms);
        !s.ok())
      return Fail(s);
  }
  const size_t failed = static_cast<size_t>(
      std::count_if(alone.begin(), alone.end(), [](const StatusOr<RequestResult>& r) { return !r.ok(); }));
  if (failed > 0) std::printf("%-34s %zu of %zu (above)\n", "sentences that failed:", failed, sentences.size());
  if (failed == sentences.size()) return 1;  // nothing ran: the figures above mean nothing
  return max_diff <= 1e-6 ? 0 : 1;
}

}  // namespace cellserve::tools
