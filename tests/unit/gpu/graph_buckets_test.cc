// Graph buckets (which batch sizes get a captured graph, and their padding bound), BucketFor, the
// GraphKey order, and the LruCache that holds the graphs (eviction order, evicted values destroyed).
#include "kernels/gpu/graph_buckets.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "kernels/gpu/lru_cache.h"

namespace cellserve::gpu {
namespace {

using V = std::vector<int32_t>;

TEST(BucketSizes, ListsPowersOfTwoThenHalfSteps) {
  EXPECT_EQ(BucketSizes(512), (V{1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512}));
  EXPECT_EQ(BucketSizes(256), (V{1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256}));
  EXPECT_EQ(BucketSizes(32), (V{1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(BucketSizes(7), (V{1, 2, 4, 7}));
  EXPECT_EQ(BucketSizes(1), (V{1}));
  EXPECT_EQ(BucketSizes(1000), (V{1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000}));
  EXPECT_EQ(BucketSizes(100), (V{1, 2, 4, 8, 16, 32, 48, 64, 96, 100}));
}

// One graph per (type, bucket, slot): a seq2seq model of 4 + 4 layers and a head (9 types) at
// max batch 512 (14 buckets) on 8 staging slots can use 1,008.
TEST(GraphsOfModel, CountsTypesBucketsAndSlots) {
  EXPECT_EQ(GraphsOfModel(9, 512, 8), 9 * 14 * 8);
  EXPECT_EQ(GraphsOfModel(3, 7, 2), 3 * 4 * 2);
  EXPECT_EQ(GraphsOfModel(1, 1, 1), 1);
  EXPECT_EQ(GraphsOfModel(0, 512, 8), 0);
  EXPECT_EQ(GraphsOfModel(3, 0, 8), 0);
  EXPECT_EQ(GraphsOfModel(3, 512, 0), 0);
  EXPECT_EQ(GraphsOfModel(-2, 512, 8), 0);  // never a negative count
  EXPECT_EQ(GraphsOfModel(3, 512, -1), 0);
}

TEST(BucketSizes, EmptyForNoBatch) {
  EXPECT_TRUE(BucketSizes(0).empty());
  EXPECT_TRUE(BucketSizes(-5).empty());
}

// For every max_batch: ascending, distinct, ends at max_batch, multiples of 16 from 32 on (but a
// trailing max_batch), and consecutive buckets within 2x (up to 32) and 1.5x (above), which bounds
// the padding of every batch size.
TEST(BucketSizes, InvariantsAndPaddingBound) {
  for (int32_t max_batch : {1, 2, 3, 7, 31, 32, 33, 47, 49, 100, 256, 500, 512, 1000, 4096, 5000}) {
    SCOPED_TRACE("max_batch " + std::to_string(max_batch));
    const V buckets = BucketSizes(max_batch);
    ASSERT_FALSE(buckets.empty());
    EXPECT_EQ(buckets.front(), 1);
    EXPECT_EQ(buckets.back(), max_batch);
    for (size_t i = 1; i < buckets.size(); ++i) {
      EXPECT_LT(buckets[i - 1], buckets[i]);
      const double limit = buckets[i - 1] < 32 ? 2.0 : 1.5;
      EXPECT_LE(buckets[i], limit * buckets[i - 1]) << buckets[i - 1] << " -> " << buckets[i];
      if (buckets[i] >= 32 && i + 1 < buckets.size()) {
        EXPECT_EQ(buckets[i] % 16, 0) << buckets[i];
      }
    }
    for (int32_t rows = 1; rows <= max_batch; ++rows) {
      const int32_t bucket = BucketFor(buckets, rows);
      ASSERT_GE(bucket, rows);
      if (rows > 32) {
        EXPECT_LT(bucket, 1.5 * rows) << rows;
      } else {
        EXPECT_LT(bucket, 2 * rows + (rows == 1)) << rows;  // 1 runs in 1
      }
    }
  }
}

TEST(BucketFor, PicksSmallestBucketThatFits) {
  const V buckets = BucketSizes(1000);
  EXPECT_EQ(BucketFor(buckets, 1), 1);
  EXPECT_EQ(BucketFor(buckets, 2), 2);
  EXPECT_EQ(BucketFor(buckets, 3), 4);
  EXPECT_EQ(BucketFor(buckets, 32), 32);
  EXPECT_EQ(BucketFor(buckets, 33), 48);
  EXPECT_EQ(BucketFor(buckets, 48), 48);
  EXPECT_EQ(BucketFor(buckets, 49), 64);
  EXPECT_EQ(BucketFor(buckets, 513), 768);
  EXPECT_EQ(BucketFor(buckets, 769), 1000);
  EXPECT_EQ(BucketFor(buckets, 1000), 1000);
}

TEST(BucketFor, RejectsRowsOutsideTheBuckets) {
  const V buckets = BucketSizes(7);
  EXPECT_EQ(BucketFor(buckets, 0), -1);
  EXPECT_EQ(BucketFor(buckets, -3), -1);
  EXPECT_EQ(BucketFor(buckets, 8), -1);
  EXPECT_EQ(BucketFor(buckets, 7), 7);
  EXPECT_EQ(BucketFor({}, 1), -1);
}

TEST(GraphKey, OrdersByEveryField) {
  int a = 0, b = 0;
  const GraphKey base{&a, 1, 16, 0};
  EXPECT_FALSE(base < base);
  for (GraphKey other : {GraphKey{&b, 1, 16, 0}, GraphKey{&a, 2, 16, 0}, GraphKey{&a, 1, 32, 0},
                         GraphKey{&a, 1, 16, 1}}) {
    EXPECT_NE(base < other, other < base);  // distinct keys are ordered one way
    EXPECT_FALSE(base == other);
  }
  EXPECT_TRUE((GraphKey{&a, 1, 16, 0} < GraphKey{&a, 1, 16, 1}));
  EXPECT_TRUE((GraphKey{&a, 1, 16, 5} < GraphKey{&a, 1, 32, 0}));
  EXPECT_TRUE((GraphKey{&a, 1, 99, 5} < GraphKey{&a, 2, 1, 0}));
}

// A value that counts its live instances, like an RAII graph handle that frees a cudaGraphExec_t.
struct Counted {
  Counted(int id, int* live, std::vector<int>* destroyed) : id(id), live(live), destroyed(destroyed) {
    ++*live;
  }
  Counted(Counted&& other) noexcept : id(other.id), live(other.live), destroyed(other.destroyed) {
    other.live = nullptr;  // moved-from: owns nothing
  }
  Counted& operator=(Counted&& other) noexcept {
    Release();
    id = other.id;
    live = other.live;
    destroyed = other.destroyed;
    other.live = nullptr;
    return *this;
  }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  ~Counted() { Release(); }

  void Release() {
    if (!live) return;
    --*live;
    destroyed->push_back(id);
    live = nullptr;
  }

  int id;
  int* live;
  std::vector<int>* destroyed;
};

TEST(LruCache, EvictsLeastRecentlyUsedAndDestroysIt) {
  int live = 0;
  std::vector<int> destroyed;
  {
    LruCache<int, Counted> cache(3);
    for (int k = 1; k <= 3; ++k) cache.Insert(k, Counted(k * 10, &live, &destroyed));
    EXPECT_EQ(cache.size(), 3u);
    EXPECT_EQ(live, 3);
    EXPECT_TRUE(destroyed.empty());

    ASSERT_NE(cache.Find(1), nullptr);  // 1 is now the most recently used: 2 is the oldest
    EXPECT_EQ(cache.Find(1)->id, 10);
    EXPECT_EQ(cache.Find(4), nullptr);

    Counted& four = cache.Insert(4, Counted(40, &live, &destroyed));
    EXPECT_EQ(four.id, 40);
    EXPECT_EQ(cache.evictions(), 1);
    EXPECT_EQ(destroyed, (std::vector<int>{20}));
    EXPECT_EQ(live, 3);
    EXPECT_EQ(cache.Find(2), nullptr);

    // Order now (newest first): 4, 1, 3. Inserting 5 evicts 3, then 6 evicts 1.
    cache.Insert(5, Counted(50, &live, &destroyed));
    cache.Insert(6, Counted(60, &live, &destroyed));
    EXPECT_EQ(destroyed, (std::vector<int>{20, 30, 10}));
    EXPECT_EQ(cache.evictions(), 3);
    EXPECT_EQ(cache.size(), 3u);
    EXPECT_NE(cache.Find(4), nullptr);
    EXPECT_NE(cache.Find(5), nullptr);
    EXPECT_NE(cache.Find(6), nullptr);
    EXPECT_EQ(live, 3);
  }
  EXPECT_EQ(live, 0);  // the cache's destructor frees the rest
  EXPECT_EQ(destroyed.size(), 6u);
}

TEST(LruCache, InsertOfExistingKeyReplacesWithoutEvicting) {
  int live = 0;
  std::vector<int> destroyed;
  LruCache<std::string, Counted> cache(2);
  cache.Insert("a", Counted(1, &live, &destroyed));
  cache.Insert("b", Counted(2, &live, &destroyed));
  Counted& replaced = cache.Insert("a", Counted(3, &live, &destroyed));  // "a" is now the newest
  EXPECT_EQ(replaced.id, 3);
  EXPECT_EQ(destroyed, (std::vector<int>{1}));
  EXPECT_EQ(cache.evictions(), 0);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(live, 2);
  cache.Insert("c", Counted(4, &live, &destroyed));  // evicts "b", the least recently used
  EXPECT_EQ(destroyed, (std::vector<int>{1, 2}));
  EXPECT_EQ(cache.Find("a")->id, 3);
  EXPECT_EQ(cache.Find("b"), nullptr);
}

// The CUDA device resets its cache by move-assigning a new one (to free the graphs before the
// buffers they use): that frees the old values at once, and a moved cache keeps its order.
TEST(LruCache, MovesKeepTheOrderAndMoveAssignmentFreesTheOldValues) {
  int live = 0;
  std::vector<int> destroyed;
  LruCache<int, Counted> cache(2);
  cache.Insert(1, Counted(10, &live, &destroyed));
  cache.Insert(2, Counted(20, &live, &destroyed));
  cache.Find(1);  // 2 is now the least recently used
  LruCache<int, Counted> moved(std::move(cache));
  moved.Insert(3, Counted(30, &live, &destroyed));  // evicts 2
  EXPECT_EQ(destroyed, (std::vector<int>{20}));
  ASSERT_NE(moved.Find(1), nullptr);
  EXPECT_EQ(moved.Find(1)->id, 10);
  moved = LruCache<int, Counted>(1);
  ASSERT_EQ(destroyed.size(), 3u);
  std::vector<int> freed_by_assignment(destroyed.begin() + 1, destroyed.end());
  std::sort(freed_by_assignment.begin(), freed_by_assignment.end());  // in whatever order
  EXPECT_EQ(freed_by_assignment, (std::vector<int>{10, 30}));
  EXPECT_EQ(live, 0);
  EXPECT_EQ(moved.size(), 0u);
  EXPECT_EQ(moved.capacity(), 1u);
}

TEST(LruCache, CapacityOneAndGraphKeys) {
  LruCache<GraphKey, std::unique_ptr<int>> cache(0);  // taken as 1
  int model = 0;
  const GraphKey k1{&model, 0, 16, 0}, k2{&model, 0, 16, 1};
  *cache.Insert(k1, std::make_unique<int>(1)) += 10;
  ASSERT_NE(cache.Find(k1), nullptr);
  EXPECT_EQ(**cache.Find(k1), 11);
  cache.Insert(k2, std::make_unique<int>(2));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.Find(k1), nullptr);
  EXPECT_EQ(**cache.Find(k2), 2);
  EXPECT_EQ(cache.evictions(), 1);
}

}  // namespace
}  // namespace cellserve::gpu
