// LocalCluster end to end (label integration): real CPU devices, real threads, a model repository
// written to a temp folder. A burst of requests from several threads with random cancellations and
// deadlines: every request is answered exactly once, every OK answer equals the SyncExecutor's
// result bitwise, and the workers end empty. Every wait is bounded.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actor_test_util.h"
#include "actors/local_cluster.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/clock.h"
#include "runtime/model_repository.h"
#include "runtime/sync_executor.h"
#include "runtime/this_thread.h"
#include "tests/unit/common/thread_probe.h"
#include "tests/unit/common/wait_for.h"

namespace cellserve {
namespace {

using namespace actor_testing;
namespace fs = std::filesystem;

constexpr auto kWait = std::chrono::seconds(240);

int64_t NowUs() { return SteadyClock().NowMicros(); }

// A temp model repository with an lstm (hidden 64), a seq2seq and a treelstm.
class Repo {
 public:
  Repo() {
    std::string tmpl = (fs::temp_directory_path() / "cellserve_actors_e2e_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    Write(Spec("lstm", ModelKind::kLstm, 64), 21);
    Write(Spec("seq2seq", ModelKind::kSeq2Seq, 32), 22);
    Write(Spec("treelstm", ModelKind::kTreeLstm, 32), 23);
  }
  ~Repo() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }

 private:
  static ModelSpec Spec(const std::string& name, ModelKind kind, int64_t hidden) {
    ModelSpec s = SmallSpec(name, kind, hidden, 2);
    s.vocab_size = 500;
    s.max_input_tokens = 256;
    s.max_decode_len = 24;
    s.max_batch = 64;
    return s;
  }
  void Write(const ModelSpec& spec, uint64_t seed) {
    auto w = RandomWeights(spec, seed, 0.3f);
    if (!w.ok()) throw std::runtime_error(w.status().ToString());
    Status s = WriteModel(dir_, spec, *w);
    if (!s.ok()) throw std::runtime_error(s.ToString());
  }
  std::string dir_;
};

// SyncExecutor results, one request alone at a time, one backend per model.
class Reference {
 public:
  explicit Reference(const std::string& repo) {
    for (const char* name : {"lstm", "seq2seq", "treelstm"}) {
      auto m = LoadModel(repo, name);
      if (!m.ok()) throw std::runtime_error(m.status().ToString());
      models_[name] = *m;
      backends_[name] = std::make_unique<cpu::CpuBackend>();
      Status s = backends_[name]->RegisterModel(**m, kSlots);
      if (!s.ok()) throw std::runtime_error(s.ToString());
    }
  }
  const Model& model(const std::string& name) const { return *models_.at(name); }
  StatusOr<RequestResult> Run(const std::string& name, const RequestInput& in) {
    auto graph = BuildRequestGraph(models_.at(name), in);
    if (!graph.ok()) return graph.status();
    std::vector<std::unique_ptr<RequestGraph>> graphs;
    graphs.push_back(std::move(graph).value());
    SyncExecutor ex(backends_.at(name).get(), models_.at(name).get(), kSlots);
    return std::move(ex.Run(graphs)[0]);
  }

 private:
  static constexpr int32_t kSlots = 4096;
  std::map<std::string, std::shared_ptr<const Model>> models_;
  std::map<std::string, std::unique_ptr<cpu::CpuBackend>> backends_;
};

class ActorClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { repo_ = new Repo(); }
  static void TearDownTestSuite() {
    delete repo_;
    repo_ = nullptr;
  }

  LocalClusterOptions Options(int devices) const {
    LocalClusterOptions o;
    o.model_repo = repo_->dir();
    o.devices = devices;
    o.scheduler.state_slots = 1 << 16;
    return o;
  }

