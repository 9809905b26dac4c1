#include "actors/worker_actor.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <unordered_map>
#include <utility>

#include "runtime/device_share.h"

namespace cellserve::actors {

namespace {

// Device round ids carry the model's index in the top bits, so one device can run the rounds of
// several schedulers (one per model), whose own round ids each start at 1.
constexpr int kModelShift = 48;
constexpr uint64_t kRoundMask = (uint64_t{1} << kModelShift) - 1;

// A wakeup is never armed closer than this: when the scheduler's next wakeup is already due but
// nothing can act yet (lookahead full), this bounds the timer rate until a round completes.
constexpr int64_t kMinWakeupDelayUs = 250;
// Nor further ahead than this: CAF cannot cancel a delayed message, so each earlier deadline that
// arrives arms one more timer; capped, the timers pending at once are bounded by the arrivals of
// one second, not by the longest deadline (a client's timeout may be 49 days). A capped timer that
// fires early finds nothing due and arms the next.
constexpr int64_t kMaxWakeupDelayUs = 1'000'000;

struct PerModel {
  std::shared_ptr<const Model> model;
  std::unique_ptr<Scheduler> scheduler;
  // Metrics handles (null without metrics): the model's series, and batch size per cell type.
  monitoring::ModelMetrics* metrics = nullptr;
  monitoring::PoolMetrics* pool = nullptr;  // the model's state pool on this device
  std::vector<prometheus::Histogram*> batch_size;
};

// What SpawnWorker prepared (schedulers created, models registered); moved into the state.
struct WorkerSetup {
  WorkerOptions options;
  std::vector<PerModel> models;
};

struct WorkerState {
  static inline const char* name = "cellserve.worker";

  struct Tracked {
    caf::actor requester;
    size_t model = 0;
  };

  caf::stateful_actor<WorkerState>* self = nullptr;
  WorkerOptions options;
  std::vector<PerModel> models;
  DeviceShare share{0, 1};                         // whose round goes next (several models)
  std::unordered_map<RequestId, Tracked> requests;  // admitted, not yet answered by us
  bool refusing = false;                           // after cancel_all: no more admissions
  Status refuse_reason;
  int64_t armed_wakeup_us = -1;                    // the earliest wakeup timer armed, or -1
  bool flush_armed = false;
  int64_t last_report_us = 0;                       // clock time of the last report
  int64_t reported_cells = -1, reported_requests = -1;
  int rounds_since_report = 0;
  int64_t load_reports = 0;
  monitoring::DeviceMetrics* device_metrics = nullptr;  // null: no metrics

  ~WorkerState() {
    // Stopped while requests were still in (killed, or an error): tell each request, so no one
    // waits for an answer this worker can no longer give. UNAVAILABLE: the request did nothing
    // wrong and may be tried again (on a restarted server, or another node).
    for (auto& [id, t] : requests) {
      RequestEvent e;
      e.id = id;
      e.kind = RequestEvent::Kind::kFailed;
      e.status = Unavailable("the device worker stopped before the request finished");
      caf::anon_send(t.requester, update_atom::value, RequestUpdate{id, {std::move(e)}, false});
    }
  }

  static RequestEvent Failure(RequestId id, Status status) {
    RequestEvent e;
    e.id = id;
    e.kind = RequestEvent::Kind::kFailed;
    e.status = std::move(status);
    return e;
  }

  void Reject(const AdmitMsg& m, Status status) {
    self->send(m.requester, update_atom::value, RequestUpdate{m.id, {Failure(m.id, std::move(status))}, true});
  }

  void Admit(AdmitMsg& m) {
    if (refusing) return Reject(m, refuse_reason);
    std::unique_ptr<RequestGraph> graph = m.graph ? std::move(m.graph->graph) : nullptr;
    if (!graph) return Reject(m, Internal("admission without a request graph"));
    size_t mi = 0;
    while (mi < models.size() && models[mi].model.get() != &graph->model()) ++mi;
    if (mi == models.size())
      return Reject(m, NotFound("model '" + graph->model().spec().name + "' is not served by device " +
                                options.device->name()));
    if (requests.count(m.id))
      return Reject(m, InvalidArgument("request id " + std::to_string(m.id) + " is already in"));
    Status s = models[mi].scheduler->Admit(m.id, std::move(graph), m.deadline_us);
    if (!s.ok()) return Reject(m, s);
    requests.emplace(m.id, Tracked{m.requester, mi});
    if (options.counters) ++options.counters->accepted;
    AfterChange();
  }

