// The whole serving path on a GPU (label gpu; skips where no GPU is usable): a LocalCluster with
// --backend cuda (the dlopen'ed plugin, a worker per GPU, cellular batching) answers a burst of
// lstm and seq2seq requests like a LocalCluster on the CPU: labels and decoded tokens equal,
// logits and step scores within 1e-4 relative (chains of cells, fp32 on both).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <random>
#include <vector>

#include "actors/local_cluster.h"
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

// Runs every (model, input) on one cluster and returns the answers in order.
std::vector<StatusOr<RequestResult>> RunAll(LocalCluster& cluster,
                                           const std::vector<std::pair<std::string, RequestInput>>& requests) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<StatusOr<RequestResult>> answers(requests.size(), Internal("no answer"));
  size_t answered = 0;
  for (size_t i = 0; i < requests.size(); ++i)
    cluster.Infer(requests[i].first, requests[i].second, 0, [&, i](StatusOr<RequestResult> r) {
      std::lock_guard<std::mutex> lock(mu);
      answers[i] = std::move(r);
      ++answered;
      cv.notify_all();
    });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::seconds(120), [&] { return answered == requests.size(); });
  EXPECT_EQ(answered, requests.size());
  return answers;
}

TEST(CudaClusterTest, BurstAnswersEqualTheCpuCluster) {
  testutil::TempModelRepo repo("cellserve_cuda_cluster");
  ModelSpec lstm = actor_testing::SmallSpec("lstm", ModelKind::kLstm, 128, 2);
  ModelSpec s2s = actor_testing::SmallSpec("seq2seq", ModelKind::kSeq2Seq, 64, 2);
  for (ModelSpec* s : {&lstm, &s2s}) {
    s->vocab_size = 500;
    s->max_input_tokens = 256;
    s->max_batch = 128;
  }
  repo.Write(lstm, 31);
  repo.Write(s2s, 32);

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

  std::mt19937 rng(3);
  std::vector<std::pair<std::string, RequestInput>> requests;
  for (int i = 0; i < 400; ++i) {
    RequestInput in;
    const int len = 1 + static_cast<int>(rng() % 60);
    for (int t = 0; t < len; ++t) in.tokens.push_back(static_cast<int32_t>(rng() % 500));
    requests.emplace_back(i % 2 ? "seq2seq" : "lstm", in);
  }
  auto want = RunAll(**cpu, requests);
  auto got = RunAll(**gpu, requests);
  int diverged = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(want[i].ok()) << want[i].status().ToString();
    ASSERT_TRUE(got[i].ok()) << "request " << i << ": " << got[i].status().ToString();
    if (requests[i].first == "lstm") {
      EXPECT_LT(RelError(got[i]->logits, want[i]->logits), 1e-4) << "request " << i;
      EXPECT_EQ(got[i]->label, want[i]->label) << "request " << i;
    } else if (got[i]->tokens != want[i]->tokens) {
      ++diverged;  // greedy decoding can part ways at a near tie; counted, and bounded below
    } else {
      EXPECT_LT(RelError(got[i]->scores, want[i]->scores), 1e-4) << "request " << i;
    }
  }
  EXPECT_LE(diverged, 4) << "of 200 seq2seq requests decoded differently";
}

}  // namespace
}  // namespace cellserve
