#include "runtime/scheduler.h"

#include <algorithm>
#include <deque>
#include <map>
#include <unordered_map>

#include "runtime/ready_queue.h"
#include "runtime/state_pool.h"

namespace cellserve {

const char* PolicyName(Policy policy) {
  switch (policy) {
    case Policy::kCellular: return "cellular";
    case Policy::kSequential: return "sequential";
    case Policy::kPadded: return "padded";
    case Policy::kBucketed: return "bucketed";
  }
  return "?";
}

StatusOr<Policy> ParsePolicy(const std::string& name) {
  for (Policy p : {Policy::kCellular, Policy::kSequential, Policy::kPadded, Policy::kBucketed})
    if (name == PolicyName(p)) return p;
  return InvalidArgument("unknown policy '" + name + "' (policies: cellular, padded, bucketed, sequential)");
}

std::vector<int64_t> SchedulerOptions::DefaultBucketBounds() { return {8, 16, 24, 32, 48, 64, 96, 128}; }

namespace {

// The execution mirror of one admitted request.
struct Request {
  bool alive = false;                       // false: a free slab entry
  uint32_t index = 0;                       // position in the slab (stable)
  RequestId id = 0;
  uint64_t seq = 0;                         // admission order: smaller is older
  std::shared_ptr<RequestGraph> graph;
  int64_t arrival_us = 0, deadline_us = 0;
  std::vector<SlotId> slot;                 // per cell; -1 when it holds none
  std::vector<int32_t> pending;             // per cell: inputs not yet submitted
  std::vector<std::vector<CellId>> successors;
  std::vector<char> submitted;
  size_t scanned = 0;                       // cells whose dependencies are recorded
  int64_t unsubmitted = 0;                  // cells known and not yet submitted
  int64_t encoder_left = 0;                 // seq2seq: encoder cells known and not yet submitted
  bool active = false;                      // its cells may be queued (policy admits it)
  bool started = false;                     // a cell of it has been submitted

  template <typename F>
  static void ForEachInput(const Cell& c, F&& f) {
    if (c.x_from >= 0) f(c.x_from);
    if (c.state_from[0] >= 0) f(c.state_from[0]);
    if (c.state_from[1] >= 0) f(c.state_from[1]);
  }
};

}  // namespace

struct Scheduler::Impl {
  const Model* model;
  SchedulerOptions options;
  const Clock* clock;
  StatePool pool;
  SlotId pad_slot = -1;
  uint64_t next_seq = 0;
  uint64_t next_round = 1;
  std::unordered_map<RequestId, uint32_t> by_id;          // live requests -> slab index
  std::vector<std::unique_ptr<Request>> slab;              // entries are reused, never moved
  std::vector<uint32_t> free_entries;
  std::vector<ReadyQueue> ready;
  std::deque<Request*> waiting;  // admitted, not active yet (padded/bucketed/sequential); arrival order
  // The active group (non-cellular policies): id and seq, as a finished member's id may come back.
  std::vector<std::pair<RequestId, uint64_t>> group;
  std::map<uint64_t, std::vector<ReadyCell>> rounds;       // in flight: their members
  std::vector<RequestEvent> events;         // from NextRound, for TakeEvents
  SchedulerStats stats;
  int64_t outstanding = 0;                  // sum of unsubmitted over requests
  int passed_over = 0;                      // rounds in a row the oldest's type was passed over
  std::vector<int> type_waits;              // per type: decisions in a row it had ready cells and was passed over
  std::vector<char> type_ready;             // per type, in ChooseType: it has a ready cell it may run now
  int encoder_types = 0;                    // seq2seq: the types before the first decoder layer's

  Impl(const Model* m, SchedulerOptions o, const Clock* c)
      : model(m), options(std::move(o)), clock(c), pool(options.state_slots),
        ready(m->cell_types().size()),
        encoder_types(m->spec().kind == ModelKind::kSeq2Seq ? m->decoder_layer_type(0) : 0) {
    if (options.policy == Policy::kPadded || options.policy == Policy::kBucketed)
      pad_slot = pool.Allocate(1).value();  // never freed: the target of padding rows
  }

  Request* Find(RequestId id) {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : slab[it->second].get();
  }
  // The live request a queue or round entry refers to, or nullptr if it has gone.
  Request* Get(const ReadyCell& rc) {
    Request* r = slab[rc.index].get();
    return r->alive && r->seq == rc.seq ? r : nullptr;
  }
  Request& NewRequest() {
    uint32_t index;
    if (!free_entries.empty()) {
      index = free_entries.back();
      free_entries.pop_back();
    } else {
      index = static_cast<uint32_t>(slab.size());
      slab.push_back(std::make_unique<Request>());
    }
    Request& r = *slab[index];
    r = Request();
    r.index = index;
    r.alive = true;
    return r;
  }

  // Records dependencies of cells appended since the last scan; queues those ready now.
  void Scan(Request& r) {
    const auto& cells = r.graph->cells();
    r.slot.resize(cells.size(), -1);
    r.pending.resize(cells.size(), 0);
    r.successors.resize(cells.size());
    r.submitted.resize(cells.size(), 0);
    for (; r.scanned < cells.size(); ++r.scanned) {
      const CellId c = static_cast<CellId>(r.scanned);
      ++r.unsubmitted;
      ++outstanding;
      if (IsEncoder(cells[c].type)) ++r.encoder_left;
      Request::ForEachInput(cells[c], [&](CellId p) {
        if (!r.submitted[p]) {
          ++r.pending[c];
          r.successors[p].push_back(c);
        }
      });
      if (r.pending[c] == 0) ready[cells[c].type].push({r.seq, c, r.index});
    }
  }

  void Activate(Request& r) {
    r.active = true;
    Scan(r);
  }

  // Frees everything the request holds and forgets it. Its queued cells and in-flight round
  // entries become stale and are skipped when met.
  void Remove(Request& r) {
    for (SlotId& s : r.slot) {
      if (s >= 0) pool.Free(s);
      s = -1;
    }
    outstanding -= r.unsubmitted;
    waiting.erase(std::remove(waiting.begin(), waiting.end(), &r), waiting.end());
    by_id.erase(r.id);
    r.alive = false;
    r.graph.reset();
    // Its per-cell tables too, now rather than when the entry is reused: after a burst of long
    // decodes (65,536 steps, about 10 MB of tables each) the free entries held 540 MB for good.
    // Swapped with empty ones: `= {}` empties a vector but keeps its buffer.
    std::vector<SlotId>().swap(r.slot);
    std::vector<int32_t>().swap(r.pending);
    std::vector<std::vector<CellId>>().swap(r.successors);
    std::vector<char>().swap(r.submitted);
    free_entries.push_back(r.index);
  }

  RequestEvent Fail(Request& r, const Status& status) {
    RequestEvent e;
    e.id = r.id;
    e.kind = RequestEvent::Kind::kFailed;
    e.status = status;
    ++stats.requests_failed;
    Remove(r);
    return e;
  }

  bool GroupOver() const {
    for (const auto& [id, seq] : group) {
      auto it = by_id.find(id);
      if (it != by_id.end() && slab[it->second]->seq == seq) return false;
    }
    return true;
  }

  int64_t BucketOf(const Request& r) const {
    const auto& b = options.bucket_bounds;
    return std::lower_bound(b.begin(), b.end(), r.graph->input_length()) - b.begin();
  }

  // Non-cellular policies: admit the next request or group when the current one is over and the
  // next is ready. When a waiting group will be ready is NextWakeupMicros's to say.
  void Admission(int64_t now) {
    if (options.policy == Policy::kCellular || waiting.empty() || !GroupOver()) return;
    group.clear();
    if (options.policy == Policy::kSequential) {
      Request* r = waiting.front();
      waiting.pop_front();
      group.emplace_back(r->id, r->seq);
      Activate(*r);
      return;
    }
    // padded / bucketed: form a group of up to B once B wait, or the oldest waited T.
    const int64_t B = options.padded_batch, T = options.padded_wait_us;
    std::vector<Request*> candidates;
    if (options.policy == Policy::kPadded) {
      candidates.assign(waiting.begin(), waiting.end());
    } else {
      // The bucket whose oldest request is oldest among the buckets that are ready to go.
      std::map<int64_t, std::vector<Request*>> buckets;
      for (Request* r : waiting) buckets[BucketOf(*r)].push_back(r);
      const std::vector<Request*>* best = nullptr;
      for (const auto& [bucket, members] : buckets) {
        const bool full = static_cast<int64_t>(members.size()) >= B;
        const bool timed_out = now - members.front()->arrival_us >= T;
        if ((full || timed_out) && (!best || members.front()->seq < best->front()->seq)) best = &members;
      }
      if (!best) return;
      candidates = *best;
    }
    const bool full = static_cast<int64_t>(candidates.size()) >= B;
    if (!full && now - candidates.front()->arrival_us < T) return;
    const size_t n = std::min<size_t>(candidates.size(), static_cast<size_t>(B));
    for (size_t i = 0; i < n; ++i) {
      Request* r = candidates[i];
      waiting.erase(std::find(waiting.begin(), waiting.end(), r));
      group.emplace_back(r->id, r->seq);
      Activate(*r);
    }
  }