  void Cancel(const CancelMsg& m) {
    auto it = requests.find(m.id);
    if (it == requests.end()) return;  // finished (its answer is on the way) or never admitted
    Deliver(models[it->second.model].scheduler->Cancel(m.id, m.reason));
    AfterChange();
  }

  void CancelAll(const Status& reason) {
    refusing = true;
    refuse_reason = reason;
    std::vector<std::pair<RequestId, size_t>> ids;
    for (const auto& [id, t] : requests) ids.emplace_back(id, t.model);
    std::sort(ids.begin(), ids.end());
    for (const auto& [id, mi] : ids) {
      auto events = models[mi].scheduler->Cancel(id, reason);
      if (events.empty()) events.push_back(Failure(id, reason));  // the scheduler forgot it
      Deliver(std::move(events));
    }
    AfterChange();
  }

  void RoundDone(DeviceCompletion& c) {
    const size_t mi = static_cast<size_t>(c.round_id >> kModelShift);
    if (mi >= models.size()) return;
    if (device_metrics) monitoring::ServingMetrics::OnDeviceBusy(*device_metrics, c.end_us - c.start_us);
    share.Charge(static_cast<int>(mi), c.end_us - c.start_us);
    Deliver(models[mi].scheduler->OnRoundDone(c.round_id & kRoundMask, c.output));
    ++rounds_since_report;
    AfterChange();
  }

  void Wakeup(int64_t at_us) {
    if (at_us == armed_wakeup_us) armed_wakeup_us = -1;
    for (auto& m : models) Deliver(m.scheduler->ExpireDeadlines());
    AfterChange();
  }

  // Sends each request what the events say, one message per request, in event order. A terminal
  // event ends our tracking of the request.
  void Deliver(std::vector<RequestEvent> events) {
    if (events.empty()) return;
    std::vector<RequestUpdate> updates;
    std::unordered_map<RequestId, size_t> index;
    for (auto& e : events) {
      auto [it, fresh] = index.emplace(e.id, updates.size());
      if (fresh) {
        updates.emplace_back();
        updates.back().id = e.id;
      }
      updates[it->second].events.push_back(std::move(e));
    }
    for (auto& u : updates) {
      auto it = requests.find(u.id);
      if (it == requests.end()) continue;
      caf::actor to = it->second.requester;
      const bool terminal = std::any_of(u.events.begin(), u.events.end(), [](const RequestEvent& e) {
        return e.kind != RequestEvent::Kind::kToken;
      });
      if (terminal) requests.erase(it);
      self->send(to, update_atom::value, std::move(u));
    }
  }

  // After anything that may let the schedulers act: submit rounds, arm the wakeup, report load.
  void AfterChange() {
    Pump();
    ArmWakeup();
    MaybeReportLoad(false);
    if (device_metrics) UpdateGauges();
  }

  void UpdateGauges() {
    int64_t rounds = 0;
    for (const auto& m : models) {
      rounds += m.scheduler->rounds_in_flight();
      m.pool->in_use->Set(static_cast<double>(m.scheduler->slots_in_use()));
    }
    device_metrics->rounds_in_flight->Set(static_cast<double>(rounds));
  }

