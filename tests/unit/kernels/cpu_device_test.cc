// CpuDevice: the same results as CpuBackend run directly on the same batches; in-order completions,
// exactly one per Submit (also when destroyed with batches queued); errors confined to their batch;
// stats; the queue bound; cross-thread use. Every wait is bounded (kWait), none polls.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_device.h"
#include "test_models.h"

namespace cellserve {
namespace {

using cpu::CpuDevice;
using testing_models::Make;

constexpr auto kWait = std::chrono::seconds(5);

// Records every completion with the thread it arrived on. Thread-safe; must outlive the device.
class Completions {
 public:
  CompletionCallback Callback() {
    return [this](DeviceCompletion c) {
      std::lock_guard<std::mutex> lock(mu_);
      got_.push_back(std::move(c));
      threads_.push_back(std::this_thread::get_id());
      cv_.notify_all();
    };
  }
  // True once at least n have arrived; false after kWait.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return got_.size() >= n; });
  }
  std::vector<DeviceCompletion> got() const {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  std::vector<std::thread::id> threads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<DeviceCompletion> got_;
  std::vector<std::thread::id> threads_;
};

// A chain of dependent batches over `rows` sequences of `steps` tokens: per step each layer in
// turn, and a head batch every third step and at the end. Slots are reused every other step, so
// the results are right only if the batches run in submission order. Needs ChainSlots slots.
int32_t ChainSlots(const Model& m, int rows) { return 2 * static_cast<int32_t>(m.spec().layers) * rows; }

std::vector<CellBatch> LstmChain(const Model& m, int rows, int steps) {
  const int layers = static_cast<int>(m.spec().layers);
  auto slot = [&](int layer, int t, int r) { return ((t % 2) * layers + layer) * rows + r; };
  std::vector<CellBatch> batches;
  for (int t = 0; t < steps; ++t) {
    for (int layer = 0; layer < layers; ++layer) {
      CellBatch b{&m, m.layer_type(layer), {}};
      for (int r = 0; r < rows; ++r) {
        CellRow row;
        if (layer == 0) row.token = (7 * t + 13 * r + 1) % static_cast<int>(m.spec().vocab_size);
        else row.x_slot = slot(layer - 1, t, r);
        row.state_slot[0] = t > 0 ? slot(layer, t - 1, r) : -1;
        row.out_slot = slot(layer, t, r);
        b.rows.push_back(row);
      }
      batches.push_back(std::move(b));
    }
    if (t % 3 == 2 || t == steps - 1) {
      CellBatch head{&m, m.head_type(), {}};
      for (int r = 0; r < rows; ++r) {
        CellRow row;
        row.x_slot = slot(layers - 1, t, r);
        head.rows.push_back(row);
      }
      batches.push_back(std::move(head));
    }
  }
  return batches;
}

std::unique_ptr<CpuDevice> NewDevice(const Model& m, int32_t slots) {
  auto device = CpuDevice::Create("cpu:0", {});
  EXPECT_TRUE(device.ok()) << device.status().ToString();
  Status s = (*device)->RegisterModel(m, slots);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return std::move(device).value();
}

void ExpectSameOutput(const StatusOr<BatchOutput>& got, const StatusOr<BatchOutput>& want, size_t i) {
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  ASSERT_TRUE(got.ok()) << "batch " << i << ": " << got.status().ToString();
  // Same kernels, same order of operations: bitwise equal.
  EXPECT_EQ(got->argmax, want->argmax) << "batch " << i;
  EXPECT_EQ(got->max_value, want->max_value) << "batch " << i;
  EXPECT_EQ(got->logits, want->logits) << "batch " << i;
}

TEST(CpuDevice, CreateValidatesOptions) {
  EXPECT_EQ(CpuDevice::Create("", {}).status().code(), StatusCode::kInvalidArgument);
  auto device = CpuDevice::Create("cpu:3", {});
  ASSERT_TRUE(device.ok());
  EXPECT_EQ((*device)->name(), "cpu:3");
  EXPECT_EQ((*device)->pending(), 0);
  auto model = Make(ModelKind::kLstm, 8, 1);
  EXPECT_EQ((*device)->RegisterModel(*model, 0).code(), StatusCode::kInvalidArgument);
}

TEST(CpuDevice, MatchesBackendOnDependentBatches) {
  auto model = Make(ModelKind::kLstm, 32, 2);
  const int rows = 6;
  auto batches = LstmChain(*model, rows, 8);
  cpu::CpuBackend reference;
  ASSERT_TRUE(reference.RegisterModel(*model, ChainSlots(*model, rows)).ok());
  std::vector<StatusOr<BatchOutput>> want;
  for (const CellBatch& b : batches) want.push_back(reference.Run(b));

  Completions done;
  auto device = NewDevice(*model, ChainSlots(*model, rows));
  for (size_t i = 0; i < batches.size(); ++i) device->Submit(i, batches[i], done.Callback());
  ASSERT_TRUE(done.WaitFor(batches.size()));
  auto got = done.got();
  ASSERT_EQ(got.size(), batches.size());
  int heads = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].round_id, i);
    ExpectSameOutput(got[i].output, want[i], i);
    if (batches[i].type == model->head_type()) {
      ++heads;
      EXPECT_EQ(got[i].output->logits.size(), rows * static_cast<size_t>(model->spec().classes));
    }
  }
  EXPECT_EQ(heads, 3);  // after steps 2, 5 and 7
}