  // Drops stale entries at the top of a type's queue; true if a live ready cell is on top.
  bool CleanTop(ReadyQueue& q) {
    while (!q.empty()) {
      const ReadyCell top = q.top();
      Request* r = Get(top);
      if (r && r->active && !r->submitted[top.cell]) return true;
      q.pop();
    }
    return false;
  }

  // Type choice (DESIGN.md §4): the type whose next cell belongs to the oldest request; on a tie
  // the deeper type (later in the model), so a request's wavefront moves on and frees its slots.
  // But a type with a full max batch of ready cells goes first (the oldest such), for at most
  // options.fill_first_rounds rounds in a row; then the oldest request's type goes, so it waits at
  // most that many extra rounds per cell.
  // And no type with ready cells waits more than options.max_type_wait_rounds decisions in a row:
  // the one passed over longest then goes (the oldest request's type would otherwise stay chosen
  // for a long request's whole run, and the other types' cells, short requests' heads, with it).
  int ChooseType() {
    int oldest = -1, fill = -1, starved = -1;
    const bool encoding = GroupEncoding();
    type_waits.resize(ready.size(), 0);
    type_ready.assign(ready.size(), 0);
    for (int t = 0; t < static_cast<int>(ready.size()); ++t) {
      if (!MayRun(t, encoding) || !CleanTop(ready[t])) continue;
      type_ready[t] = 1;
      const uint64_t seq = ready[t].top().seq;
      if (oldest < 0 || seq <= ready[oldest].top().seq) oldest = t;
      if (static_cast<int64_t>(ready[t].size()) >= MaxRows(model->cell_type(t)) &&
          (fill < 0 || seq <= ready[fill].top().seq))
        fill = t;
      if (options.max_type_wait_rounds > 0 && type_waits[t] >= options.max_type_wait_rounds &&
          (starved < 0 || type_waits[t] > type_waits[starved]))
        starved = t;
    }
    int chosen = oldest;
    if (starved >= 0) {
      chosen = starved;
    } else if (fill >= 0 && fill != oldest && passed_over < options.fill_first_rounds) {
      ++passed_over;
      chosen = fill;
    } else {
      passed_over = 0;
    }
    for (size_t t = 0; t < ready.size(); ++t)
      type_waits[t] = (type_ready[t] && static_cast<int>(t) != chosen) ? type_waits[t] + 1 : 0;
    return chosen;
  }

  static bool IsHead(CellOp op) { return op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax; }

  // A seq2seq encoder type.
  bool IsEncoder(int type) const { return type < encoder_types; }

  // Whether type `t`'s cells may run now: any type, but only encoder types while the group
  // encodes (`encoding`: GroupEncoding()).
  bool MayRun(int t, bool encoding) const { return !encoding || IsEncoder(t); }

  // Padded and bucketed seq2seq: whether a member of the group has encoder cells left. Padded
  // serving encodes the whole group, padded to its longest source, before it decodes: until
  // then no decoder cell runs (decoding early, beside the encoder, would pad the decoder's
  // rounds twice: once while one member encodes, again when the rest decode).
  bool GroupEncoding() const {
    if ((options.policy != Policy::kPadded && options.policy != Policy::kBucketed) || encoder_types == 0)
      return false;
    for (const auto& [id, seq] : group) {
      auto it = by_id.find(id);
      if (it != by_id.end() && slab[it->second]->seq == seq && slab[it->second]->encoder_left > 0) return true;
    }
    return false;
  }

  int64_t MaxRows(const CellType& type) const {
    return options.policy == Policy::kSequential ? 1 : type.max_batch;
  }

