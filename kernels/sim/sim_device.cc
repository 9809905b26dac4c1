#include "kernels/sim/sim_device.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "runtime/this_thread.h"

namespace cellserve::sim {

SimTimer::SimTimer() : thread_([this] { Loop(); }) {}

SimTimer::~SimTimer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Status SimTimer::Pin(int cpu) { return PinThread(thread_, {cpu}); }

void SimTimer::Schedule(int64_t due_us, std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    items_.push(Item{due_us, next_seq_++, std::move(fn)});
  }
  cv_.notify_one();
}

void SimTimer::Loop() {
  NameThisThread("cs-sim-timer");
  SteadyClock clock;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (items_.empty()) {
      if (stopping_) return;
      cv_.wait(lock);
      continue;
    }
    const int64_t now = clock.NowMicros();
    const int64_t due = items_.top().due_us;
    if (due > now && !stopping_) {
      cv_.wait_for(lock, std::chrono::microseconds(due - now));
      continue;
    }
    std::function<void()> fn = std::move(const_cast<Item&>(items_.top()).fn);
    items_.pop();
    lock.unlock();
    fn();
    lock.lock();
  }
}

StatusOr<std::unique_ptr<SimDevice>> SimDevice::Create(std::string name, SimProfile profile,
                                                       std::shared_ptr<SimTimer> timer) {
  if (name.empty()) return InvalidArgument("a device needs a name");
  if (!timer) return InvalidArgument("a sim device needs a timer");
  return std::unique_ptr<SimDevice>(new SimDevice(std::move(name), std::move(profile), std::move(timer)));
}

SimDevice::SimDevice(std::string name, SimProfile profile, std::shared_ptr<SimTimer> timer)
    : name_(std::move(name)), profile_(std::move(profile)), timer_(std::move(timer)) {}

SimDevice::~SimDevice() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return unreported_ == 0; });
}

Status SimDevice::RegisterModel(const Model& model, int32_t slots) {
  if (slots <= 0) return InvalidArgument("a model needs at least one state slot");
  std::lock_guard<std::mutex> lock(mu_);
  models_.insert(&model);
  return OkStatus();
}

Status SimDevice::Check(const CellBatch& batch) const {
  if (!batch.model) return InvalidArgument("batch has no model");
  if (!models_.count(batch.model))
    return InvalidArgument("model '" + batch.model->spec().name + "' is not registered on " + name_);
  if (batch.type < 0 || batch.type >= static_cast<int32_t>(batch.model->cell_types().size()))
    return InvalidArgument("cell type " + std::to_string(batch.type) + " does not exist");
  const CellType& t = batch.model->cell_type(batch.type);
  if (batch.rows.empty()) return InvalidArgument("empty batch");
  if (static_cast<int64_t>(batch.rows.size()) > t.max_batch)
    return InvalidArgument("batch of " + std::to_string(batch.rows.size()) + " exceeds max_batch " +
                           std::to_string(t.max_batch));
  return OkStatus();
}

void SimDevice::Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) {
  DeviceCompletion completion;
  completion.round_id = round_id;
  int64_t cost = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Status status = Check(batch);
    if (!status.ok()) {
      completion.output = status;
    } else {
      const CellType& t = batch.model->cell_type(batch.type);
      const int64_t rows = static_cast<int64_t>(batch.rows.size());
      cost = profile_.CostMicros(t.op, rows);
      BatchOutput out;
      if (t.op == CellOp::kHeadLogits || t.op == CellOp::kHeadArgmax) {
        const int64_t eos = batch.model->spec().eos_id;
        out.argmax.resize(rows);
        out.max_value.assign(rows, 0.0f);
        for (int64_t r = 0; r < rows; ++r) {
          int64_t token = (3 + r) % std::max<int64_t>(t.outputs, 1);
          if (t.op == CellOp::kHeadArgmax && token == eos) token = (token + 1) % std::max<int64_t>(t.outputs, 1);
          out.argmax[r] = static_cast<int32_t>(token);
        }
        if (t.op == CellOp::kHeadLogits) out.logits.assign(static_cast<size_t>(rows * t.outputs), 0.0f);
      }
      completion.output = std::move(out);
      ++stats_.batches;
      stats_.cells += rows;
      stats_.busy_us += cost;
    }
    const int64_t now = clock_.NowMicros();
    completion.start_us = std::max(now, busy_until_us_);
    completion.end_us = completion.start_us + cost;
    busy_until_us_ = completion.end_us;
    ++pending_;
    ++unreported_;
  }
  const int64_t due = completion.end_us;
  timer_->Schedule(due, [this, completion = std::move(completion), done = std::move(done)]() mutable {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_;  // completed: pending() no longer counts it when `done` runs (as CpuDevice)
    }
    if (done) done(std::move(completion));
    std::lock_guard<std::mutex> lock(mu_);
    if (--unreported_ == 0) idle_.notify_all();
  });
}

int64_t SimDevice::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

DeviceStats SimDevice::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace cellserve::sim