  static Repo* repo_;
};
Repo* ActorClusterTest::repo_ = nullptr;

TEST_F(ActorClusterTest, BurstWithCancellationsAndDeadlines) {
  auto cluster = LocalCluster::Start(Options(2));
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Reference ref(repo_->dir());
  const std::vector<std::string> names = {"lstm", "seq2seq", "treelstm"};

  enum class Kind { kPlain, kCancel, kDeadline };
  struct Sent {
    uint64_t id = 0;
    std::string model;
    RequestInput input;
    Kind kind = Kind::kPlain;
  };
  constexpr int kThreads = 4, kPerThread = 500;
  std::vector<std::vector<Sent>> sent(kThreads);
  Answers answers;

  auto client = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    std::vector<std::pair<int64_t, uint64_t>> to_cancel;  // (when, id)
    auto cancel_due = [&](bool all) {
      const int64_t now = NowUs();
      for (auto it = to_cancel.begin(); it != to_cancel.end();) {
        if (all || it->first <= now) {
          (*cluster)->Cancel(it->second);
          it = to_cancel.erase(it);
        } else {
          ++it;
        }
      }
    };
    for (int i = 0; i < kPerThread; ++i) {
      Sent s;
      s.model = names[rng() % names.size()];
      const int len = 1 + static_cast<int>(rng() % 40);
      s.input = InputFor(ref.model(s.model), Tokens(len, rng(), ref.model(s.model).spec().vocab_size));
      const int roll = static_cast<int>(rng() % 10);
      s.kind = roll == 0 ? Kind::kCancel : roll == 1 ? Kind::kDeadline : Kind::kPlain;
      int64_t deadline = 0;
      if (s.kind == Kind::kDeadline) deadline = NowUs() + 100 + static_cast<int64_t>(rng() % 300000);
      // The id is known only after Infer returns, so the callback is bound to our slot index.
      const size_t slot = sent[t].size();
      const uint64_t key = (static_cast<uint64_t>(t) << 32) | slot;
      sent[t].push_back(s);
      sent[t][slot].id = (*cluster)->Infer(s.model, s.input, deadline, answers.For(key));
      if (s.kind == Kind::kCancel)
        to_cancel.emplace_back(NowUs() + static_cast<int64_t>(rng() % 5000), sent[t][slot].id);
      cancel_due(false);
      if (rng() % 50 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    }
    // The remaining cancellations at their moments (at most 5 ms away).
    while (!to_cancel.empty()) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      cancel_due(NowUs() > to_cancel.front().first + 10000);
    }
  };
  const int64_t start = NowUs();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(client, t);
  for (auto& th : threads) th.join();
  ASSERT_TRUE(answers.WaitTotal(kThreads * kPerThread, kWait)) << "answers: " << answers.Total();
  const double burst_s = (NowUs() - start) / 1e6;

  int ok = 0, cancelled = 0, expired = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < sent[t].size(); ++i) {
      const Sent& s = sent[t][i];
      const uint64_t key = (static_cast<uint64_t>(t) << 32) | i;
      ASSERT_EQ(answers.Count(key), 1) << "request " << s.id;
      auto got = answers.Get(key);
      if (got.ok()) {
        ++ok;
        auto want = ref.Run(s.model, s.input);
        ASSERT_TRUE(want.ok());
        ASSERT_TRUE(SameResult(*got, *want)) << s.model << " request " << s.id << " differs from the SyncExecutor";
        continue;
      }
      const StatusCode code = got.status().code();
      switch (s.kind) {
        case Kind::kPlain:
          ADD_FAILURE() << s.model << " request " << s.id << ": " << got.status().ToString();
          break;
        case Kind::kCancel:
          EXPECT_EQ(code, StatusCode::kCancelled) << got.status().ToString();
          ++cancelled;
          break;
        case Kind::kDeadline:
          EXPECT_EQ(code, StatusCode::kDeadlineExceeded) << got.status().ToString();
          ++expired;
          break;
      }
    }
  }
  std::printf("burst: %d requests in %.2f s: %d OK, %d cancelled, %d deadline exceeded\n",
              kThreads * kPerThread, burst_s, ok, cancelled, expired);
  // The cancellations and deadlines took effect (about 230 and 70 here; a cluster that ignored
  // both would answer every request OK and pass the checks above).
  EXPECT_GT(cancelled, 0) << "no cancellation took effect";
  EXPECT_GT(expired, 0) << "no deadline took effect";

  // A moment for the last load/bookkeeping messages; then every worker is empty.
  ClusterReport r = (*cluster)->Report();
  ASSERT_EQ(r.devices.size(), 2u);
  for (const DeviceReport& d : r.devices) {
    EXPECT_EQ(d.requests_in, 0) << d.name;
    EXPECT_EQ(d.slots_in_use, 0) << d.name;
    EXPECT_GT(d.rounds, 0) << d.name << " did no work: the node did not spread the burst";
    EXPECT_GT(d.busy_us, 0) << d.name;
  }
  EXPECT_EQ(r.accepted + r.rejected, kThreads * kPerThread);
  EXPECT_EQ(r.completed + r.failed, r.accepted);
  EXPECT_EQ(r.completed, ok);
  (*cluster)->Stop();
  // After Stop: answered at once (on this thread), UNAVAILABLE.
  Answers after;
  (*cluster)->Infer("lstm", InputFor(ref.model("lstm"), {5, 6}), 0, after.For(1));
  EXPECT_EQ(after.Count(1), 1);
  EXPECT_EQ(after.Code(1), StatusCode::kUnavailable);
}