  std::optional<Round> Next() {
    if (static_cast<int>(rounds.size()) >= options.lookahead) return std::nullopt;
    const int64_t now = clock->NowMicros();
    Admission(now);
    const int chosen = ChooseType();
    if (chosen < 0) return std::nullopt;
    if (std::optional<Round> round = TryRound(chosen, now)) return round;
    // Every cell of the chosen type waits for a slot. With rounds in flight, their completions
    // free some: wait (a head round run meanwhile only splits the next rounds; it measured 4-7%
    // less saturation throughput). With none, something must move: a ready head needs no slot,
    // and the request it finishes frees its slots, so it runs (the oldest such) before anything
    // is shed.
    if (!rounds.empty()) return std::nullopt;
    int head = -1;
    const bool encoding = GroupEncoding();
    for (int t = 0; t < static_cast<int>(ready.size()); ++t)
      if (t != chosen && IsHead(model->cell_type(t).op) && MayRun(t, encoding) && CleanTop(ready[t]) &&
          (head < 0 || ready[t].top().seq < ready[head].top().seq))
        head = t;
    if (head >= 0)
      if (std::optional<Round> round = TryRound(head, now)) return round;
    ShedNewest();  // the newest request holding slots, so the older ones can go on
    return std::nullopt;
  }

  // The round of type `t` (its ready cells, oldest first, up to its max batch), or none when its
  // first cell cannot get a slot. Changes nothing in that case.
  std::optional<Round> TryRound(int t, int64_t now) {
    const CellType& type = model->cell_type(t);
    Round round;
    round.batch.model = model;
    round.batch.type = t;
    std::vector<ReadyCell> members;
    std::vector<std::pair<int32_t, ReadyCell>> released;
    members.reserve(static_cast<size_t>(MaxRows(type)));
    round.batch.rows.reserve(static_cast<size_t>(type.max_batch));
    ReadyQueue& q = ready[t];
    while (static_cast<int64_t>(members.size()) < MaxRows(type) && CleanTop(q)) {
      const ReadyCell rc = q.top();
      Request& r = *Get(rc);
      const Cell& cell = r.graph->cells()[rc.cell];
      CellRow row;
      row.token = cell.token;
      if (cell.x_from >= 0) row.x_slot = r.slot[cell.x_from];
      for (int k = 0; k < 2; ++k)
        if (cell.state_from[k] >= 0) row.state_slot[k] = r.slot[cell.state_from[k]];
      if (!cell.is_head()) {
        auto slot = pool.Allocate(cell.consumers);
        if (!slot.ok()) break;  // the cell stays queued until slots are freed
        row.out_slot = r.slot[rc.cell] = *slot;
      }
      q.pop();
      round.batch.rows.push_back(row);
      members.push_back(rc);
      if (!r.started) {
        r.started = true;
        round.first_cell_waits_us.push_back(now - r.arrival_us);
      }
      Submit(r, rc.cell, &released);
    }
    // Cells made ready by this round wait for the next one (never in the round that feeds them),
    // and slots whose last reader is in this round are freed only now, so no row of the round
    // writes a slot another row of it reads.
    for (const auto& [type_index, cell] : released) ready[type_index].push(cell);
    for (const ReadyCell& m : members) Consume(*Get(m), m.cell);
    if (members.empty()) return std::nullopt;  // every candidate waits for a slot
    round.real_rows = static_cast<int64_t>(members.size());
    if ((options.policy == Policy::kPadded || options.policy == Policy::kBucketed) &&
        type.op == CellOp::kLstm) {
      // Padded execution computes every group member at every step until the longest is done.
      CellRow pad;  // zeros in, garbage out to the pad slot: the cost of a padded row
      pad.token = type.embedding ? 0 : -1;
      pad.out_slot = pad_slot;
      const int64_t width = std::min<int64_t>(static_cast<int64_t>(group.size()), type.max_batch);
      while (static_cast<int64_t>(round.batch.rows.size()) < width) {
        round.batch.rows.push_back(pad);
        ++stats.padding_rows;
      }
    }
    round.id = next_round++;
    rounds.emplace(round.id, std::move(members));
    ++stats.rounds;
    stats.cells += round.real_rows;
    return round;
  }

