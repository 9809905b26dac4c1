// Helpers for the actor tests: small models, reference results from the SyncExecutor, a fake
// Device that runs a batch (on a real CpuBackend) only when the test says so, and a recorder of
// answers that counts how many each request got.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/messages.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/cell_graph.h"
#include "runtime/device.h"
#include "runtime/model_repository.h"
#include "tests/unit/common/random_model.h"
#include "runtime/sync_executor.h"
#include "runtime/text.h"

namespace cellserve::actor_testing {

inline ModelSpec SmallSpec(const std::string& name, ModelKind kind, int64_t hidden = 16, int64_t layers = 2) {
  ModelSpec s;
  s.name = name;
  s.kind = kind;
  s.vocab_size = 97;
  s.embed_dim = hidden / 2 + 3;  // E != H catches layout mix-ups
  s.hidden = hidden;
  s.layers = layers;
  s.classes = kind == ModelKind::kSeq2Seq ? 0 : 5;
  s.target_vocab_size = kind == ModelKind::kSeq2Seq ? 40 : 0;
  s.max_decode_len = 12;
  s.max_input_tokens = 64;
  s.max_batch = 32;
  return s;
}

inline std::shared_ptr<const Model> MakeModel(const ModelSpec& spec, uint64_t seed = 7) {
  return testutil::RandomModel(spec, seed);
}

// Deterministic pseudo-random token sequence of `n` tokens in [kFirstWordId, vocab).
inline std::vector<int32_t> Tokens(int n, uint64_t seed, int64_t vocab) {
  std::vector<int32_t> t;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t.push_back(static_cast<int32_t>(kFirstWordId + x % static_cast<uint64_t>(vocab - kFirstWordId)));
  }
  return t;
}

// The input a model of this kind takes for these tokens (a balanced tree for treelstm).
inline RequestInput InputFor(const Model& model, std::vector<int32_t> tokens) {
  RequestInput in;
  if (model.spec().kind == ModelKind::kTreeLstm) {
    in.tree = BracketBalanced(tokens);
    in.has_tree = true;
  } else {
    in.tokens = std::move(tokens);
  }
  return in;
}

// The request alone on the synchronous executor: the reference every actor result must equal.
inline StatusOr<RequestResult> Reference(const std::shared_ptr<const Model>& model, const RequestInput& in) {
  auto graph = BuildRequestGraph(model, in);
  if (!graph.ok()) return graph.status();
  cpu::CpuBackend backend;
  const int32_t slots = 4096;
  Status s = backend.RegisterModel(*model, slots);
  if (!s.ok()) return s;
  std::vector<std::unique_ptr<RequestGraph>> graphs;
  graphs.push_back(std::move(graph).value());
  SyncExecutor executor(&backend, model.get(), slots);
  return std::move(executor.Run(graphs)[0]);
}

// Bitwise equality of two results (the CPU kernels are batch invariant).
inline bool SameResult(const RequestResult& a, const RequestResult& b) {
  return a.label == b.label && a.logits == b.logits && a.tokens == b.tokens && a.scores == b.scores;
}

// A Device whose batches run only when the test calls Complete*: on the calling thread, on a real
// CpuBackend, with the callback called there too. Single-threaded (the test_coordinator's thread).
class FakeDevice final : public Device {
 public:
  explicit FakeDevice(std::string name = "fake:0") : name_(std::move(name)) {}

  std::string name() const override { return name_; }
  Status RegisterModel(const Model& model, int32_t slots) override { return backend_.RegisterModel(model, slots); }
  void Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) override {
    queue_.push_back(Job{round_id, std::move(batch), std::move(done)});
    ++submitted_;
    max_pending_ = std::max<int64_t>(max_pending_, static_cast<int64_t>(queue_.size()));
  }
  int64_t pending() const override { return static_cast<int64_t>(queue_.size()); }
  DeviceStats stats() const override { return stats_; }

  // Runs the oldest queued batch (or fails it with `error`) and reports it. False if none queued.
  bool CompleteOne(const Status& error = OkStatus()) {
    if (queue_.empty()) return false;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    DeviceCompletion c;
    c.round_id = job.round_id;
    const int64_t took = 1 + us_per_row_ * static_cast<int64_t>(job.batch.rows.size());
    c.start_us = busy_clock_us_;
    c.end_us = busy_clock_us_ += took;
    if (error.ok()) {
      c.output = backend_.Run(job.batch);
    } else {
      c.output = error;
    }
    ++stats_.batches;
    stats_.cells += static_cast<int64_t>(job.batch.rows.size());
    stats_.busy_us += took;
    job.done(std::move(c));
    return true;
  }

  int64_t submitted() const { return submitted_; }
  int64_t max_pending() const { return max_pending_; }
  // Each batch reports 1 us + this per row as its running time (start_us .. end_us; default 0).
  void set_us_per_row(int64_t us) { us_per_row_ = us; }

 private:
  struct Job {
    uint64_t round_id;
    CellBatch batch;
    CompletionCallback done;
  };
  std::string name_;
  cpu::CpuBackend backend_;
  std::deque<Job> queue_;
  DeviceStats stats_;
  int64_t submitted_ = 0, max_pending_ = 0;
  int64_t us_per_row_ = 0, busy_clock_us_ = 0;
};

// Records the answers of requests by id: how many each got and the last one. Thread-safe.
class Answers {
 public:
  actors::InferDone For(uint64_t id) {
    return [this, id](StatusOr<RequestResult> r) {
      std::lock_guard<std::mutex> lock(mu_);
      auto& e = entries_[id];
      ++e.count;
      e.last = std::move(r);
      ++total_;
      cv_.notify_all();
    };
  }
  int Count(uint64_t id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    return it == entries_.end() ? 0 : it->second.count;
  }
  // The last answer of `id`; INTERNAL("no answer") if none.
  StatusOr<RequestResult> Get(uint64_t id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() || !it->second.last) return Internal("no answer");
    return *it->second.last;
  }
  StatusCode Code(uint64_t id) const { return Get(id).status().code(); }
  int64_t Total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }
  // True once `n` answers in all arrived; false after `timeout`.
  bool WaitTotal(int64_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return total_ >= n; });
  }

 private:
  struct Entry {
    int count = 0;
    std::optional<StatusOr<RequestResult>> last;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> entries_;
  int64_t total_ = 0;
};

}  // namespace cellserve::actor_testing
