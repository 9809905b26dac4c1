// The whole serving path on a GPU (label gpu; skips where no GPU is usable; the fake CUDA runtime
// runs it everywhere as fakecuda.serving_path): a LocalCluster with --backend cuda (the dlopen'ed
// plugin, a worker per GPU, cellular batching) answers a burst of lstm, seq2seq and treelstm
// requests, some cancelled and some past their deadlines mid-flight, like a LocalCluster on the
// CPU: labels and decoded tokens equal, logits and step scores within 1e-4 relative (chains of
// cells, fp32 on both); a decoding that parts at a near tie agrees up to and at that step.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "actors/local_cluster.h"
#include "runtime/clock.h"
#include "runtime/text.h"
#include "tests/gpu/gpu_required.h"
#include "tests/unit/actors/actor_test_util.h"
#include "tests/unit/common/temp_model_repo.h"

namespace cellserve {
namespace {

double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return 1e9;
  double diff = 0, scale = 1e-6;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return diff / scale;
}

struct Request {
  std::string model;
  RequestInput input;
  enum class Fate { kPlain, kCancelled, kDeadline } fate = Fate::kPlain;
  int64_t deadline_after_us = 0;  // kDeadline: from when it is sent
};

// Runs every request on one cluster and returns the answers in order. With `fates`, a kCancelled
// request is cancelled as soon as it is sent and a kDeadline one gets its deadline; without, every
// request runs plainly (the reference).
std::vector<StatusOr<RequestResult>> RunAll(LocalCluster& cluster, const std::vector<Request>& requests, bool fates) {
  // Shared with the callbacks: one that comes after the wait below gave up must not write freed
  // memory (and a late second answer is then still counted, by the next check or the next run).
  struct Seen {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<StatusOr<RequestResult>> answers;
    std::vector<int> times;
    size_t answered = 0;
  };
  auto seen = std::make_shared<Seen>();
  seen->answers.assign(requests.size(), Internal("no answer"));
  seen->times.assign(requests.size(), 0);
  const SteadyClock clock;
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    const bool deadline = fates && r.fate == Request::Fate::kDeadline;
    const uint64_t id = cluster.Infer(r.model, r.input, deadline ? clock.NowMicros() + r.deadline_after_us : 0,
                                      [seen, i](StatusOr<RequestResult> result) {
                                        std::lock_guard<std::mutex> lock(seen->mu);
                                        seen->answers[i] = std::move(result);
                                        ++seen->times[i];
                                        ++seen->answered;
                                        seen->cv.notify_all();
                                      });
    if (fates && r.fate == Request::Fate::kCancelled) cluster.Cancel(id);
  }
  std::unique_lock<std::mutex> lock(seen->mu);
  seen->cv.wait_for(lock, std::chrono::seconds(120), [&] { return seen->answered >= requests.size(); });
  EXPECT_EQ(seen->answered, requests.size());
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(seen->times[i], 1) << "request " << i;
  return seen->answers;
}

// A seq2seq answer against the CPU's. Greedy decoding may part ways at a near tie (the two
// backends sum in different orders); then the tokens must agree up to that step and every score up
// to and including it (at a near tie both winners' logits are the tied value). Returns whether the
// decodings parted.
bool CheckDecoding(const RequestResult& got, const RequestResult& want, size_t i) {
  size_t split = 0;
  while (split < got.tokens.size() && split < want.tokens.size() && got.tokens[split] == want.tokens[split]) ++split;
  const bool parted = got.tokens != want.tokens;
  const size_t compared = parted ? split + 1 : want.tokens.size();
  EXPECT_GE(got.scores.size(), compared) << "request " << i;
  EXPECT_GE(want.scores.size(), compared) << "request " << i;
  if (got.scores.size() < compared || want.scores.size() < compared) return parted;
  const std::vector<float> ours(got.scores.begin(), got.scores.begin() + static_cast<std::ptrdiff_t>(compared));
  const std::vector<float> theirs(want.scores.begin(), want.scores.begin() + static_cast<std::ptrdiff_t>(compared));
  EXPECT_LT(RelError(ours, theirs), 1e-4) << "request " << i << (parted ? " (up to the step where it parted, " : " (")
                                         << compared << " steps)";
  return parted;
}