  // Submits every round the schedulers will give now and the device share allows, one at a time,
  // each to the least charged model that has one.
  void Pump() {
    for (bool progress = true; progress;) {
      progress = false;
      int on_device = 0;
      for (size_t mi = 0; mi < models.size(); ++mi) {
        share.SetBusy(static_cast<int>(mi), models[mi].scheduler->requests_in() > 0);
        on_device += models[mi].scheduler->rounds_in_flight();
      }
      if (!share.Room(on_device)) return;
      for (int mi : share.Order()) {
        Scheduler& s = *models[static_cast<size_t>(mi)].scheduler;
        std::optional<Round> r = s.NextRound();
        if (r) Submit(static_cast<size_t>(mi), std::move(*r));
        // Requests shed inside NextRound (state pool exhausted): answer them, and go on, as
        // their slots are free now.
        std::vector<RequestEvent> shed = s.TakeEvents();
        const bool any_shed = !shed.empty();
        if (any_shed) Deliver(std::move(shed));
        if (r || any_shed) {
          progress = true;
          break;  // the charges and the room may have changed: look again
        }
      }
    }
  }

  void Submit(size_t mi, Round round) {
    if (device_metrics) {
      PerModel& m = models[mi];
      const int64_t rows = static_cast<int64_t>(round.batch.rows.size());
      monitoring::ServingMetrics::OnRound(*device_metrics, m.batch_size[static_cast<size_t>(round.batch.type)],
                                          round.real_rows, rows - round.real_rows);
      for (int64_t wait_us : round.first_cell_waits_us) monitoring::ServingMetrics::OnQueueWait(*m.metrics, wait_us);
    }
    const uint64_t device_round = (static_cast<uint64_t>(mi) << kModelShift) | (round.id & kRoundMask);
    caf::actor me = caf::actor_cast<caf::actor>(self);
    std::shared_ptr<Liveness> live = options.liveness;
    const size_t index = static_cast<size_t>(options.index);
    if (live) live->device[index].Began(live->clock->NowMicros());
    options.device->Submit(device_round, std::move(round.batch), [me, live, index](DeviceCompletion c) {
      // Device thread: post the completion to the worker; never touch the scheduler here.
      if (live) live->device[index].Ended(live->clock->NowMicros());
      caf::anon_send(me, round_done_atom::value, std::move(c));
    });
  }

  void ArmWakeup() {
    int64_t wake = -1;
    for (const auto& m : models) {
      const int64_t w = m.scheduler->NextWakeupMicros();
      if (w >= 0) wake = wake < 0 ? w : std::min(wake, w);
    }
    if (wake < 0) return;
    if (armed_wakeup_us >= 0 && armed_wakeup_us <= wake) return;  // an earlier timer will fire
    const int64_t now = options.clock->NowMicros();
    const int64_t delay = std::clamp(wake - now, kMinWakeupDelayUs, kMaxWakeupDelayUs);
    armed_wakeup_us = std::min(wake, now + delay);  // when this timer fires (or is due)
    self->delayed_send(self, std::chrono::microseconds(delay), wakeup_atom::value, armed_wakeup_us);
  }

  void MaybeReportLoad(bool force) {
    if (!options.node) return;
    int64_t cells = 0, in = 0;
    for (const auto& m : models) {
      cells += m.scheduler->outstanding_cells();
      in += m.scheduler->requests_in();
    }
    if (cells == reported_cells && in == reported_requests) return;
    const int64_t now = options.clock->NowMicros();
    const bool due = force || reported_requests < 0 || rounds_since_report >= options.load_report_rounds ||
                     now - last_report_us >= options.load_report_interval_us;
    if (due) {
      self->send(options.node, load_atom::value, LoadReport{options.index, cells, in});
      reported_cells = cells;
      reported_requests = in;
      last_report_us = now;
      rounds_since_report = 0;
      ++load_reports;
    } else if (!flush_armed) {
      flush_armed = true;
      const int64_t wait = std::max<int64_t>(options.load_report_interval_us - (now - last_report_us), 1);
      self->delayed_send(self, std::chrono::microseconds(wait), flush_atom::value);
    }
  }