TEST(CpuDevice, CompletesInSubmissionOrderWithTheGivenRoundIds) {
  auto model = Make(ModelKind::kLstm, 16, 2);
  auto batches = LstmChain(*model, 4, 10);
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < batches.size(); ++i) ids.push_back((i * 2654435761u) % 1000003 + (i % 2) * (1ull << 40));
  Completions done;
  auto device = NewDevice(*model, ChainSlots(*model, 4));
  for (size_t i = 0; i < batches.size(); ++i) device->Submit(ids[i], batches[i], done.Callback());
  ASSERT_TRUE(done.WaitFor(batches.size()));
  auto got = done.got();
  ASSERT_EQ(got.size(), ids.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].round_id, ids[i]);
    EXPECT_TRUE(got[i].output.ok());
    EXPECT_LE(got[i].start_us, got[i].end_us);
    if (i > 0) {
      EXPECT_LE(got[i - 1].end_us, got[i].start_us) << "batches overlap";
    }
  }
}

TEST(CpuDevice, DestructorReportsEveryQueuedBatchOnce) {
  auto model = Make(ModelKind::kLstm, 64, 2);
  const int rows = 32;
  auto batches = LstmChain(*model, rows, 24);
  ASSERT_GE(batches.size(), 51u);
  batches.resize(51);
  Completions done;  // outlives the device
  {
    auto device = NewDevice(*model, ChainSlots(*model, rows));
    // Hold the worker in the first callback (a test-only breach of "never block in it") so that
    // all 50 others are queued, then let it go just as the device is destroyed.
    std::promise<void> entered, release;
    std::shared_future<void> released = release.get_future().share();
    CompletionCallback record = done.Callback();
    device->Submit(100, batches[0], [&, released, record](DeviceCompletion c) {
      entered.set_value();
      released.wait_for(kWait);
      record(std::move(c));
    });
    ASSERT_EQ(entered.get_future().wait_for(kWait), std::future_status::ready);
    for (size_t i = 1; i < batches.size(); ++i) device->Submit(100 + i, batches[i], done.Callback());
    EXPECT_EQ(device->pending(), 50);
    release.set_value();
  }  // destroyed with (nearly all of) the 50 still queued
  auto got = done.got();
  ASSERT_EQ(got.size(), 51u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].round_id, 100 + i);
    EXPECT_TRUE(got[i].output.ok()) << got[i].output.status().ToString();
  }
}