TEST_F(ActorClusterTest, BadInputUnknownModelAndBadOptions) {
  auto cluster = LocalCluster::Start(Options(1));
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Answers answers;
  RequestInput oov;
  oov.tokens = {5, 100000};
  (*cluster)->Infer("lstm", oov, 0, answers.For(1));
  (*cluster)->Infer("lstm", RequestInput{}, 0, answers.For(2));
  (*cluster)->Infer("nope", oov, 0, answers.For(3));
  RequestInput tree_for_lstm;
  tree_for_lstm.tree = BracketBalanced({5, 6, 7});
  tree_for_lstm.has_tree = true;
  (*cluster)->Infer("lstm", tree_for_lstm, 0, answers.For(4));
  ASSERT_TRUE(answers.WaitTotal(4, kWait));
  EXPECT_EQ(answers.Code(1), StatusCode::kInvalidArgument);
  EXPECT_EQ(answers.Code(2), StatusCode::kInvalidArgument);
  EXPECT_EQ(answers.Code(3), StatusCode::kNotFound);
  EXPECT_EQ(answers.Code(4), StatusCode::kInvalidArgument);
  ClusterReport r = (*cluster)->Report();
  EXPECT_EQ(r.rejected, 4);
  EXPECT_EQ(r.accepted, 0);

  LocalClusterOptions bad = Options(1);
  bad.models = {"lstm", "missing"};
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kNotFound);
  bad = Options(-1);  // 0 means "all" (device_factory.h)
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kInvalidArgument);
  bad = Options(1);
  bad.scheduler.lookahead = 0;
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kInvalidArgument);
  bad = Options(1);
  bad.model_repo = repo_->dir() + "/does-not-exist";
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kNotFound);
  bad = Options(1);
  bad.idle_poll_below = -1;
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kInvalidArgument);
  LocalClusterOptions always_spin = Options(1);  // 0 is valid: the pollers never sleep
  always_spin.idle_poll_below = 0;
  auto spinning = LocalCluster::Start(always_spin);
  EXPECT_TRUE(spinning.ok()) << spinning.status().ToString();
}

TEST_F(ActorClusterTest, OverloadIsResourceExhaustedAtOnce) {
  // The sim backend makes every step take 4 ms, so each long request runs for about a second
  // however fast (or loaded) the machine is: the CPU kernels finished 256 steps of the test model
  // before the quick requests arrived on a busy CI machine.
  const std::string profile = repo_->dir() + "/slow_sim_profile.json";
  {
    std::ofstream out(profile);
    out << R"({"name": "slow", "default": {"a_us": 0, "c_us": 4000}})";
  }
  LocalClusterOptions o = Options(1);
  o.models = {"lstm"};
  o.scheduler.max_requests = 2;
  o.backend = "sim";
  o.sim_profile = profile;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Reference ref(repo_->dir());
  // Two long requests fill the scheduler; the quick ones after them are refused while those run.
  std::mutex mu;
  std::vector<std::pair<int, StatusCode>> order;  // (request, code) in answer order
  Answers answers;
  auto record = [&](int i) {
    return [&, i, inner = answers.For(i)](StatusOr<RequestResult> r) {
      {
        std::lock_guard<std::mutex> lock(mu);
        order.emplace_back(i, r.status().code());
      }
      inner(std::move(r));
    };
  };
  constexpr int kQuick = 20;
  for (int i = 0; i < 2; ++i)
    (*cluster)->Infer("lstm", InputFor(ref.model("lstm"), Tokens(256, i, 500)), 0, record(i));
  // Wait (bounded) until both are admitted: request actors run concurrently, so without this a
  // quick request could be admitted before a long one.
  const int64_t give_up = NowUs() + 10'000'000;
  while ((*cluster)->Report().devices.at(0).requests_in < 2 && answers.Total() == 0 && NowUs() < give_up)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  for (int i = 2; i < 2 + kQuick; ++i)
    (*cluster)->Infer("lstm", InputFor(ref.model("lstm"), Tokens(3, i, 500)), 0, record(i));
  ASSERT_TRUE(answers.WaitTotal(2 + kQuick, kWait));
  int exhausted = 0;
  for (int i = 0; i < 2 + kQuick; ++i) {
    EXPECT_EQ(answers.Count(i), 1);
    if (answers.Code(i) == StatusCode::kResourceExhausted) ++exhausted;
    else EXPECT_TRUE(answers.Get(i).ok()) << answers.Get(i).status().ToString();
  }
  EXPECT_GE(exhausted, kQuick - 2);  // at most a couple slip in after a long one finished
  // "At once": the first refusal came before either long request finished.
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_FALSE(order.empty());
  EXPECT_EQ(order.front().second, StatusCode::kResourceExhausted);
  EXPECT_GE((*cluster)->Report().rejected, exhausted);
}