TEST(CudaClusterTest, BurstAnswersEqualTheCpuCluster) {
  testutil::TempModelRepo repo("cellserve_cuda_cluster");
  ModelSpec lstm = actor_testing::SmallSpec("lstm", ModelKind::kLstm, 128, 2);
  ModelSpec s2s = actor_testing::SmallSpec("seq2seq", ModelKind::kSeq2Seq, 64, 2);
  ModelSpec tree = actor_testing::SmallSpec("treelstm", ModelKind::kTreeLstm, 64, 1);
  for (ModelSpec* s : {&lstm, &s2s, &tree}) {
    s->vocab_size = 500;
    s->max_input_tokens = 256;
    s->max_batch = 128;
  }
  repo.Write(lstm, 31);
  repo.Write(s2s, 32);
  repo.Write(tree, 33);

  LocalClusterOptions options;
  options.model_repo = repo.dir();
  options.backend = "cuda";
  options.devices = 0;  // every GPU
  auto gpu = LocalCluster::Start(options);
  if (!gpu.ok() && gpu.status().code() == StatusCode::kUnavailable) SKIP_UNLESS_GPU_REQUIRED(gpu.status().ToString());
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  options.backend = "cpu";
  options.devices = 1;
  auto cpu = LocalCluster::Start(options);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();

  // 600 requests, a third of each kind; on the GPU one in ten is cancelled at once and one in ten
  // has a deadline from 0.1 to 30 ms away: their slots are freed while their batch-mates' rounds
  // are in flight, and the batch-mates' answers must not change.
  std::mt19937 rng(3);
  const char* kinds[] = {"lstm", "seq2seq", "treelstm"};
  std::vector<Request> requests;
  for (int i = 0; i < 600; ++i) {
    Request r;
    r.model = kinds[i % 3];
    const int len = 1 + static_cast<int>(rng() % 60);
    std::vector<int32_t> tokens;
    for (int t = 0; t < len; ++t) tokens.push_back(static_cast<int32_t>(rng() % 500));
    if (r.model == std::string("treelstm")) {
      r.input.tree = BracketBalanced(tokens);
      r.input.has_tree = true;
    } else {
      r.input.tokens = tokens;
    }
    const int roll = static_cast<int>(rng() % 10);
    if (roll == 0) r.fate = Request::Fate::kCancelled;
    if (roll == 1) {
      r.fate = Request::Fate::kDeadline;
      r.deadline_after_us = 100 + static_cast<int64_t>(rng() % 30000);
    }
    requests.push_back(std::move(r));
  }
  auto want = RunAll(**cpu, requests, false);
  auto got = RunAll(**gpu, requests, true);
  int parted = 0, seq2seq = 0, ended_early = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    ASSERT_TRUE(want[i].ok()) << want[i].status().ToString();
    if (!got[i].ok()) {
      const StatusCode code = got[i].status().code();
      EXPECT_TRUE((r.fate == Request::Fate::kCancelled && code == StatusCode::kCancelled) ||
                  (r.fate == Request::Fate::kDeadline && code == StatusCode::kDeadlineExceeded))
          << "request " << i << ": " << got[i].status().ToString();
      ++ended_early;
      continue;
    }
    if (r.model == "seq2seq") {
      ++seq2seq;
      parted += CheckDecoding(*got[i], *want[i], i);
    } else {
      EXPECT_LT(RelError(got[i]->logits, want[i]->logits), 1e-4) << r.model << " request " << i;
      EXPECT_EQ(got[i]->label, want[i]->label) << r.model << " request " << i;
    }
  }
  std::printf("%zu requests: %d cancelled or expired; %d of %d seq2seq decodings parted at a near tie\n",
              requests.size(), ended_early, parted, seq2seq);
  EXPECT_GT(ended_early, 0) << "no request was cancelled or expired: the test checks less than it says";
  EXPECT_LE(parted * 50, seq2seq) << parted << " of " << seq2seq << " seq2seq requests decoded differently";
}

}  // namespace
}  // namespace cellserve
