// Scheduler: the cellular batching scheduler of one device and one model (DESIGN.md §4), and the
// baseline policies on the same engine. Pure: no threads, no clock reads except through the
// injected Clock, so tests drive it with a FakeClock.
//
// The engine. Admitted requests hand over their cell graph (the worker's execution mirror: it
// keeps per-cell dependency counts and grows seq2seq graphs itself, with no round trip to the
// request). Ready cells wait in per-cell-type queues. NextRound() is one scheduling decision: pick
// a cell type, take up to max_batch ready cells, give them output slots, and submit. Dependencies
// are released at submission, not completion, so the next round can be decided while the device
// runs this one; at most `lookahead` rounds are submitted and unfinished. A state slot whose last
// reader is submitted is freed at once (the device is an in-order stream, so a later writer runs
// after that reader). OnRoundDone() reports head outputs back to the graphs and returns what each
// request touched by the round should hear (tokens, result or error).
//
// Policies (Options::policy):
//   cellular    the type of the oldest request with a ready cell, except that a type with a full
//               max batch ready goes first for up to fill_first_rounds rounds in a row, and a type
//               with ready cells passed over max_type_wait_rounds rounds in a row goes next;
//               within a type, oldest request first; requests join and leave between rounds.
//               (The other policies choose among their active requests' cells the same way.)
//   sequential  one request at a time (the oldest), batch 1.
//   padded      a group of up to padded_batch requests (formed when that many wait, or when the
//               oldest has waited padded_wait_us) runs to completion while newcomers wait; LSTM
//               rounds are padded with dummy rows to the group size until the group's longest
//               member is done (what padded TF/MXNet serving computes); a seq2seq group is
//               encoded whole before any member decodes.
//   bucketed    padded, but each group is drawn from one input-length bucket: of the buckets
//               ready to go (full, or their oldest has waited), the one whose oldest request is
//               oldest.
// Bounds: at most max_requests admitted and unfinished (RESOURCE_EXHAUSTED at once beyond); the
// state pool is bounded (a cell waits for a slot, and a ready head, which needs none, runs first;
// if nothing can run, the newest request holding slots fails with RESOURCE_EXHAUSTED). Deadlines and cancellation remove a request's cells from
// the queues and free its slots at once.
// Not thread-safe: owned by one worker actor.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cell_graph.h"
#include "runtime/clock.h"
#include "runtime/status.h"

namespace cellserve {

using RequestId = uint64_t;

enum class Policy { kCellular, kSequential, kPadded, kBucketed };
const char* PolicyName(Policy policy);                    // "cellular", ...
StatusOr<Policy> ParsePolicy(const std::string& name);

struct SchedulerOptions {
  Policy policy = Policy::kCellular;
  // Rounds submitted and not finished at most. Must be >= 1. Default 5 (the BatchMaker paper).
  int lookahead = 5;
  // Type choice: a type that can fill its max batch goes before the oldest request's type, for
  // at most this many rounds in a row (the oldest request's wait bound per cell, in rounds).
  // 0: the oldest request's type always. Must be >= 0.
  int fill_first_rounds = 4;
  // Type choice: a type with ready cells that has been passed over this many scheduling
  // decisions in a row goes next (the one passed over longest), whatever the rules above say.
  // Without it a long request's next cell, always the oldest request's, kept its type chosen: a
  // 3-token request admitted beside a 2,000-token one waited at its head until the long one was
  // done (beside one long input in 300, short requests' p99 was 1.1-1.2 s; with the rule, 21 ms).
  // Under slot pressure it sheds more (a starved type is often the newest requests'): keep it
  // well above 1. 0: off. Must be >= 0.
  int max_type_wait_rounds = 16;
  // State slots on the device for this model (padded and bucketed keep one for padding rows).
  // Must be >= 2.
  int32_t state_slots = 1 << 16;
  // Requests admitted and unfinished at most; Admit beyond is RESOURCE_EXHAUSTED. Must be >= 1.
  int64_t max_requests = 4096;
  // padded, bucketed: requests per group (B) and the longest wait for a full group (T).
  int64_t padded_batch = 32;
  int64_t padded_wait_us = 10000;
  // bucketed: upper bounds of input length (tokens or leaves) per bucket, ascending; longer
  // inputs go to a last, open bucket.
  // Default {8, 16, 24, 32, 48, 64, 96, 128}.
  std::vector<int64_t> bucket_bounds = DefaultBucketBounds();

