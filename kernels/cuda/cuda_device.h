// CudaDevice: the GPU implementation of Device (runtime/device.h, DESIGN.md §5) on one GPU.
// Per round: the batch's index plan (kernels/gpu/batch_plan.h, padded to a graph bucket) is
// written to a pinned staging buffer and uploaded on a copy stream; the compute stream waits for
// that upload and launches the round's CUDA graph (gather, one cuBLAS GEMM for all gates, the
// fused element-wise kernel or the head's argmax), captured once per (model, cell type, bucket,
// staging slot); head results (token ids and their logits, class logits) come back on a second
// copy stream into pinned memory. The stream and event order is kernels/gpu/stream_plan.h's, so
// round n+1's upload overlaps round n's compute and downloads overlap the next compute.
// Completions: a completion thread waits (blocking sync, no spin) for each round's last event in
// submission order and runs its callback there; the worker actor's thread never blocks on CUDA.
// State storage: fp32 [slots + 1, 2H] per registered model in GPU memory (the last slot is the
// padding rows' scratch), zeroed at registration. Weights: from the CudaWeightStore when the
// options give one (loaded once per process, broadcast to the other GPUs with NCCL), else
// uploaded by RegisterModel. A token-fed type with a folded table (runtime/token_fold.h) gathers
// only h and multiplies only the recurrent weights; a folded leaf runs no GEMM.
// Threads: Submit, RegisterModel and ReadSlot from one thread at a time (also from inside a
// callback, except RegisterModel); pending(), stats() and name() from any thread. Callbacks run on
// the completion thread in submission order; they must not block or destroy the device.
// Bounds: at most `staging_slots` rounds in flight. Submit beyond that waits for the oldest round
// (counted in CudaGraphStats::host_waits; the scheduler's lookahead keeps below it), except from
// inside a callback, where it completes at once, on the calling thread, with RESOURCE_EXHAUSTED.
// Errors: every CUDA, cuBLAS and NCCL call is checked; a failure is the round's Status naming the
// call and the error (cuda_check.h), except a graph that cannot be made (capture refused or
// invalidated, instantiation refused or out of memory): that round, and unless it was only out of
// memory that shape from then on, runs with plain launches (CudaGraphStats counts them). The destructor reports every
// submitted round, then joins.
// This header has no CUDA includes, so g++-built code (actors/, tools/) can create devices.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/gpu/precision.h"
#include "runtime/backend.h"
#include "runtime/device.h"
#include "runtime/token_fold.h"

namespace cellserve::cuda {

class CudaWeightStore;

// GEMM precision (kernels/gpu/precision.h): fp32, or fp16/bf16 with fp32 accumulation.
using gpu::ParsePrecision;
using gpu::Precision;
using gpu::PrecisionName;

struct CudaDeviceOptions {
  int gpu = 0;                     // CUDA device index
  Precision precision = Precision::kF32;
  bool use_graphs = true;          // false: plain launches, batches not padded to buckets
  // Rounds in flight at most (pinned buffers, events; graphs are captured per slot). 3 keep the
  // compute stream busy when copies and compute cost alike (kernels/gpu/stream_plan.h).
  int32_t staging_slots = 8;
  // Captured graphs kept (LRU). 0: every graph the registered models can use
  // (gpu::GraphsOfModel summed), so a mix of models evicts none; a number caps it below that.
  size_t graph_cache_size = 0;
  // Token-fed cell types whose folded table (runtime/token_fold.h) takes at most this many bytes
  // get one in GPU memory; 0: none. A weight store must have been made with the same cap.
  int64_t fold_max_bytes = kDefaultFoldMaxBytes;
  // Weights loaded once per process (CreateCudaDevices makes one); null: each device uploads.
  std::shared_ptr<CudaWeightStore> weights;
  // The CPUs the completion thread may run on (runtime/cpu_plan.h); empty: wherever the OS puts it.
  std::vector<int> completion_cpus;
};

struct CudaGraphStats {
  int64_t captures = 0;   // graphs captured (a new (model, type, bucket, staging slot))
  int64_t launches = 0;   // rounds run from a captured graph
  // Rounds run with plain launches before any capture of their (model, type, bucket): the first
  // of each, so that cuBLAS and the kernels load outside a stream capture.
  int64_t warmups = 0;
  // Graphs that could not be made: the capture refused or invalidated, or the instantiation
  // refused (the shape then runs with plain launches from then on, logged once), or the
  // instantiation out of memory (that round only). plain_rounds counts the rounds run plain for either reason.
  int64_t capture_failures = 0;
  int64_t plain_rounds = 0;
  int64_t evictions = 0;  // graphs dropped by the LRU bound
  int64_t cache_capacity = 0;  // graphs the LRU may hold (CudaDeviceOptions::graph_cache_size)
  int64_t padded_rows = 0;  // padding rows computed (bucket - rows, summed)
  int64_t host_waits = 0;   // Submits that waited for a free staging slot
};

class CudaDevice final : public Device {
 public:
  // UNAVAILABLE if the GPU is not usable; INVALID_ARGUMENT for bad options.
  static StatusOr<std::unique_ptr<CudaDevice>> Create(std::string name, CudaDeviceOptions options);
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  std::string name() const override;
  // Waits for every submitted round, then allocates (zeroes) the model's slots and scratch. Not
  // from inside a callback.
  Status RegisterModel(const Model& model, int32_t slots) override;
  void Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) override;
  int64_t pending() const override;
  DeviceStats stats() const override;

  // One slot's (h, c) after every round submitted so far (waits for the compute stream).
  StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot);
  CudaGraphStats graph_stats() const;

  class Impl;

 private:
  explicit CudaDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The synchronous Backend over a CudaDevice (for SyncExecutor, the golden tests, `cellserve run`):
// Run submits and waits. One thread at a time.
class CudaBackend final : public Backend {
 public:
  static StatusOr<std::unique_ptr<CudaBackend>> Create(CudaDeviceOptions options);
  Status RegisterModel(const Model& model, int32_t slots) override;
  StatusOr<BatchOutput> Run(const CellBatch& batch) override;
  StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot) override;
  CudaDevice& device() { return *device_; }

 private:
  explicit CudaBackend(std::unique_ptr<CudaDevice> device) : device_(std::move(device)) {}
  std::unique_ptr<CudaDevice> device_;
  uint64_t next_round_ = 1;
};

// GPUs usable here (cuda_devices.h), as a count; UNAVAILABLE with CUDA's reason when none.
StatusOr<int> CountGpus();

// `count` devices "cuda:0".."cuda:{count-1}" on GPUs 0..count-1 (count 0: every GPU), sharing one
// CudaWeightStore; `models` are loaded onto the first GPU and broadcast to the others (NCCL).
// INVALID_ARGUMENT when more GPUs are asked for than there are; UNAVAILABLE when there is none.
StatusOr<std::vector<std::unique_ptr<CudaDevice>>> CreateCudaDevices(int count, CudaDeviceOptions base,
                                                                     const std::vector<const Model*>& models);

}  // namespace cellserve::cuda
