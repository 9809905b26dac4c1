// ReadyQueue against a reference (a sorted multiset): the same pushes and pops must give the same
// cells in the same order, whichever of its merge paths each push takes.
#include "runtime/ready_queue.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <tuple>
#include <vector>

namespace cellserve {
namespace {

using Key = std::tuple<uint64_t, int32_t, uint32_t>;

Key KeyOf(const ReadyCell& c) { return {c.seq, c.cell, c.index}; }

// Pops `n` (or all) from both and checks they agree, cell by cell.
void PopBoth(ReadyQueue& q, std::multiset<Key>& ref, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(q.empty(), ref.empty());
    if (ref.empty()) return;
    ASSERT_EQ(KeyOf(q.top()), *ref.begin()) << "pop " << i;
    q.pop();
    ref.erase(ref.begin());
  }
}

TEST(ReadyQueueTest, OldestRequestFirstThenEarliestCell) {
  ReadyQueue q;
  EXPECT_TRUE(q.empty());
  q.push({5, 2, 0});
  q.push({3, 7, 1});
  q.push({5, 1, 0});
  q.push({3, 4, 1});
  EXPECT_EQ(q.size(), 4u);  // pushed, not merged yet, already counted
  std::vector<Key> order;
  while (!q.empty()) {
    order.push_back(KeyOf(q.top()));
    q.pop();
  }
  EXPECT_EQ(order, (std::vector<Key>{{3, 4, 1}, {3, 7, 1}, {5, 1, 0}, {5, 2, 0}}));
  EXPECT_EQ(q.size(), 0u);
}

TEST(ReadyQueueTest, SuccessorsOlderThanAllGoBackInFront) {
  ReadyQueue q;
  for (uint32_t r = 0; r < 6; ++r) q.push({10 + r, 0, r});
  ASSERT_FALSE(q.empty());
  for (int i = 0; i < 3; ++i) q.pop();  // a round takes requests 10..12
  // Their successors come back, older than 13..15, out of order.
  q.push({12, 1, 2});
  q.push({10, 1, 0});
  q.push({11, 1, 1});
  std::vector<uint64_t> seqs;
  while (!q.empty()) {
    seqs.push_back(q.top().seq);
    q.pop();
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{10, 11, 12, 13, 14, 15}));
}

TEST(ReadyQueueTest, InterleavedPushesAreMerged) {
  ReadyQueue q;
  for (uint64_t s : {2, 4, 6, 8}) q.push({s, 0, 0});
  ASSERT_FALSE(q.empty());
  for (uint64_t s : {7, 1, 5, 3, 9}) q.push({s, 0, 0});
  EXPECT_EQ(q.size(), 9u);
  for (uint64_t want = 1; want <= 9; ++want) {
    ASSERT_FALSE(q.empty());
    EXPECT_EQ(q.top().seq, want);
    q.pop();
  }
  EXPECT_TRUE(q.empty());
}

TEST(ReadyQueueTest, OrderHoldsAcrossDroppingTheConsumedPrefix) {
  ReadyQueue q;
  for (uint32_t r = 0; r < 3000; ++r) q.push({r, 0, r});
  std::vector<ReadyCell> taken;
  for (int i = 0; i < 2000; ++i) {
    ASSERT_FALSE(q.empty());
    taken.push_back(q.top());
    q.pop();
  }
  // A younger cell is appended, and the merge that takes it in drops the 2000 consumed entries
  // (more than 1024, more than half). Then the taken cells' successors come back, older than all.
  q.push({5000, 0, 0});
  ASSERT_FALSE(q.empty());
  EXPECT_EQ(q.top().seq, 2000u);
  for (auto it = taken.rbegin(); it != taken.rend(); ++it) q.push({it->seq, 1, it->index});
  EXPECT_EQ(q.size(), 3001u);
  for (uint64_t want = 0; want < 3000; ++want) {
    ASSERT_FALSE(q.empty());
    ASSERT_EQ(q.top().seq, want);
    ASSERT_EQ(q.top().cell, want < 2000 ? 1 : 0);
    q.pop();
  }
  ASSERT_FALSE(q.empty());
  EXPECT_EQ(q.top().seq, 5000u);
}

// Random pushes and pops shaped like the scheduler's: successors of the cells just popped (older
// than the rest), new requests (younger than all), stragglers anywhere; long runs, so the consumed
// prefix is dropped many times.
TEST(ReadyQueueTest, MatchesASortedSetUnderRandomUse) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    ReadyQueue q;
    std::multiset<Key> ref;
    uint64_t next_seq = 0;
    std::vector<ReadyCell> popped;
    for (int step = 0; step < 3000; ++step) {
      const int what = static_cast<int>(rng() % 20);
      std::vector<ReadyCell> pushes;
      if (what < 9) {  // new requests
        const int n = 1 + static_cast<int>(rng() % 8);
        for (int i = 0; i < n; ++i, ++next_seq) pushes.push_back({next_seq, 0, static_cast<uint32_t>(next_seq)});
      } else if (what < 18) {  // successors of what the last round took
        for (const ReadyCell& c : popped) pushes.push_back({c.seq, c.cell + 1, c.index});
      } else if (what == 18 && next_seq > 0) {  // stragglers: cells of any admitted request
        const int n = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < n; ++i) {
          const uint64_t s = rng() % next_seq;
          pushes.push_back({s, static_cast<int32_t>(rng() % 64), static_cast<uint32_t>(s)});
        }
      }
      std::shuffle(pushes.begin(), pushes.end(), rng);
      for (const ReadyCell& c : pushes) {
        q.push(c);
        ref.insert(KeyOf(c));
      }
      ASSERT_EQ(q.size(), ref.size());
      popped.clear();
      const size_t take = rng() % 12;
      for (size_t i = 0; i < take && !ref.empty(); ++i) {
        ASSERT_FALSE(q.empty());
        ASSERT_EQ(KeyOf(q.top()), *ref.begin());
        popped.push_back(q.top());
        q.pop();
        ref.erase(ref.begin());
      }
      ASSERT_EQ(q.size(), ref.size());
    }
    PopBoth(q, ref, ref.size());
    EXPECT_TRUE(q.empty());
  }
}

}  // namespace
}  // namespace cellserve