  WorkerReport Report() const {
    WorkerReport r;
    r.device = options.device->name();
    for (const auto& m : models) {
      const SchedulerStats& st = m.scheduler->stats();
      r.rounds += st.rounds;
      r.cells += st.cells;
      r.padding_rows += st.padding_rows;
      r.requests_done += st.requests_done;
      r.requests_failed += st.requests_failed;
      r.requests_in += m.scheduler->requests_in();
      r.outstanding_cells += m.scheduler->outstanding_cells();
      r.slots_in_use += m.scheduler->slots_in_use();
      r.rounds_in_flight += m.scheduler->rounds_in_flight();
    }
    const DeviceStats ds = options.device->stats();
    r.busy_us = ds.busy_us;
    r.device_batches = ds.batches;
    r.tracked_requests = static_cast<int64_t>(requests.size());
    r.load_reports = load_reports;
    return r;
  }
};

caf::behavior WorkerActor(caf::stateful_actor<WorkerState>* self, std::shared_ptr<WorkerSetup> setup) {
  WorkerState& st = self->state;
  st.self = self;
  st.options = std::move(setup->options);
  st.models = std::move(setup->models);
  st.share = DeviceShare(static_cast<int>(st.models.size()), st.options.shared_device_depth);
  if (st.options.metrics) {
    monitoring::ServingMetrics& metrics = *st.options.metrics;
    const std::string device = st.options.device->name();
    st.device_metrics = metrics.Device(device);
    for (PerModel& m : st.models) {
      m.metrics = metrics.Model(m.model->spec().name);
      m.pool = metrics.Pool(device, m.model->spec().name);
      for (const CellType& type : m.model->cell_types())
        m.batch_size.push_back(metrics.BatchSize(device, m.model->spec().name, type.name));
      // Slots requests may hold: the padding slot is not theirs.
      m.pool->capacity->Set(
          static_cast<double>(m.scheduler->options().state_slots - (m.scheduler->pad_slot() >= 0 ? 1 : 0)));
    }
    st.UpdateGauges();
  }
  return {
      [self](admit_atom, AdmitMsg& m) { self->state.Admit(m); },
      [self](cancel_atom, const CancelMsg& m) { self->state.Cancel(m); },
      [self](round_done_atom, DeviceCompletion& c) { self->state.RoundDone(c); },
      [self](wakeup_atom, int64_t at_us) { self->state.Wakeup(at_us); },
      [self](flush_atom) {
        self->state.flush_armed = false;
        self->state.MaybeReportLoad(true);
      },
      [self](cancel_all_atom, const Status& reason) { self->state.CancelAll(reason); },
      [self](report_atom) { return self->state.Report(); },
      [self](probe_atom) {
        const WorkerState& st = self->state;
        if (const auto& live = st.options.liveness)
          live->worker[static_cast<size_t>(st.options.index)].Ended(live->clock->NowMicros());
      },
  };
}

}  // namespace

StatusOr<caf::actor> SpawnWorker(caf::actor_system& system, WorkerOptions options) {
  if (!options.device) return InvalidArgument("worker needs a device");
  if (!options.clock) return InvalidArgument("worker needs a clock");
  if (options.models.empty()) return InvalidArgument("worker needs at least one model");
  if (options.models.size() > 0xFFFF) return InvalidArgument("too many models for one worker");
  if (options.load_report_interval_us < 0 || options.load_report_rounds < 1)
    return InvalidArgument("load_report_interval_us must be >= 0 and load_report_rounds >= 1");
  if (options.shared_device_depth < 1) return InvalidArgument("shared_device_depth must be >= 1");
  if (options.liveness && (options.index < 0 || static_cast<size_t>(options.index) >= options.liveness->worker.size()))
    return InvalidArgument("worker index " + std::to_string(options.index) + " has no place in its liveness watches");
  auto setup = std::make_shared<WorkerSetup>();
  for (const auto& model : options.models) {
    if (!model) return InvalidArgument("worker given a null model");
    if (options.stop_requested && options.stop_requested()) return Cancelled("stopped while registering the models");
    Status s = options.device->RegisterModel(*model, options.scheduler.state_slots);
    if (!s.ok()) return s.WithContext("device " + options.device->name() + ", model " + model->spec().name);
    auto scheduler = Scheduler::Create(model.get(), options.scheduler, options.clock);
    if (!scheduler.ok()) return scheduler.status();
    setup->models.push_back(PerModel{model, std::move(scheduler).value(), nullptr, nullptr, {}});
  }
  setup->options = std::move(options);
  return system.spawn(WorkerActor, std::move(setup));
}

}  // namespace cellserve::actors