  // Marks a cell submitted: its successors are ready once all their inputs are submitted (the
  // device runs rounds in order); they are collected in `released` for after this round.
  void Submit(Request& r, CellId c, std::vector<std::pair<int32_t, ReadyCell>>* released) {
    r.submitted[c] = 1;
    --r.unsubmitted;
    if (IsEncoder(r.graph->cells()[c].type)) --r.encoder_left;
    --outstanding;
    for (CellId s : r.successors[c])
      if (--r.pending[s] == 0) released->emplace_back(r.graph->cells()[s].type, ReadyCell{r.seq, s, r.index});
  }

  // A submitted cell has read its inputs: release them (frees a slot after its last reader).
  void Consume(Request& r, CellId c) {
    Request::ForEachInput(r.graph->cells()[c], [&](CellId p) {
      if (r.slot[p] >= 0 && pool.Consume(r.slot[p])) r.slot[p] = -1;
    });
  }

  void ShedNewest() {
    Request* victim = nullptr;
    for (auto& r : slab) {
      if (!r->alive) continue;
      const bool holds = std::any_of(r->slot.begin(), r->slot.end(), [](SlotId s) { return s >= 0; });
      if (holds && (!victim || r->seq > victim->seq)) victim = r.get();
    }
    if (!victim) return;
    events.push_back(Fail(*victim, ResourceExhausted("state pool (" + std::to_string(pool.capacity()) +
                                                     " slots) cannot hold this request beside older ones")));
  }

  std::vector<RequestEvent> Done(uint64_t round_id, const StatusOr<BatchOutput>& output) {
    std::vector<RequestEvent> out;
    auto it = rounds.find(round_id);
    if (it == rounds.end()) return out;
    const auto members = std::move(it->second);
    rounds.erase(it);
    for (size_t i = 0; i < members.size(); ++i) {
      Request* r = Get(members[i]);
      if (!r) continue;  // cancelled, failed or expired meanwhile
      if (!output.ok()) {
        out.push_back(Fail(*r, output.status().WithContext("device")));
        continue;
      }
      const CellId c = members[i].cell;
      const Cell& cell = r->graph->cells()[c];
      if (!cell.is_head()) continue;
      const CellType& head_type = model->cell_type(cell.type);
      HeadOutput head;
      head.argmax = output->argmax[i];
      head.max_value = output->max_value[i];
      if (!output->logits.empty()) {
        head.count = head_type.outputs;
        head.logits = output->logits.data() + i * head_type.outputs;
      }
      r->graph->OnHeadOutput(c, head);
      if (head_type.op == CellOp::kHeadArgmax) {
        RequestEvent e;
        e.id = r->id;
        e.kind = RequestEvent::Kind::kToken;
        e.token = head.argmax;
        out.push_back(std::move(e));
      }
      if (r->graph->finished()) {
        RequestEvent e;
        e.id = r->id;
        e.kind = RequestEvent::Kind::kDone;
        e.result = r->graph->result();
        out.push_back(std::move(e));
        ++stats.requests_done;
        Remove(*r);
      } else {
        Scan(*r);  // seq2seq: the next decoder step
      }
    }
    return out;
  }
};

StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const Model* model, SchedulerOptions options,
                                                       const Clock* clock) {
  if (!model || !clock) return InvalidArgument("scheduler needs a model and a clock");
  if (options.lookahead < 1) return InvalidArgument("lookahead must be >= 1");
  if (options.fill_first_rounds < 0) return InvalidArgument("fill_first_rounds must be >= 0");
  if (options.max_type_wait_rounds < 0) return InvalidArgument("max_type_wait_rounds must be >= 0");
  if (options.state_slots < 2) return InvalidArgument("state_slots must be >= 2");
  if (options.max_requests < 1) return InvalidArgument("max_requests must be >= 1");
  if (options.padded_batch < 1) return InvalidArgument("padded_batch must be >= 1");
  // At most an hour: arrival + wait must not overflow the wakeup time (a huge one wrapped and
  // dropped every deadline's wakeup).
  if (options.padded_wait_us < 0 || options.padded_wait_us > int64_t{3600} * 1000000)
    return InvalidArgument("padded_wait_us must be in 0..3600000000 (an hour)");
  if (!std::is_sorted(options.bucket_bounds.begin(), options.bucket_bounds.end()))
    return InvalidArgument("bucket_bounds must be ascending");
  return std::unique_ptr<Scheduler>(new Scheduler(std::make_unique<Impl>(model, std::move(options), clock)));
}