TEST_F(ActorClusterTest, StreamsDecoderTokensInOrderBeforeTheAnswer) {
  auto cluster = LocalCluster::Start(Options(1));
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  EXPECT_EQ((*cluster)->state(), ClusterState::kServing);
  std::vector<std::string> names;
  for (const ModelSpec& spec : (*cluster)->Models()) names.push_back(spec.name);
  EXPECT_EQ(names, (std::vector<std::string>{"lstm", "seq2seq", "treelstm"}));
  Reference ref(repo_->dir());
  constexpr int kN = 8;
  std::mutex mu;
  std::vector<std::vector<int32_t>> streamed(kN);
  std::vector<bool> answered_before_last_token(kN, false);
  Answers answers;
  for (int i = 0; i < kN; ++i) {
    (*cluster)->Infer("seq2seq", InputFor(ref.model("seq2seq"), Tokens(3 + i, i, 500)), 0, answers.For(i),
                      [&, i](int32_t token) {
                        std::lock_guard<std::mutex> lock(mu);
                        if (answers.Count(i) > 0) answered_before_last_token[i] = true;
                        streamed[i].push_back(token);
                      });
  }
  ASSERT_TRUE(answers.WaitTotal(kN, kWait));
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(answers.Get(i).ok()) << answers.Get(i).status().ToString();
    auto want = ref.Run("seq2seq", InputFor(ref.model("seq2seq"), Tokens(3 + i, i, 500)));
    ASSERT_TRUE(want.ok()) << want.status().ToString();
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(streamed[i], want->tokens) << "request " << i << ": the stream differs from the SyncExecutor's decoding";
    EXPECT_EQ(streamed[i], answers.Get(i)->tokens) << "request " << i;
    EXPECT_FALSE(answered_before_last_token[i]);
    EXPECT_FALSE(streamed[i].empty());
  }
  (*cluster)->Stop();
  EXPECT_EQ((*cluster)->state(), ClusterState::kStopped);
}