  static std::vector<int64_t> DefaultBucketBounds();
};

// One scheduling decision, to be submitted to the device as is.
struct Round {
  uint64_t id = 0;
  CellBatch batch;
  int64_t real_rows = 0;  // rows that belong to requests (the rest are padding)
  // Queue wait of each request whose first cell is in this round: clock micros from its Admit to
  // this round's decision (for the queue-wait metric; a request appears in exactly one round, or
  // in none if it leaves before any of its cells is submitted).
  std::vector<int64_t> first_cell_waits_us;
};

// What a request hears after a round it took part in, or after Cancel/ExpireDeadlines.
struct RequestEvent {
  enum class Kind { kToken, kDone, kFailed };
  RequestId id = 0;
  Kind kind = Kind::kToken;
  int32_t token = -1;          // kToken: a decoder token (seq2seq), in order
  RequestResult result;        // kDone
  Status status;               // kFailed
};

struct SchedulerStats {
  int64_t rounds = 0;              // submitted
  int64_t cells = 0;               // real cells submitted
  int64_t padding_rows = 0;
  int64_t requests_done = 0;
  int64_t requests_failed = 0;
};

class Scheduler {
 public:
  // `model` and `clock` must outlive the scheduler. INVALID_ARGUMENT for bad options.
  static StatusOr<std::unique_ptr<Scheduler>> Create(const Model* model, SchedulerOptions options,
                                                     const Clock* clock);
  ~Scheduler();

  // Takes (shared) ownership of the request's graph; the scheduler is its only user until the
  // request is answered. deadline_us: absolute (Clock micros), 0 for none.
  // RESOURCE_EXHAUSTED when max_requests are in; INVALID_ARGUMENT for a duplicate id or a graph
  // of another model. Arrival time is the clock's now.
  Status Admit(RequestId id, std::shared_ptr<RequestGraph> graph, int64_t deadline_us = 0);

  // The next round to submit, or nullopt: nothing ready, lookahead full, or a padded group is
  // still waiting to form (see NextWakeupMicros).
  std::optional<Round> NextRound();

  // The device finished round `round_id` (output: its result, or the device's error, which fails
  // every request in the round). A round id it does not know (never submitted, or already
  // reported) is ignored: nothing happens, nothing is returned.
  std::vector<RequestEvent> OnRoundDone(uint64_t round_id, const StatusOr<BatchOutput>& output);

  // Removes the request (its queued cells leave, its slots are freed) and reports `reason` as its
  // failure. Unknown or finished ids: nothing happens, nothing is returned.
  std::vector<RequestEvent> Cancel(RequestId id, const Status& reason);

  // Fails every request whose deadline has passed (now >= deadline) with DEADLINE_EXCEEDED,
  // oldest request first.
  std::vector<RequestEvent> ExpireDeadlines();

  // Events that arose inside NextRound: when the state pool is exhausted and nothing is in
  // flight, the newest request holding slots is failed (RESOURCE_EXHAUSTED) so the others can run.
  // Call after pumping NextRound; usually empty.
  std::vector<RequestEvent> TakeEvents();

  // The earliest clock time at which NextRound or ExpireDeadlines may act without new input
  // (a padded group's wait ends, a deadline passes); -1 if none.
  int64_t NextWakeupMicros() const;

  int rounds_in_flight() const;
  int64_t requests_in() const;         // admitted, unfinished
  int64_t outstanding_cells() const;   // cells of unfinished requests not yet submitted
  int32_t slots_in_use() const;       // by requests (the padding slot not counted)
  // Request entries made so far: finished requests' entries are reused, so this stays at the most
  // requests ever in at once (at most max_requests), however many come and go.
  int64_t request_entries() const;
  // Bytes the request entries' per-cell tables hold (slots, pending inputs, successors), counted
  // by capacity: the unfinished requests'; a finished request's are freed at once. O(cells).
  int64_t table_bytes() const;
  SlotId pad_slot() const;             // the slot padding rows write (padded, bucketed), or -1
  const SchedulerStats& stats() const;
  const SchedulerOptions& options() const;

 private:
  struct Impl;
  explicit Scheduler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellserve
