// The sim device and its profiles: costs as the profile says (a*rows + c, one batch after the
// other), completions in submission order with exactly one report each, head outputs that never
// end a decode, clear errors for bad profiles and bad batches.
#include "kernels/sim/sim_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "../common/random_model.h"

namespace cellserve::sim {
namespace {

SimProfile Profile(double a_us, double c_us) {
  SimProfile p;
  p.fallback = {a_us, c_us};
  return p;
}

ModelSpec Spec(ModelKind kind) {
  ModelSpec s;
  s.name = "m";
  s.kind = kind;
  s.vocab_size = 50;
  s.embed_dim = 8;
  s.hidden = 8;
  s.classes = kind == ModelKind::kSeq2Seq ? 0 : 3;
  s.target_vocab_size = kind == ModelKind::kSeq2Seq ? 5 : 0;
  s.eos_id = 2;
  s.max_batch = 16;
  return s;
}

TEST(SimProfile, ParsesAndComputesCosts) {
  auto p = SimProfile::Parse(R"({"name": "x", "description": "test",
      "costs": {"lstm": {"a_us": 10, "c_us": 100}, "head": {"a_us": 0.5, "c_us": 2}},
      "default": {"a_us": 1, "c_us": 1}})");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "x");
  EXPECT_EQ(p->CostMicros(CellOp::kLstm, 4), 140);
  EXPECT_EQ(p->CostMicros(CellOp::kHeadArgmax, 4), 4);
  EXPECT_EQ(p->CostMicros(CellOp::kTreeInternal, 4), 5);  // default
  EXPECT_EQ(Profile(0, 0).CostMicros(CellOp::kLstm, 1), 1);  // at least 1 us
}

TEST(SimProfile, BadProfilesAreClearErrors) {
  auto code = [](const char* text) { return SimProfile::Parse(text).status(); };
  EXPECT_NE(code("nope").message().find("JSON object"), std::string::npos);
  EXPECT_NE(code(R"({"costs": {}})").message().find("default"), std::string::npos);
  EXPECT_NE(code(R"({"default": {"a_us": -1, "c_us": 0}})").message().find("[0, 1e7]"), std::string::npos);
  // Huge costs overflowed int64 (1e300 became 1 us) or the timer's nanosecond waits.
  EXPECT_NE(code(R"({"default": {"a_us": 1e300, "c_us": 0}})").message().find("[0, 1e7]"), std::string::npos);
  EXPECT_NE(code(R"({"default": {"a_us": 1, "c_us": 1e8}})").message().find("c_us"), std::string::npos);
  auto slowest = SimProfile::Parse(R"({"default": {"a_us": 1e7, "c_us": 1e7}})");
  ASSERT_TRUE(slowest.ok()) << slowest.status().ToString();
  EXPECT_EQ(slowest->CostMicros(CellOp::kLstm, 1), 20000000);
  EXPECT_EQ(slowest->CostMicros(CellOp::kLstm, int64_t{1} << 40), 1000000000000) << "saturates, never wraps";
  EXPECT_NE(code(R"({"default": {"a_us": 1}})").message().find("c_us"), std::string::npos);
  EXPECT_NE(code(R"({"default": {"a_us": 1, "c_us": 1}, "costs": {"gru": {"a_us": 1, "c_us": 1}}})")
                .message()
                .find("gru"),
            std::string::npos);
  EXPECT_EQ(SimProfile::Load("/nonexistent/profile.json").status().code(), StatusCode::kNotFound);
}

// Collects completions in order.
struct Sink {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<DeviceCompletion> done;
  CompletionCallback Callback() {
    return [this](DeviceCompletion c) {
      std::lock_guard<std::mutex> lock(mu);
      done.push_back(std::move(c));
      cv.notify_all();
    };
  }
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), [&] { return done.size() >= n; });
  }
};

CellBatch Batch(const Model& model, int type, int rows) {
  CellBatch b{&model, type, {}};
  for (int r = 0; r < rows; ++r) {
    CellRow row;
    row.token = 1;
    row.x_slot = 0;
    row.out_slot = r;
    b.rows.push_back(row);
  }
  return b;
}

TEST(SimDevice, BatchesTakeTheProfilesTimeOneAfterAnother) {
  auto model = testutil::RandomModel(Spec(ModelKind::kLstm), 1);
  auto timer = std::make_shared<SimTimer>();
  auto device = SimDevice::Create("sim:0", Profile(100, 1000), timer);  // 10 rows: 2 ms
  ASSERT_TRUE(device.ok());
  ASSERT_TRUE((*device)->RegisterModel(*model, 64).ok());
  Sink sink;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t id = 1; id <= 3; ++id) (*device)->Submit(id, Batch(*model, model->layer_type(0), 10), sink.Callback());
  ASSERT_TRUE(sink.WaitFor(3));
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, std::chrono::microseconds(6000));
  EXPECT_LT(elapsed, std::chrono::milliseconds(500));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(sink.done[i].round_id, i + 1);
    ASSERT_TRUE(sink.done[i].output.ok());
    EXPECT_EQ(sink.done[i].end_us - sink.done[i].start_us, 2000);
    if (i > 0) {
      EXPECT_GE(sink.done[i].start_us, sink.done[i - 1].end_us) << "one batch after the other";
    }
  }
  EXPECT_EQ((*device)->stats().batches, 3);
  EXPECT_EQ((*device)->stats().cells, 30);
  EXPECT_EQ((*device)->stats().busy_us, 6000);
  EXPECT_EQ((*device)->pending(), 0);
}

