#include "kernels/gpu/graph_buckets.h"

#include <algorithm>

namespace cellserve::gpu {

namespace {

constexpr int32_t kLastDoubling = 32;  // 1, 2, 4, .., 32; then steps of 1.5x and 4/3x

// The bucket after `bucket`: doubling up to 32, then alternately 1.5x (2^k -> 3 * 2^(k-1)) and
// 4/3x (3 * 2^(k-1) -> 2^(k+1)), so every step is at most 1.5x and every bucket above 16 is a
// multiple of 16.
int64_t NextBucket(int64_t bucket) {
  if (bucket < kLastDoubling) return 2 * bucket;
  const bool power_of_two = (bucket & (bucket - 1)) == 0;
  return power_of_two ? bucket / 2 * 3 : bucket / 3 * 4;
}

}  // namespace

std::vector<int32_t> BucketSizes(int32_t max_batch) {
  std::vector<int32_t> buckets;
  if (max_batch < 1) return buckets;
  for (int64_t b = 1; b <= max_batch; b = NextBucket(b)) buckets.push_back(static_cast<int32_t>(b));
  if (buckets.back() != max_batch) buckets.push_back(max_batch);
  return buckets;
}

int32_t BucketFor(const std::vector<int32_t>& buckets, int32_t rows) {
  if (rows < 1) return -1;
  auto it = std::lower_bound(buckets.begin(), buckets.end(), rows);
  return it == buckets.end() ? -1 : *it;
}

int64_t GraphsOfModel(int32_t cell_types, int32_t max_batch, int32_t staging_slots) {
  if (cell_types < 1 || staging_slots < 1) return 0;
  return int64_t{cell_types} * static_cast<int64_t>(BucketSizes(max_batch).size()) * staging_slots;
}

}  // namespace cellserve::gpu