Scheduler::Scheduler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Scheduler::~Scheduler() = default;

Status Scheduler::Admit(RequestId id, std::shared_ptr<RequestGraph> graph, int64_t deadline_us) {
  Impl& s = *impl_;
  if (!graph || &graph->model() != s.model) return InvalidArgument("request graph is for another model");
  if (s.by_id.count(id)) return InvalidArgument("request id " + std::to_string(id) + " is already in");
  if (static_cast<int64_t>(s.by_id.size()) >= s.options.max_requests)
    return ResourceExhausted("scheduler queue is full (" + std::to_string(s.options.max_requests) +
                             " requests in); retry later");
  Request& ref = s.NewRequest();
  ref.id = id;
  ref.seq = s.next_seq++;
  ref.graph = std::move(graph);
  ref.arrival_us = s.clock->NowMicros();
  ref.deadline_us = deadline_us;
  s.by_id.emplace(id, ref.index);
  if (s.options.policy == Policy::kCellular) s.Activate(ref);
  else s.waiting.push_back(&ref);
  return OkStatus();
}

std::optional<Round> Scheduler::NextRound() { return impl_->Next(); }

std::vector<RequestEvent> Scheduler::OnRoundDone(uint64_t round_id, const StatusOr<BatchOutput>& output) {
  return impl_->Done(round_id, output);
}

std::vector<RequestEvent> Scheduler::Cancel(RequestId id, const Status& reason) {
  Request* r = impl_->Find(id);
  if (!r) return {};
  return {impl_->Fail(*r, reason)};
}

std::vector<RequestEvent> Scheduler::ExpireDeadlines() {
  Impl& s = *impl_;
  const int64_t now = s.clock->NowMicros();
  std::vector<Request*> expired;
  for (auto& r : s.slab)
    if (r->alive && r->deadline_us > 0 && now >= r->deadline_us) expired.push_back(r.get());
  std::sort(expired.begin(), expired.end(), [](Request* a, Request* b) { return a->seq < b->seq; });
  std::vector<RequestEvent> out;
  for (Request* r : expired) out.push_back(s.Fail(*r, DeadlineExceeded("deadline passed before the request finished")));
  return out;
}

std::vector<RequestEvent> Scheduler::TakeEvents() { return std::exchange(impl_->events, {}); }

int64_t Scheduler::NextWakeupMicros() const {
  Impl& s = *impl_;
  int64_t wake = -1;
  auto consider = [&](int64_t t) { wake = wake < 0 ? t : std::min(wake, t); };
  for (const auto& r : s.slab)
    if (r->alive && r->deadline_us > 0) consider(r->deadline_us);
  if (s.options.policy == Policy::kPadded || s.options.policy == Policy::kBucketed) {
    // `waiting` is in arrival order: its front is the first to have waited T, in any bucket.
    if (!s.waiting.empty() && s.GroupOver()) consider(s.waiting.front()->arrival_us + s.options.padded_wait_us);
  }
  return wake;
}

int Scheduler::rounds_in_flight() const { return static_cast<int>(impl_->rounds.size()); }
int64_t Scheduler::requests_in() const { return static_cast<int64_t>(impl_->by_id.size()); }
int64_t Scheduler::outstanding_cells() const { return impl_->outstanding; }
int64_t Scheduler::request_entries() const { return static_cast<int64_t>(impl_->slab.size()); }

int64_t Scheduler::table_bytes() const {
  int64_t bytes = 0;
  for (const std::unique_ptr<Request>& entry : impl_->slab) {
    const Request& r = *entry;
    bytes += static_cast<int64_t>(r.slot.capacity() * sizeof(SlotId) + r.pending.capacity() * sizeof(int32_t) +
                                  r.successors.capacity() * sizeof(std::vector<CellId>) + r.submitted.capacity());
    for (const std::vector<CellId>& s : r.successors) bytes += static_cast<int64_t>(s.capacity() * sizeof(CellId));
  }
  return bytes;
}
int32_t Scheduler::slots_in_use() const { return impl_->pool.used() - (impl_->pad_slot >= 0 ? 1 : 0); }
SlotId Scheduler::pad_slot() const { return impl_->pad_slot; }
const SchedulerStats& Scheduler::stats() const { return impl_->stats; }
const SchedulerOptions& Scheduler::options() const { return impl_->options; }

}  // namespace cellserve