// A stream cancelled after its first token: what was streamed is a prefix of the request's decoding
// alone (no token from a batch-mate, none out of order), and nothing is streamed after the answer.
// A burst may finish before any cancel lands (the decodings are short, and on a busy machine the
// cancels' messages can trail every round): then the burst is sent again, up to 5 times, every
// one checked in full, until a stream was cancelled midway.
TEST_F(ActorClusterTest, AStreamCancelledMidwayIsAPrefixOfTheDecoding) {
  auto cluster = LocalCluster::Start(Options(1));
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Reference ref(repo_->dir());
  constexpr int kN = 12;
  auto burst = [&](int attempt) {
    std::mutex mu;
    std::vector<std::vector<int32_t>> streamed(kN);
    std::vector<bool> after_answer(kN, false);
    std::vector<std::atomic<uint64_t>> ids(kN);
    std::vector<std::atomic<bool>> cancel_sent(kN);
    Answers answers;
    for (int i = 0; i < kN; ++i) {
      ids[i] = 0;
      cancel_sent[i] = false;
    }
    auto input = [&](int i) { return InputFor(ref.model("seq2seq"), Tokens(5 + i, 100 + i + 1000 * attempt, 500)); };
    for (int i = 0; i < kN; ++i) {
      ids[i] = (*cluster)->Infer("seq2seq", input(i), 0, answers.For(i), [&, i](int32_t token) {
        {
          std::lock_guard<std::mutex> lock(mu);
          if (answers.Count(i) > 0) after_answer[i] = true;
          streamed[i].push_back(token);
        }
        // Cancel at the first token once the id is known (the callback may run before Infer
        // returns it).
        if (ids[i] != 0 && !cancel_sent[i].exchange(true)) (*cluster)->Cancel(ids[i]);
      });
    }
    int cancelled = 0;
    EXPECT_TRUE(answers.WaitTotal(kN, kWait));
    for (int i = 0; i < kN; ++i) {
      auto want = ref.Run("seq2seq", input(i));
      EXPECT_TRUE(want.ok()) << want.status().ToString();
      if (!want.ok()) continue;
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_FALSE(after_answer[i]) << "request " << i << ": a token after its answer";
      EXPECT_LE(streamed[i].size(), want->tokens.size()) << "request " << i;
      if (streamed[i].size() > want->tokens.size()) continue;
      EXPECT_TRUE(std::equal(streamed[i].begin(), streamed[i].end(), want->tokens.begin()))
          << "request " << i << ": the stream is not a prefix of the decoding alone";
      if (answers.Get(i).ok()) {
        EXPECT_EQ(answers.Get(i)->tokens, want->tokens) << "request " << i;
      } else {
        EXPECT_EQ(answers.Code(i), StatusCode::kCancelled) << answers.Get(i).status().ToString();
        EXPECT_LT(streamed[i].size(), want->tokens.size()) << "request " << i << ": cancelled after its last token";
        ++cancelled;
      }
    }
    std::printf("burst %d: %d of %d streams cancelled midway\n", attempt + 1, cancelled, kN);
    return cancelled;
  };
  int cancelled = 0;
  for (int attempt = 0; attempt < 5 && cancelled == 0 && !HasFailure(); ++attempt) cancelled = burst(attempt);
  EXPECT_GT(cancelled, 0) << "every request of 5 bursts finished before its cancel: the test checks nothing mid-stream";
  (*cluster)->Stop();
}

TEST_F(ActorClusterTest, SimBackendAnswersEveryRequestAtItsProfilesPace) {
  const std::string profile = repo_->dir() + "/sim_profile.json";
  {
    std::ofstream out(profile);
    out << R"({"name": "test", "default": {"a_us": 2, "c_us": 50}})";
  }
  LocalClusterOptions o = Options(4);
  o.backend = "sim";
  o.sim_profile = profile;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Reference ref(repo_->dir());
  Answers answers;
  constexpr int kN = 300;
  for (int i = 0; i < kN; ++i) {
    const std::string model = i % 3 == 0 ? "lstm" : i % 3 == 1 ? "seq2seq" : "treelstm";
    (*cluster)->Infer(model, InputFor(ref.model(model), Tokens(1 + i % 30, i, 500)), 0, answers.For(i));
  }
  ASSERT_TRUE(answers.WaitTotal(kN, kWait));
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(answers.Get(i).ok()) << i << ": " << answers.Get(i).status().ToString();
    // The sim never produces EOS: every seq2seq request decodes to its cap (24).
    if (i % 3 == 1) {
      EXPECT_EQ(answers.Get(i)->tokens.size(), 24u);
    }
  }
  ClusterReport r = (*cluster)->Report();
  ASSERT_EQ(r.devices.size(), 4u);
  int64_t busy = 0;
  for (const DeviceReport& d : r.devices) {
    EXPECT_EQ(d.name.rfind("sim:", 0), 0u) << d.name;
    busy += d.busy_us;
  }
  EXPECT_GT(busy, 0);
  o.sim_profile = repo_->dir() + "/missing.json";
  EXPECT_EQ(LocalCluster::Start(o).status().code(), StatusCode::kNotFound);
}

