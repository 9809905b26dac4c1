// A device worker that ends on its own, end to end through a LocalCluster: its device (the
// throwing plugin, tests/unit/actors/throwing_cuda_plugin.cc) throws from Submit, as one out of
// memory might. The request on it is answered UNAVAILABLE (by the worker as it ends, or by the
// node for one the worker never read), the owner is told once, health says
// stopped, new requests are answered at once, and Stop returns. Before, the request waited for
// good and the cluster went on saying "serving". Runs in a death test's child: the plugin is
// loaded once per process.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "actors/local_cluster.h"
#include "tests/unit/actors/actor_test_util.h"
#include "tests/unit/common/temp_model_repo.h"
#include "tests/unit/common/wait_for.h"

namespace cellserve {
namespace {

// Returns what went wrong, or "" when everything held.
std::string AFailingWorker() {
  setenv("CELLSERVE_CUDA_PLUGIN", THROWING_CUDA_PLUGIN_PATH, 1);
  testutil::TempModelRepo repo("cellserve_actor_failure");
  repo.Write(actor_testing::SmallSpec("lstm", ModelKind::kLstm), 5);
  actor_testing::Answers answers;  // outlives the cluster, whose callbacks it holds
  std::mutex mu;
  std::vector<std::string> failures;
  LocalClusterOptions o;
  o.model_repo = repo.dir();
  o.backend = "cuda";
  o.devices = 1;
  o.on_actor_failure = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    failures.push_back(why);
  };
  auto cluster = LocalCluster::Start(o);
  if (!cluster.ok()) return "start: " + cluster.status().ToString();
  RequestInput in;
  in.tokens = {5, 6, 7};
  (*cluster)->Infer("lstm", in, 0, answers.For(1));
  if (!answers.WaitTotal(1, std::chrono::seconds(20))) return "the request on the failed worker was never answered";
  const Status first = answers.Get(1).status();
  if (first.code() != StatusCode::kUnavailable || first.message().find("device worker") == std::string::npos)
    return "first answer: " + first.ToString();
  if (!testutil::WaitFor(
          [&] {
            std::lock_guard<std::mutex> lock(mu);
            return !failures.empty();
          },
          std::chrono::seconds(10)))
    return "the owner was not told";
  if ((*cluster)->state() != ClusterState::kStopped)
    return std::string("state: ") + ClusterStateName((*cluster)->state());
  (*cluster)->Infer("lstm", in, 0, answers.For(2));
  if (!answers.WaitTotal(2, std::chrono::milliseconds(500))) return "a new request was not answered at once";
  const Status second = answers.Get(2).status();
  if (second.code() != StatusCode::kUnavailable || second.message().find("failed") == std::string::npos)
    return "second answer: " + second.ToString();
  const auto t0 = std::chrono::steady_clock::now();
  (*cluster)->Stop();
  if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) return "Stop took more than 10 s";
  if (answers.Count(1) != 1 || answers.Count(2) != 1) return "a request was answered more than once";
  std::lock_guard<std::mutex> lock(mu);
  if (failures.size() != 1) return "told " + std::to_string(failures.size()) + " times";
  return "";
}

TEST(ActorFailureDeathTest, AWorkerWhoseDeviceThrowsFailsTheClusterCleanly) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const std::string wrong = AFailingWorker();  // its repository is removed before the exit
        if (!wrong.empty()) std::fprintf(stderr, "wrong: %s\n", wrong.c_str());
        std::_Exit(wrong.empty() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace cellserve
