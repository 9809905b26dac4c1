// CpuDevice: the CPU implementation of Device (runtime/device.h, DESIGN.md §5): one CpuBackend
// driven by one dedicated worker thread that runs submitted batches in FIFO order and reports each
// through its callback, on that thread.
// Ownership: the device owns its backend (and so the state storage of every registered model), the
// queued batches and their callbacks. Registered models must outlive the device.
// Threads: Submit and RegisterModel may be called from any one thread at a time (not from several
// at once); pending(), stats() and name() from any thread. Callbacks run on the worker thread, one
// at a time, in submission order; they must not block, and must not destroy the device. Submit and
// RegisterModel may also be called from inside a callback. The destructor runs every batch already
// queued, reports it, then joins: every accepted Submit gets exactly one callback.
// The intended setup is N devices, one per core: every kernel (kernels/cpu: the packed GEMM, the
// AMX GEMM, the pointwise steps) runs on the device's one thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/clock.h"
#include "runtime/device.h"

namespace cellserve::cpu {

class CpuDevice final : public Device {
 public:
  // Batches queued (submitted, not yet started) at most. A Submit beyond it is completed at once,
  // on the calling thread inside Submit, with RESOURCE_EXHAUSTED and start_us == end_us (the
  // scheduler's lookahead keeps the queue far below this; hitting it is a caller bug).
  static constexpr int64_t kMaxQueued = 1024;

  // Starts the worker thread. INVALID_ARGUMENT for an empty name or blas_threads < 0;
  // cpu >= 0: the device's thread runs on that CPU only (runtime/cpu_plan.h). UNAVAILABLE if the
  // thread cannot be started; the OS's error if it cannot be pinned.
  static StatusOr<std::unique_ptr<CpuDevice>> Create(std::string name, CpuBackendOptions options = {},
                                                     int cpu = -1);
  // Finishes and reports every queued batch, then joins the worker. Not from a callback.
  ~CpuDevice() override;

  CpuDevice(const CpuDevice&) = delete;
  CpuDevice& operator=(const CpuDevice&) = delete;

  std::string name() const override { return name_; }
  // Runs on the worker thread in stream order (after every batch submitted before it) and waits
  // for it, so it never races a running batch. Re-registering a model reallocates (zeroes) its
  // slots. INVALID_ARGUMENT for slots <= 0.
  Status RegisterModel(const Model& model, int32_t slots) override;
  // Takes ownership of `batch`; returns at once. A malformed batch is reported as the backend's
  // INVALID_ARGUMENT in its completion; the device goes on with the next one.
  void Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) override;
  // Submitted and not yet completed (a batch counts as completed just before its callback runs).
  int64_t pending() const override;
  // batches and cells (rows) count the batches that ran OK; busy_us is the time spent in the
  // backend for every batch, the sum of end_us - start_us over the completions. Updated before
  // the batch's callback runs.
  DeviceStats stats() const override;

 private:
  // One entry of the FIFO: a batch to run, or (task set) a control task such as a registration.
  struct Job {
    uint64_t round_id = 0;
    CellBatch batch;
    CompletionCallback done;
    std::function<void()> task;
  };

  CpuDevice(std::string name, CpuBackendOptions options);
  void Loop();             // the worker thread's body
  void RunJob(Job& job);   // on the worker thread, without mu_

  const std::string name_;
  const SteadyClock clock_;
  CpuBackend backend_;     // touched only by the worker thread (registration is posted to it)

  mutable std::mutex mu_;
  std::condition_variable cv_;  // signalled when queue_ gains an entry or stopping_ is set
  std::deque<Job> queue_;       // GUARDED_BY(mu_)
  int64_t queued_batches_ = 0;  // GUARDED_BY(mu_): batch jobs in queue_ (tasks not counted)
  int64_t pending_ = 0;         // GUARDED_BY(mu_): queued + running batches
  DeviceStats stats_;           // GUARDED_BY(mu_)
  bool stopping_ = false;       // GUARDED_BY(mu_): the destructor has begun; drain, then exit

  // Last: started by Create once everything above is built, then not reassigned (read by
  // RegisterModel to tell whether it runs on the worker).
  std::thread worker_;
};

}  // namespace cellserve::cpu
