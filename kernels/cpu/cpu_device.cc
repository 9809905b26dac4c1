#include "kernels/cpu/cpu_device.h"

#include <future>
#include <system_error>
#include <utility>

#include "runtime/this_thread.h"

namespace cellserve::cpu {

StatusOr<std::unique_ptr<CpuDevice>> CpuDevice::Create(std::string name, CpuBackendOptions options, int cpu) {
  if (name.empty()) return InvalidArgument("a device needs a name");
  std::unique_ptr<CpuDevice> device(new CpuDevice(std::move(name), options));
  try {
    CpuDevice* d = device.get();
    device->worker_ = std::thread([d] { d->Loop(); });
  } catch (const std::system_error& e) {
    return Unavailable("cannot start the thread of device '" + device->name_ + "': " + e.what());
  }
  if (cpu >= 0) {
    Status pinned = PinThread(device->worker_, {cpu});
    if (!pinned.ok()) return Status(pinned.code(), "device '" + device->name_ + "': " + pinned.message());
  }
  return StatusOr<std::unique_ptr<CpuDevice>>(std::move(device));
}

CpuDevice::CpuDevice(std::string name, CpuBackendOptions options)
    : name_(std::move(name)), backend_(options) {}

CpuDevice::~CpuDevice() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  // The worker drains the queue (reporting every batch) before it sees stopping_ with nothing left.
  if (worker_.joinable()) worker_.join();
}

Status CpuDevice::RegisterModel(const Model& model, int32_t slots) {
  // From a callback we are the worker: nothing else can be running on the backend.
  if (std::this_thread::get_id() == worker_.get_id()) return backend_.RegisterModel(model, slots);
  // The task shares the promise, so it stays alive until the worker is done with it even after
  // this thread has woken up and returned.
  auto result = std::make_shared<std::promise<Status>>();
  std::future<Status> ready = result->get_future();
  Job job;
  job.task = [this, &model, slots, result] { result->set_value(backend_.RegisterModel(model, slots)); };
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return ready.get();
}

void CpuDevice::Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) {
  bool accepted = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_batches_ < kMaxQueued) {
      Job job;
      job.round_id = round_id;
      job.batch = std::move(batch);
      job.done = std::move(done);
      queue_.push_back(std::move(job));
      ++queued_batches_;
      ++pending_;
      accepted = true;
    }
  }
  if (accepted) {
    cv_.notify_one();
    return;
  }
  // Rejected: completed here, on the caller's thread (see kMaxQueued).
  DeviceCompletion completion;
  completion.round_id = round_id;
  completion.output = ResourceExhausted("device '" + name_ + "' has " + std::to_string(kMaxQueued) +
                                        " batches queued; the batch was not run");
  completion.start_us = completion.end_us = clock_.NowMicros();
  if (done) done(std::move(completion));
}

int64_t CpuDevice::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

DeviceStats CpuDevice::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CpuDevice::Loop() {
  NameThisThread("cs-" + name_);
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything submitted has been reported
      job = std::move(queue_.front());
      queue_.pop_front();
      if (!job.task) --queued_batches_;
    }
    RunJob(job);
  }  // the job (batch, callback and what it captured) is destroyed here, outside the lock
}

void CpuDevice::RunJob(Job& job) {
  if (job.task) {
    job.task();
    return;
  }
  DeviceCompletion completion;
  completion.round_id = job.round_id;
  completion.start_us = clock_.NowMicros();
  completion.output = backend_.Run(job.batch);
  completion.end_us = clock_.NowMicros();
  {
    std::lock_guard<std::mutex> lock(mu_);
    --pending_;
    stats_.busy_us += completion.end_us - completion.start_us;
    if (completion.output.ok()) {
      ++stats_.batches;
      stats_.cells += static_cast<int64_t>(job.batch.rows.size());
    }
  }
  if (job.done) job.done(std::move(completion));
}

}  // namespace cellserve::cpu