// --stall-after-ms: health (state()) says kStopped while a device has had a round outstanding and
// finished none for longer than the limit, and kServing again once it finishes; a device that is
// busy but keeps finishing rounds within the limit never looks stuck. The sim device's rounds
// stand in for a hung GPU's (a round of 700 ms against a limit of 250 ms) and for a busy one's;
// a limit of 0 turns the check off.
TEST_F(ActorClusterTest, HealthSaysNotReadyWhileADeviceIsStuckAndServingOnceItMoves) {
  struct Case {
    const char* name;
    int64_t round_us;
    int64_t stall_after_ms;
    int tokens;
    bool stuck;
  };
  for (const Case& c : {Case{"stuck", 700'000, 250, 1, true}, Case{"busy", 40'000, 500, 8, false},
                       Case{"off", 700'000, 0, 1, false}}) {
    SCOPED_TRACE(c.name);
    const std::string profile = repo_->dir() + "/stall_profile_" + c.name + ".json";
    {
      std::ofstream out(profile);
      out << R"({"name": "stall", "default": {"a_us": 0, "c_us": )" << c.round_us << "}}";
    }
    LocalClusterOptions o = Options(1);
    o.models = {"lstm"};
    o.backend = "sim";
    o.sim_profile = profile;
    o.stall_after_ms = c.stall_after_ms;
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
    EXPECT_EQ((*cluster)->state(), ClusterState::kServing);
    Reference ref(repo_->dir());
    Answers answers;
    (*cluster)->Infer("lstm", InputFor(ref.model("lstm"), Tokens(c.tokens, 1, 500)), 0, answers.For(0));
    int stopped = 0, serving = 0;
    std::string reason;  // StateReason while it said kStopped
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (answers.Total() == 0 && std::chrono::steady_clock::now() < give_up) {
      if ((*cluster)->state() == ClusterState::kStopped) {
        ++stopped;
        if (reason.empty()) reason = (*cluster)->StateReason();
      } else {
        ++serving;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(answers.Total(), 1);
    EXPECT_TRUE(answers.Get(0).ok()) << answers.Get(0).status().ToString();
    if (c.stuck) {
      EXPECT_GT(stopped, 0) << "never said not ready in " << serving << " checks";
      EXPECT_NE(reason.find("device sim:0 has had a round running without finishing one for "), std::string::npos)
          << reason;
    } else {
      EXPECT_EQ(stopped, 0) << "said not ready " << stopped << " of " << stopped + serving << " checks";
    }
    EXPECT_EQ((*cluster)->state(), ClusterState::kServing) << "the device finished its rounds";
    EXPECT_EQ((*cluster)->StateReason(), "");
    (*cluster)->Stop();
  }
  LocalClusterOptions bad = Options(1);
  bad.stall_after_ms = -1;
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kInvalidArgument);
}

// The same for an actor: with one CAF thread, an answer callback that blocks it (a bug: `done`
// must not block) keeps the node and worker actors from their mailboxes, so health's probe stays
// unread: state() says kStopped, naming an actor, until the thread is free again.
TEST_F(ActorClusterTest, HealthSaysNotReadyWhileTheActorsCannotRun) {
  LocalClusterOptions o = Options(1);
  o.models = {"lstm"};
  o.caf_threads = 1;
  o.stall_after_ms = 200;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  EXPECT_EQ((*cluster)->state(), ClusterState::kServing);
  Reference ref(repo_->dir());
  std::atomic<bool> blocking{false}, release{false};
  (*cluster)->Infer("lstm", InputFor(ref.model("lstm"), Tokens(3, 1, 500)), 0, [&](StatusOr<RequestResult>) {
    blocking = true;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!release && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  });
  ASSERT_TRUE(testutil::WaitFor([&] { return blocking.load(); }, std::chrono::seconds(30)));
  const bool said_stuck =
      testutil::WaitFor([&] { return (*cluster)->state() == ClusterState::kStopped; }, std::chrono::seconds(10));
  const std::string reason = (*cluster)->StateReason();
  const bool stuck = (*cluster)->Stuck();
  release = true;
  EXPECT_TRUE(said_stuck) << "the actors could not run for 10 s, and state() still said serving";
  EXPECT_NE(reason.find("actor"), std::string::npos) << reason;
  EXPECT_NE(reason.find("has not read its mailbox for"), std::string::npos) << reason;
  EXPECT_TRUE(stuck) << "Stuck() disagrees with state()";
  EXPECT_TRUE(testutil::WaitFor([&] { return (*cluster)->state() == ClusterState::kServing; }, std::chrono::seconds(10)))
      << "the actors run again, and state() still says " << ClusterStateName((*cluster)->state());
  EXPECT_FALSE((*cluster)->Stuck());
}

// Threads made and used elsewhere: a cluster started on one thread, which lives on, and reported
// on by another that lives on too, still stops (and is destroyed) from a third. CAF 0.17 pins
// every such thread to the system's logger, and the system's destructor waits for the pins; here
// nothing may be waiting on the two threads (they are released only after the stop is judged).
TEST_F(ActorClusterTest, StopsFromAnyThreadWhileTheThreadsThatStartedAndAskedItLiveOn) {
  std::promise<std::unique_ptr<LocalCluster>> started;
  std::promise<void> reported, release;
  std::shared_future<void> released = release.get_future().share();
  std::thread starter([&] {
    auto cluster = LocalCluster::Start(Options(1));
    started.set_value(cluster.ok() ? std::move(cluster).value() : nullptr);
    released.wait();
  });
  std::unique_ptr<LocalCluster> cluster = started.get_future().get();
  if (!cluster) {
    release.set_value();
    starter.join();
    FAIL() << "the cluster did not start";
  }
  std::thread reporter([&] {
    cluster->Report();
    reported.set_value();
    released.wait();
  });
  reported.get_future().wait();
  auto stopped = std::async(std::launch::async, [&] { cluster.reset(); });
  const bool in_time = stopped.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  release.set_value();  // a pinned system lets go once the threads end: the test ends either way
  stopped.wait();
  starter.join();
  reporter.join();
  EXPECT_TRUE(in_time) << "destroying the cluster waited for the threads that started it and asked it";
}

TEST_F(ActorClusterTest, StopDrainsRequestsInFlight) {
  auto cluster = LocalCluster::Start(Options(2));
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Reference ref(repo_->dir());
  Answers answers;
  constexpr int kN = 300;
  for (int i = 0; i < kN; ++i) {
    const std::string model = i % 3 == 0 ? "lstm" : i % 3 == 1 ? "seq2seq" : "treelstm";
    (*cluster)->Infer(model, InputFor(ref.model(model), Tokens(1 + i % 30, i, 500)), 0, answers.For(i));
  }
  (*cluster)->Stop();  // returns once every accepted request was answered and the actors are gone
  EXPECT_EQ(answers.Total(), kN);
  int ok = 0;
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(answers.Count(i), 1);
    if (answers.Get(i).ok()) ++ok;
  }
  EXPECT_EQ(ok, kN) << "Stop drains: requests already in finish";
  ClusterReport r = (*cluster)->Report();
  EXPECT_EQ(r.completed, kN);
  ASSERT_EQ(r.devices.size(), 2u);
  for (const DeviceReport& d : r.devices) {
    EXPECT_EQ(d.requests_in, 0);
    EXPECT_EQ(d.slots_in_use, 0);
  }
  (*cluster)->Stop();  // idempotent
  cluster->reset();    // and the destructor after Stop is fine
}

// Stop's drain is bounded by stop_grace_ms (`--stop-grace-ms`): a request still running then is
// answered UNAVAILABLE (a router retries it elsewhere) before the pod's SIGKILL could cut it off.
TEST_F(ActorClusterTest, StopAnswersWhatOutlivesItsGraceUnavailable) {
  const std::string profile = repo_->dir() + "/slow_stop_profile.json";
  {
    std::ofstream out(profile);
    out << R"({"name": "slow", "default": {"a_us": 0, "c_us": 4000}})";  // 256 steps: about a second
  }
  LocalClusterOptions o = Options(1);
  o.models = {"lstm"};
  o.backend = "sim";
  o.sim_profile = profile;
  o.stop_grace_ms = 100;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  Reference ref(repo_->dir());
  Answers answers;
  (*cluster)->Infer("lstm", InputFor(ref.model("lstm"), Tokens(256, 1, 500)), 0, answers.For(0));
  const auto t0 = std::chrono::steady_clock::now();
  (*cluster)->Stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(answers.Total(), 1);
  EXPECT_EQ(answers.Get(0).status().code(), StatusCode::kUnavailable) << answers.Get(0).status().ToString();
  EXPECT_LT(took, std::chrono::milliseconds(900)) << "Stop waited for the request, not its grace";
  LocalClusterOptions bad = o;
  bad.stop_grace_ms = -1;
  EXPECT_EQ(LocalCluster::Start(bad).status().code(), StatusCode::kInvalidArgument);
}

// --pin-threads: the caller (and so every thread it starts: CAF's) on the CPUs the device does
// not use, the device thread on its own; results as without. Runs on its own thread so that the
// test's main thread keeps every CPU.
TEST_F(ActorClusterTest, PinnedThreadsServeTheSameResults) {
  const std::vector<int> cpus = ThisThreadCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "pinning needs 2 CPUs, this test may use " << cpus.size();
  std::thread pinned_caller([&] {
    LocalClusterOptions o = Options(1);
    auto too_many = o;
    too_many.devices = static_cast<int>(cpus.size());
    auto refused = LocalCluster::PinCallerApartFromDevices(too_many);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(refused.status().message().find("--pin-threads"), std::string::npos) << refused.status().message();
    EXPECT_EQ(ThisThreadCpus(), cpus) << "a refused plan pins nothing";

    auto plan = LocalCluster::PinCallerApartFromDevices(o);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    EXPECT_EQ(plan->device_cpus, std::vector<int>{cpus.back()});
    EXPECT_EQ(ThisThreadCpus(), std::vector<int>(cpus.begin(), cpus.end() - 1));
    o.device_cpus = plan->device_cpus;
    o.idle_poll = true;  // --idle-poll: the caller's cores, the front door's, kept awake
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
    EXPECT_EQ((*cluster)->idle_poll_cpus(), ThisThreadCpus());
    for (int cpu : ThisThreadCpus())
      EXPECT_EQ(testing_threads::AllowedCpusOfThread("cs-idle-poll:" + std::to_string(cpu)), std::to_string(cpu));
    EXPECT_TRUE(testing_threads::TaskNamed("cs-idle-poll:" + std::to_string(cpus.back())).empty())
        << "the device's core is not polled";
    Reference ref(repo_->dir());
    Answers answers;
    const std::vector<std::string> names = {"lstm", "seq2seq", "treelstm"};
    for (int i = 0; i < 30; ++i) {
      const std::string& model = names[static_cast<size_t>(i) % 3];
      (*cluster)->Infer(model, InputFor(ref.model(model), Tokens(1 + i % 20, i, 500)), 0, answers.For(i));
    }
    (*cluster)->Stop();
    EXPECT_TRUE(testing_threads::ThreadGone("cs-idle-poll:" + std::to_string(cpus.front())))
        << "Stop stops the idle poll";
    for (int i = 0; i < 30; ++i) {
      const std::string& model = names[static_cast<size_t>(i) % 3];
      ASSERT_EQ(answers.Count(i), 1);
      ASSERT_TRUE(answers.Get(i).ok()) << answers.Get(i).status().ToString();
      auto want = ref.Run(model, InputFor(ref.model(model), Tokens(1 + i % 20, i, 500)));
      ASSERT_TRUE(want.ok());
      EXPECT_EQ(answers.Get(i)->logits, want->logits) << model << " request " << i;
      EXPECT_EQ(answers.Get(i)->tokens, want->tokens) << model << " request " << i;
    }
  });
  pinned_caller.join();
}

TEST_F(ActorClusterTest, EveryPolicyServesTheSameResults) {
  Reference ref(repo_->dir());
  for (const char* policy : {"sequential", "padded", "bucketed", "cellular"}) {
    LocalClusterOptions o = Options(2);
    o.scheduler.policy = *ParsePolicy(policy);
    o.scheduler.padded_wait_us = 2000;
    o.scheduler.padded_batch = 8;
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
    Answers answers;
    std::vector<std::pair<std::string, RequestInput>> sent;
    for (int i = 0; i < 60; ++i) {
      const std::string model = i % 3 == 0 ? "lstm" : i % 3 == 1 ? "seq2seq" : "treelstm";
      sent.emplace_back(model, InputFor(ref.model(model), Tokens(1 + (i * 5) % 33, 77 + i, 500)));
      (*cluster)->Infer(model, sent.back().second, 0, answers.For(i));
    }
    ASSERT_TRUE(answers.WaitTotal(60, kWait)) << policy;
    for (int i = 0; i < 60; ++i) {
      auto got = answers.Get(i);
      ASSERT_TRUE(got.ok()) << policy << ": " << got.status().ToString();
      EXPECT_TRUE(SameResult(*got, *ref.Run(sent[i].first, sent[i].second))) << policy << " request " << i;
    }
    ClusterReport r = (*cluster)->Report();
    int64_t padding = 0;
    for (const auto& d : r.devices) padding += d.padding_rows;
    if (std::string(policy) == "padded" || std::string(policy) == "bucketed") {
      EXPECT_GT(padding, 0) << policy;
    } else {
      EXPECT_EQ(padding, 0) << policy;
    }
  }
}

}  // namespace
}  // namespace cellserve