TEST(CpuDevice, MalformedBatchFailsAloneAndTheDeviceGoesOn) {
  auto model = Make(ModelKind::kLstm, 16, 2);
  auto other = Make(ModelKind::kLstm, 16, 2, /*seed=*/9);  // never registered
  const int rows = 3;
  const int32_t slots = ChainSlots(*model, rows);
  auto good = LstmChain(*model, rows, 3);  // ends with a head batch
  CellBatch bad_slot = good[0];
  bad_slot.rows[1].out_slot = slots;
  CellBatch unregistered = good[0];
  unregistered.model = other.get();
  CellBatch no_model = good[0];
  no_model.model = nullptr;
  CellBatch bad_type = good[0];
  bad_type.type = 99;

  // Bad batches interleaved with the good chain; the reference runs only the good ones.
  std::vector<CellBatch> stream;
  std::vector<StatusCode> want_code;
  for (size_t i = 0; i < good.size(); ++i) {
    stream.push_back(good[i]);
    want_code.push_back(StatusCode::kOk);
    if (i == 0) {
      for (const CellBatch* b : {&bad_slot, &unregistered, &no_model, &bad_type}) {
        stream.push_back(*b);
        want_code.push_back(StatusCode::kInvalidArgument);
      }
    }
  }
  cpu::CpuBackend reference;
  ASSERT_TRUE(reference.RegisterModel(*model, slots).ok());
  std::vector<StatusOr<BatchOutput>> want;
  for (const CellBatch& b : good) want.push_back(reference.Run(b));

  Completions done;
  auto device = NewDevice(*model, slots);
  for (size_t i = 0; i < stream.size(); ++i) device->Submit(i, stream[i], done.Callback());
  ASSERT_TRUE(done.WaitFor(stream.size()));
  auto got = done.got();
  ASSERT_EQ(got.size(), stream.size());
  size_t g = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].output.status().code(), want_code[i]) << "batch " << i;
    if (want_code[i] == StatusCode::kOk) ExpectSameOutput(got[i].output, want[g++], i);
  }
  EXPECT_EQ(g, good.size());
  EXPECT_EQ(device->stats().batches, static_cast<int64_t>(good.size()));
}

TEST(CpuDevice, StatsAddUpAndPendingReturnsToZero) {
  auto model = Make(ModelKind::kLstm, 64, 2);
  const int rows = 16;
  auto batches = LstmChain(*model, rows, 12);
  Completions done;
  auto device = NewDevice(*model, ChainSlots(*model, rows));
  const SteadyClock clock;
  const int64_t wall_start_us = clock.NowMicros();
  int64_t cells = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    cells += static_cast<int64_t>(batches[i].rows.size());
    device->Submit(i, batches[i], done.Callback());
  }
  EXPECT_GE(device->pending(), 0);
  EXPECT_LE(device->pending(), static_cast<int64_t>(batches.size()));
  ASSERT_TRUE(done.WaitFor(batches.size()));
  const int64_t wall_us = clock.NowMicros() - wall_start_us;
  // Completed (and counted) before the callback ran.
  EXPECT_EQ(device->pending(), 0);
  const DeviceStats stats = device->stats();
  EXPECT_EQ(stats.batches, static_cast<int64_t>(batches.size()));
  EXPECT_EQ(stats.cells, cells);
  EXPECT_GT(stats.busy_us, 0);
  EXPECT_LE(stats.busy_us, wall_us);
  int64_t sum_us = 0;
  for (const DeviceCompletion& c : done.got()) {
    EXPECT_GE(c.start_us, wall_start_us);
    sum_us += c.end_us - c.start_us;
  }
  EXPECT_EQ(stats.busy_us, sum_us);
}

TEST(CpuDevice, SubmitsFromAnotherThreadCallbacksOnTheDeviceThread) {
  auto model = Make(ModelKind::kLstm, 16, 2);
  auto batches = LstmChain(*model, 4, 9);
  cpu::CpuBackend reference;
  ASSERT_TRUE(reference.RegisterModel(*model, ChainSlots(*model, 4)).ok());
  std::vector<StatusOr<BatchOutput>> want;
  for (const CellBatch& b : batches) want.push_back(reference.Run(b));

  Completions done;
  auto device = NewDevice(*model, ChainSlots(*model, 4));
  std::promise<std::thread::id> submitter_id;
  std::thread submitter([&] {
    submitter_id.set_value(std::this_thread::get_id());
    for (size_t i = 0; i < batches.size(); ++i) device->Submit(i, batches[i], done.Callback());
  });
  auto id_future = submitter_id.get_future();
  ASSERT_EQ(id_future.wait_for(kWait), std::future_status::ready);
  const std::thread::id submitter_thread = id_future.get();
  const bool all_done = done.WaitFor(batches.size());
  submitter.join();
  ASSERT_TRUE(all_done);
  auto got = done.got();
  auto threads = done.threads();
  ASSERT_EQ(got.size(), batches.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].round_id, i);
    ExpectSameOutput(got[i].output, want[i], i);
    EXPECT_EQ(threads[i], threads[0]) << "one device thread";
  }
  EXPECT_NE(threads[0], submitter_thread);
  EXPECT_NE(threads[0], std::this_thread::get_id());
}

TEST(CpuDevice, RejectsSubmissionsBeyondTheQueueBound) {
  auto model = Make(ModelKind::kLstm, 8, 1);
  CellRow row;
  row.token = 1;
  row.out_slot = 0;
  const CellBatch one{model.get(), model->layer_type(0), {row}};

  Completions done;
  auto device = NewDevice(*model, 1);
  // Hold the worker inside the first callback (a test-only breach of "never block in it") so
  // that the queue fills deterministically.
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  device->Submit(0, one, [&, released](DeviceCompletion c) {
    entered.set_value();
    released.wait_for(kWait);
    done.Callback()(std::move(c));
  });
  ASSERT_EQ(entered.get_future().wait_for(kWait), std::future_status::ready);
  for (int64_t i = 1; i <= CpuDevice::kMaxQueued; ++i) device->Submit(i, one, done.Callback());
  EXPECT_EQ(device->pending(), CpuDevice::kMaxQueued);  // the first one has completed
  // One too many: answered at once, on this thread, inside Submit.
  std::thread::id rejected_on;
  StatusCode rejected_code = StatusCode::kOk;
  device->Submit(7777, one, [&](DeviceCompletion c) {
    rejected_on = std::this_thread::get_id();
    rejected_code = c.output.status().code();
    EXPECT_EQ(c.round_id, 7777u);
    EXPECT_EQ(c.start_us, c.end_us);
  });
  EXPECT_EQ(rejected_on, std::this_thread::get_id());
  EXPECT_EQ(rejected_code, StatusCode::kResourceExhausted);
  EXPECT_EQ(device->pending(), CpuDevice::kMaxQueued);
  release.set_value();
  ASSERT_TRUE(done.WaitFor(CpuDevice::kMaxQueued + 1));
  auto got = done.got();
  ASSERT_EQ(got.size(), static_cast<size_t>(CpuDevice::kMaxQueued + 1));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].round_id, i);
    EXPECT_TRUE(got[i].output.ok());
  }
  EXPECT_EQ(device->pending(), 0);
  EXPECT_EQ(device->stats().batches, CpuDevice::kMaxQueued + 1);
}

TEST(CpuDevice, RegistersModelsInStreamOrderFromAnyThread) {
  auto a = Make(ModelKind::kLstm, 16, 1, 3);
  auto b = Make(ModelKind::kTreeLstm, 16, 1, 5);
  auto c = Make(ModelKind::kLstm, 8, 1, 7);
  Completions done;
  auto device = NewDevice(*a, ChainSlots(*a, 2));
  auto chain_a = LstmChain(*a, 2, 4);
  for (size_t i = 0; i < chain_a.size(); ++i) device->Submit(i, chain_a[i], done.Callback());
  // Posted behind chain_a and waited for: returns once registered.
  ASSERT_TRUE(device->RegisterModel(*b, 4).ok());
  CellRow leaf;
  leaf.token = 3;
  leaf.out_slot = 2;
  device->Submit(100, CellBatch{b.get(), b->leaf_type(), {leaf}}, done.Callback());
  // From a callback, i.e. on the device thread itself: runs directly.
  std::promise<Status> registered;
  device->Submit(101, CellBatch{b.get(), b->leaf_type(), {leaf}}, [&](DeviceCompletion done_c) {
    EXPECT_TRUE(done_c.output.ok());
    registered.set_value(device->RegisterModel(*c, 1));
  });
  auto registered_future = registered.get_future();
  ASSERT_EQ(registered_future.wait_for(kWait), std::future_status::ready);
  ASSERT_TRUE(registered_future.get().ok());
  CellRow c_row;
  c_row.token = 4;
  c_row.out_slot = 0;
  device->Submit(102, CellBatch{c.get(), c->layer_type(0), {c_row}}, done.Callback());
  ASSERT_TRUE(done.WaitFor(chain_a.size() + 2));
  for (const DeviceCompletion& got : done.got())
    EXPECT_TRUE(got.output.ok()) << got.round_id << ": " << got.output.status().ToString();
}

}  // namespace
}  // namespace cellserve
