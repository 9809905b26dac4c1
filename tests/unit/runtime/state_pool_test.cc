#include "runtime/state_pool.h"

#include <algorithm>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(StatePoolTest, FreshPool) {
  StatePool pool(5);
  EXPECT_EQ(pool.capacity(), 5);
  EXPECT_EQ(pool.used(), 0);
  EXPECT_EQ(pool.available(), 5);
  for (SlotId s = 0; s < 5; ++s) {
    EXPECT_FALSE(pool.in_use(s));
    EXPECT_EQ(pool.readers(s), 0);
  }
}

TEST(StatePoolTest, AllocateUntilFullThenResourceExhausted) {
  StatePool pool(4);
  std::set<SlotId> got;
  for (int i = 0; i < 4; ++i) {
    StatusOr<SlotId> s = pool.Allocate(i + 1);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_GE(*s, 0);
    EXPECT_LT(*s, 4);
    EXPECT_TRUE(got.insert(*s).second) << "slot " << *s << " handed out twice";
    EXPECT_TRUE(pool.in_use(*s));
    EXPECT_EQ(pool.readers(*s), i + 1);
    EXPECT_EQ(pool.used(), i + 1);
    EXPECT_EQ(pool.available(), 3 - i);
  }
  StatusOr<SlotId> full = pool.Allocate(1);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("4"), std::string::npos) << full.status().ToString();
  EXPECT_EQ(pool.used(), 4);  // a failed allocation changes nothing
  EXPECT_EQ(pool.available(), 0);
}

TEST(StatePoolTest, ZeroCapacity) {
  StatePool pool(0);
  EXPECT_EQ(pool.capacity(), 0);
  EXPECT_EQ(pool.available(), 0);
  EXPECT_EQ(pool.Allocate(1).status().code(), StatusCode::kResourceExhausted);
}

TEST(StatePoolTest, ConsumeFreesAfterTheLastReaderOnly) {
  StatePool pool(2);
  SlotId s = *pool.Allocate(3);
  EXPECT_FALSE(pool.Consume(s));
  EXPECT_EQ(pool.readers(s), 2);
  EXPECT_TRUE(pool.in_use(s));
  EXPECT_EQ(pool.used(), 1);
  EXPECT_FALSE(pool.Consume(s));
  EXPECT_EQ(pool.readers(s), 1);
  EXPECT_EQ(pool.used(), 1);
  EXPECT_TRUE(pool.Consume(s));  // the last reader frees it
  EXPECT_FALSE(pool.in_use(s));
  EXPECT_EQ(pool.readers(s), 0);
  EXPECT_EQ(pool.used(), 0);
  EXPECT_EQ(pool.available(), 2);
}

TEST(StatePoolTest, SingleReaderFreedByOneConsume) {
  StatePool pool(1);
  SlotId s = *pool.Allocate(1);
  EXPECT_TRUE(pool.Consume(s));
  EXPECT_EQ(pool.available(), 1);
}

TEST(StatePoolTest, FreeIsImmediateAndIdempotent) {
  StatePool pool(3);
  SlotId a = *pool.Allocate(5);
  SlotId b = *pool.Allocate(1);
  EXPECT_EQ(pool.used(), 2);
  pool.Free(a);  // whatever readers remain
  EXPECT_FALSE(pool.in_use(a));
  EXPECT_EQ(pool.used(), 1);
  EXPECT_EQ(pool.available(), 2);
  pool.Free(a);  // again: no-op, no double entry in the free list
  pool.Free(a);
  EXPECT_EQ(pool.used(), 1);
  EXPECT_EQ(pool.available(), 2);
  // Free after Consume already freed it is a no-op too.
  EXPECT_TRUE(pool.Consume(b));
  pool.Free(b);
  EXPECT_EQ(pool.used(), 0);
  EXPECT_EQ(pool.available(), 3);
  // Never-allocated slots: no-op.
  pool.Free(2);
  EXPECT_EQ(pool.available(), 3);
  // And the pool still hands out exactly 3 distinct slots.
  std::set<SlotId> got;
  for (int i = 0; i < 3; ++i) got.insert(*pool.Allocate(1));
  EXPECT_EQ(got, (std::set<SlotId>{0, 1, 2}));
  EXPECT_EQ(pool.Allocate(1).status().code(), StatusCode::kResourceExhausted);
}