TEST(SimDevice, HeadsNeverEndADecodeAndClassifiersGetLogits) {
  auto timer = std::make_shared<SimTimer>();
  auto s2s = testutil::RandomModel(Spec(ModelKind::kSeq2Seq), 2);
  auto cls = testutil::RandomModel(Spec(ModelKind::kLstm), 3);
  auto device = SimDevice::Create("sim:0", Profile(1, 1), timer);
  ASSERT_TRUE(device.ok());
  ASSERT_TRUE((*device)->RegisterModel(*s2s, 64).ok());
  ASSERT_TRUE((*device)->RegisterModel(*cls, 64).ok());
  Sink sink;
  (*device)->Submit(1, Batch(*s2s, s2s->head_type(), 16), sink.Callback());
  (*device)->Submit(2, Batch(*cls, cls->head_type(), 4), sink.Callback());
  ASSERT_TRUE(sink.WaitFor(2));
  ASSERT_TRUE(sink.done[0].output.ok());
  ASSERT_EQ(sink.done[0].output->argmax.size(), 16u);
  for (int32_t t : sink.done[0].output->argmax) {
    EXPECT_NE(t, 2) << "EOS";
    EXPECT_GE(t, 0);
    EXPECT_LT(t, 5);
  }
  ASSERT_TRUE(sink.done[1].output.ok());
  EXPECT_EQ(sink.done[1].output->logits.size(), 12u);
}

TEST(SimDevice, BadBatchesFailAndEveryBatchIsReportedOnce) {
  auto model = testutil::RandomModel(Spec(ModelKind::kLstm), 4);
  auto other = testutil::RandomModel(Spec(ModelKind::kLstm), 5);
  EXPECT_EQ(SimDevice::Create("", Profile(1, 1), std::make_shared<SimTimer>()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(SimDevice::Create("sim:0", Profile(1, 1), nullptr).status().code(), StatusCode::kInvalidArgument);
  auto timer = std::make_shared<SimTimer>();
  Sink sink;
  {
    auto device = SimDevice::Create("sim:0", Profile(50, 50), timer);
    ASSERT_TRUE(device.ok());
    ASSERT_TRUE((*device)->RegisterModel(*model, 8).ok());
    (*device)->Submit(1, Batch(*other, 0, 1), sink.Callback());     // not registered
    (*device)->Submit(2, Batch(*model, 0, 17), sink.Callback());    // over max_batch
    (*device)->Submit(3, Batch(*model, 0, 0), sink.Callback());     // empty
    for (uint64_t id = 4; id < 24; ++id) (*device)->Submit(id, Batch(*model, 0, 2), sink.Callback());
  }  // the destructor waits for every report
  ASSERT_EQ(sink.done.size(), 23u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(sink.done[i].output.status().code(), StatusCode::kInvalidArgument);
  for (size_t i = 0; i < sink.done.size(); ++i) EXPECT_EQ(sink.done[i].round_id, i + 1);
}

TEST(SimTimer, ManyDevicesShareOneTimer) {
  auto model = testutil::RandomModel(Spec(ModelKind::kLstm), 6);
  auto timer = std::make_shared<SimTimer>();
  std::vector<std::unique_ptr<SimDevice>> devices;
  std::vector<Sink> sinks(16);
  for (int d = 0; d < 16; ++d) {
    devices.push_back(SimDevice::Create("sim:" + std::to_string(d), Profile(10, 100), timer).value());
    ASSERT_TRUE(devices.back()->RegisterModel(*model, 8).ok());
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i)
    for (int d = 0; d < 16; ++d) devices[d]->Submit(i + 1, Batch(*model, 0, 10), sinks[d].Callback());
  for (auto& s : sinks) ASSERT_TRUE(s.WaitFor(10));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // 10 batches of 200 us per device, each device on its own clock (a shared timer does not make
  // one device wait for another's batches): every device is busy exactly 2 ms, in order.
  for (int d = 0; d < 16; ++d) {
    const auto& s = sinks[d];
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(s.done[i].round_id, i + 1);
    for (size_t i = 1; i < 10; ++i) EXPECT_GE(s.done[i].start_us, s.done[i - 1].end_us);
    EXPECT_GE(s.done[9].end_us - s.done[0].start_us, 2000);
    EXPECT_EQ(devices[d]->stats().busy_us, 2000);
  }
}

}  // namespace
}  // namespace cellserve::sim
