#include "runtime/sync_executor.h"

#include <algorithm>
#include <deque>

namespace cellserve {

namespace {

// The execution state of one request: which cells ran, which wait on whom, where outputs live.
struct RequestRun {
  RequestGraph* graph = nullptr;
  std::vector<SlotId> slot;                 // per cell, -1 when it holds none
  std::vector<int32_t> pending;             // per cell: inputs not yet produced
  std::vector<std::vector<CellId>> successors;
  std::vector<char> done;
  size_t scanned = 0;                       // cells whose dependencies are recorded
  Status error;
  bool over = false;                        // finished or failed

  template <typename F>
  static void ForEachInput(const Cell& c, F&& f) {
    if (c.x_from >= 0) f(c.x_from);
    if (c.state_from[0] >= 0) f(c.state_from[0]);
    if (c.state_from[1] >= 0) f(c.state_from[1]);
  }
};

using ReadyQueue = std::deque<std::pair<size_t, CellId>>;  // (request index, cell)

// Records the dependencies of cells appended since the last scan; queues those ready now.
void ScanNewCells(size_t r, RequestRun& run, std::vector<ReadyQueue>& ready) {
  const auto& cells = run.graph->cells();
  run.slot.resize(cells.size(), -1);
  run.pending.resize(cells.size(), 0);
  run.successors.resize(cells.size());
  run.done.resize(cells.size(), 0);
  for (; run.scanned < cells.size(); ++run.scanned) {
    const CellId c = static_cast<CellId>(run.scanned);
    RequestRun::ForEachInput(cells[c], [&](CellId p) {
      if (!run.done[p]) {
        ++run.pending[c];
        run.successors[p].push_back(c);
      }
    });
    if (run.pending[c] == 0) ready[cells[c].type].emplace_back(r, c);
  }
}

void FreeAll(RequestRun& run, StatePool& pool) {
  for (SlotId& s : run.slot) {
    if (s >= 0) pool.Free(s);
    s = -1;
  }
}

}  // namespace

SyncExecutor::SyncExecutor(Backend* backend, const Model* model, int32_t pool_slots)
    : backend_(backend), model_(model), pool_(pool_slots) {}

std::vector<StatusOr<RequestResult>> SyncExecutor::Run(
    std::vector<std::unique_ptr<RequestGraph>>& graphs) {
  const size_t num_types = model_->cell_types().size();
  std::vector<ReadyQueue> ready(num_types);
  std::vector<RequestRun> runs(graphs.size());
  for (size_t r = 0; r < graphs.size(); ++r) {
    runs[r].graph = graphs[r].get();
    if (&graphs[r]->model() != model_) {
      runs[r].error = InvalidArgument("request graph is for another model");
      runs[r].over = true;
      continue;
    }
    ScanNewCells(r, runs[r], ready);
  }
  auto fail = [&](RequestRun& run, Status s) {
    run.error = std::move(s);
    run.over = true;
    FreeAll(run, pool_);
  };

  // When the pool is so full that no ready cell can get a slot, the newest request holding
  // slots gives them up (RESOURCE_EXHAUSTED), so older requests finish first and every pass
  // makes progress; a request too big for the whole pool fails once it is the only one left.
  auto shed_newest = [&]() {
    size_t victim = runs.size();
    for (size_t r = runs.size(); r-- > 0;) {
      if (runs[r].over) continue;
      if (victim == runs.size()) victim = r;  // newest unfinished, if none holds slots
      if (std::any_of(runs[r].slot.begin(), runs[r].slot.end(), [](SlotId s) { return s >= 0; })) {
        victim = r;
        break;
      }
    }
    if (victim == runs.size()) return false;
    fail(runs[victim], ResourceExhausted("state pool (" + std::to_string(pool_.capacity()) +
                                         " slots) cannot hold this request beside older ones"));
    return true;
  };

  std::vector<std::pair<size_t, CellId>> members;
  CellBatch batch;
  batch.model = model_;
  bool progress = true;
  while (progress || shed_newest()) {
    progress = false;
    for (size_t t = 0; t < num_types; ++t) {
      // One batch of this type per pass, so layers and steps advance together.
      const CellType& type = model_->cell_type(static_cast<int>(t));
      members.clear();
      batch.type = static_cast<int32_t>(t);
      batch.rows.clear();
      while (!ready[t].empty() && static_cast<int64_t>(members.size()) < type.max_batch) {
        auto [r, c] = ready[t].front();
        ready[t].pop_front();
        RequestRun& run = runs[r];
        if (run.over) continue;
        const Cell& cell = run.graph->cells()[c];
        CellRow row;
        row.token = cell.token;
        if (cell.x_from >= 0) row.x_slot = run.slot[cell.x_from];
        for (int k = 0; k < 2; ++k)
          if (cell.state_from[k] >= 0) row.state_slot[k] = run.slot[cell.state_from[k]];
        if (!cell.is_head()) {
          auto slot = pool_.Allocate(cell.consumers);
          if (!slot.ok()) {  // pool full: the cell waits for slots to be freed
            ready[t].emplace_front(r, c);
            break;
          }
          row.out_slot = run.slot[c] = *slot;
        }
        batch.rows.push_back(row);
        members.emplace_back(r, c);
      }
      // A request that failed while this batch was formed must not see its rows run.
      for (size_t i = 0; i < members.size();) {
        if (runs[members[i].first].over) {
          members.erase(members.begin() + i);
          batch.rows.erase(batch.rows.begin() + i);
        } else {
          ++i;
        }
      }
      if (members.empty()) continue;
      progress = true;
      auto out = backend_->Run(batch);
      ++stats_.batches;
      stats_.cells += static_cast<int64_t>(members.size());
      for (size_t i = 0; i < members.size(); ++i) {
        auto [r, c] = members[i];
        RequestRun& run = runs[r];
        if (run.over) continue;
        if (!out.ok()) {
          fail(run, out.status());
          continue;
        }
        const Cell& cell = run.graph->cells()[c];
        run.done[c] = 1;
        RequestRun::ForEachInput(cell, [&](CellId p) {
          if (run.slot[p] >= 0 && pool_.Consume(run.slot[p])) run.slot[p] = -1;
        });
        if (cell.is_head()) {
          HeadOutput head;
          head.argmax = out->argmax[i];
          head.max_value = out->max_value[i];
          if (!out->logits.empty()) {
            head.count = type.outputs;
            head.logits = out->logits.data() + i * type.outputs;
          }
          run.graph->OnHeadOutput(c, head);
        }
        for (CellId s : run.successors[c]) {
          if (--run.pending[s] == 0) ready[run.graph->cells()[s].type].emplace_back(r, s);
        }
        ScanNewCells(r, run, ready);
        if (run.graph->finished()) {
          run.over = true;
          FreeAll(run, pool_);
        }
      }
    }
  }

  std::vector<StatusOr<RequestResult>> results;
  results.reserve(graphs.size());
  for (auto& run : runs) {
    if (!run.error.ok()) {
      results.emplace_back(run.error);
    } else if (!run.graph->finished()) {
      FreeAll(run, pool_);
      results.emplace_back(Internal("request graph stalled before finishing"));
    } else {
      results.emplace_back(run.graph->result());
    }
  }
  return results;
}

}  // namespace cellserve
