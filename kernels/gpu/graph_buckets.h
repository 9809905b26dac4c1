// Graph buckets: the batch sizes for which the CUDA backend captures one CUDA graph per cell type,
// and the key under which it caches them. A batch of `rows` runs in the smallest bucket >= rows,
// padded (batch_plan.h); a few buckets keep the number of captured graphs small while bounding the
// padding. Pure host code, no CUDA; plain functions and values, safe from any thread.
//
// Buckets: 1, 2, 4, 8, 16, 32, then the powers of two and the midpoints between them (48, 64, 96,
// 128, 192, 256, 384, 512, ...): steps of at most 1.5x, each a multiple of 16 above 16. All are
// <= max_batch, and the last is max_batch itself (appended when it is not one of them).
// Padding bound: a batch of `rows` runs in a bucket of fewer than 1.5 * rows rows when rows > 32,
// and of fewer than 2 * rows rows below (exactly rows when rows is a bucket).
// 14 buckets up to 512.
#pragma once

#include <cstdint>
#include <functional>
#include <tuple>
#include <vector>

namespace cellserve::gpu {

// The ascending, distinct bucket sizes for a cell type of this max_batch; empty if max_batch < 1.
std::vector<int32_t> BucketSizes(int32_t max_batch);

// The smallest bucket >= rows, or -1 if rows < 1 or rows > the last bucket (or `buckets` is empty).
// `buckets` ascending, as BucketSizes returns them.
int32_t BucketFor(const std::vector<int32_t>& buckets, int32_t rows);

// The graphs a device may capture for one model: one per (cell type, bucket of max_batch, staging
// slot), as GraphKey counts them. The CUDA backend keeps at least the sum over its models, so
// that a mix of models never evicts a graph it will launch again.
int64_t GraphsOfModel(int32_t cell_types, int32_t max_batch, int32_t staging_slots);

// Which captured graph: the graph of one cell type of one model at one bucket size, reading its
// indices from one staging slot's device index buffer (stream_plan.h), since a graph bakes in its
// pointers. `model` is the Model's address, only compared, never dereferenced.
struct GraphKey {
  const void* model = nullptr;
  int32_t type = -1;
  int32_t bucket = 0;
  int32_t staging_slot = 0;
};

inline bool operator<(const GraphKey& a, const GraphKey& b) {
  if (a.model != b.model) return std::less<const void*>()(a.model, b.model);  // total order on pointers
  return std::tie(a.type, a.bucket, a.staging_slot) < std::tie(b.type, b.bucket, b.staging_slot);
}

inline bool operator==(const GraphKey& a, const GraphKey& b) {
  return a.model == b.model && a.type == b.type && a.bucket == b.bucket && a.staging_slot == b.staging_slot;
}

}  // namespace cellserve::gpu