// Consume of a slot that is already free breaks the contract (the assert says so in a debug
// build); in a release build it must still leave the pool whole: no second free-list entry, which
// would hand one slot to two cells and let one request's state leak into another's.
TEST(StatePoolTest, ConsumeOfAFreeSlotLeavesThePoolWhole) {
  StatePool pool(2);
  SlotId a = *pool.Allocate(2);
  pool.Free(a);
  EXPECT_DEBUG_DEATH(EXPECT_FALSE(pool.Consume(a)), "readers_");
  EXPECT_EQ(pool.readers(a), 0);
  EXPECT_EQ(pool.available(), 2);
  std::set<SlotId> got;
  for (int i = 0; i < 2; ++i) got.insert(*pool.Allocate(1));
  EXPECT_EQ(got, (std::set<SlotId>{0, 1}));
  EXPECT_EQ(pool.Allocate(1).status().code(), StatusCode::kResourceExhausted);
}

TEST(StatePoolTest, ReadersBelowOneRejected) {
  StatePool pool(2);
  for (int32_t readers : {0, -1, -100}) {
    StatusOr<SlotId> s = pool.Allocate(readers);
    EXPECT_FALSE(s.ok()) << readers;
    EXPECT_NE(s.status().code(), StatusCode::kResourceExhausted) << "not a capacity problem";
    EXPECT_NE(s.status().message().find("reader"), std::string::npos) << s.status().ToString();
  }
  EXPECT_EQ(pool.used(), 0);  // nothing leaked
  EXPECT_EQ(pool.available(), 2);
}

TEST(StatePoolTest, SlotsReusedAfterFree) {
  StatePool pool(2);
  SlotId a = *pool.Allocate(1);
  SlotId b = *pool.Allocate(1);
  EXPECT_NE(a, b);
  ASSERT_FALSE(pool.Allocate(1).ok());
  EXPECT_TRUE(pool.Consume(a));
  StatusOr<SlotId> c = pool.Allocate(2);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, a);  // the only free slot
  EXPECT_EQ(pool.readers(a), 2);
  pool.Free(b);
  StatusOr<SlotId> d = pool.Allocate(1);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, b);
}

TEST(StatePoolTest, RecentlyFreedSlotComesBackFirst) {
  StatePool pool(8);
  std::vector<SlotId> s;
  for (int i = 0; i < 5; ++i) s.push_back(*pool.Allocate(1));
  pool.Free(s[1]);
  pool.Free(s[3]);
  EXPECT_EQ(*pool.Allocate(1), s[3]);  // LIFO
  EXPECT_EQ(*pool.Allocate(1), s[1]);
}

TEST(StatePoolTest, ManyCyclesKeepBookkeeping) {
  StatePool pool(16);
  std::vector<SlotId> live;
  uint32_t rng = 12345;
  auto next = [&] { return rng = rng * 1664525u + 1013904223u; };
  for (int i = 0; i < 5000; ++i) {
    if (live.size() < 16 && (next() >> 16) % 2 == 0) {
      StatusOr<SlotId> s = pool.Allocate(1 + static_cast<int32_t>((next() >> 16) % 3));
      ASSERT_TRUE(s.ok());
      ASSERT_EQ(std::count(live.begin(), live.end(), *s), 0);
      live.push_back(*s);
    } else if (!live.empty()) {
      const size_t k = (next() >> 16) % live.size();
      const SlotId s = live[k];
      bool freed;
      if ((next() >> 16) % 4 == 0) {
        pool.Free(s);
        freed = true;
      } else {
        const int32_t before = pool.readers(s);
        freed = pool.Consume(s);
        ASSERT_EQ(freed, before == 1);
      }
      if (freed) live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    ASSERT_EQ(pool.used(), static_cast<int32_t>(live.size()));
    ASSERT_EQ(pool.available(), 16 - static_cast<int32_t>(live.size()));
  }
}

}  // namespace
}  // namespace cellserve
