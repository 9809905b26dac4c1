// Device: an asynchronous compute stream (DESIGN.md §5). Submit returns at once; batches run in
// submission order, one at a time; each completion is reported through the callback given at
// Submit, on the device's own thread (callers forward it to their actor, never block in it).
// Because the stream is in order, a state slot freed by a submitted batch may be handed to a batch
// submitted later: the later one runs after the earlier one has read it.
// Implementations: kernels/cpu CpuDevice (a thread around CpuBackend), kernels/sim SimDevice,
// kernels/cuda CudaDevice.
// Thread-safety: Submit and RegisterModel may be called from any one thread at a time; the
// destructor finishes the submitted batches, reports them, then joins.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "runtime/backend.h"
#include "runtime/status.h"

namespace cellserve {

struct DeviceCompletion {
  uint64_t round_id = 0;
  StatusOr<BatchOutput> output = Internal("not run");
  int64_t start_us = 0;   // device clock (SteadyClock) when the batch started running
  int64_t end_us = 0;     // and when it finished
};

using CompletionCallback = std::function<void(DeviceCompletion)>;

struct DeviceStats {
  int64_t batches = 0;
  int64_t cells = 0;
  int64_t busy_us = 0;    // total time spent running batches
};

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string name() const = 0;  // "cpu:0"
  // Allocates the model's state storage. Call before submitting its batches.
  virtual Status RegisterModel(const Model& model, int32_t slots) = 0;
  // Queues `batch`; `done` is called once, on the device thread, when it has run (or failed).
  virtual void Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) = 0;
  // Batches submitted and not yet completed.
  virtual int64_t pending() const = 0;
  virtual DeviceStats stats() const = 0;
};

}  // namespace cellserve
