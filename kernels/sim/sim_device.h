// SimDevice: a device that computes nothing (DESIGN.md §5, kernels/sim). Each batch "runs" for
// SimProfile::CostMicros(kind, rows) after the previous one on the same device ends, and is then
// reported like a real device's, in submission order. It lets one small machine host many
// "GPUs" to test the scheduler, the actors and the router at scale.
// Outputs: state slots are not touched (there are none); head batches answer argmax per row as a
// deterministic token that is never the model's EOS (so a seq2seq request decodes to its length
// cap) and, for classifier heads, logits of zeros. Results are meaningless by design.
// Threads: many SimDevices share one SimTimer (one thread) that sleeps until the next due batch
// and runs completions there; callbacks must not block. The destructor waits until every
// submitted batch was reported. Submit is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernels/sim/sim_profile.h"
#include "runtime/clock.h"
#include "runtime/device.h"

namespace cellserve::sim {

// One thread running callbacks at their due time (SteadyClock micros), in due order (ties in
// scheduling order). The destructor runs what is still scheduled at once, then joins.
class SimTimer {
 public:
  SimTimer();
  ~SimTimer();

  // Runs the timer's thread on `cpu` only (runtime/cpu_plan.h). The OS's error if it refuses.
  Status Pin(int cpu);
  void Schedule(int64_t due_us, std::function<void()> fn);

 private:
  struct Item {
    int64_t due_us;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Item& o) const { return due_us != o.due_us ? due_us > o.due_us : seq > o.seq; }
  };
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> items_;  // GUARDED_BY(mu_)
  uint64_t next_seq_ = 0;                                                  // GUARDED_BY(mu_)
  bool stopping_ = false;                                                  // GUARDED_BY(mu_)
  std::thread thread_;
};

class SimDevice final : public Device {
 public:
  // INVALID_ARGUMENT for an empty name or a null timer.
  static StatusOr<std::unique_ptr<SimDevice>> Create(std::string name, SimProfile profile,
                                                     std::shared_ptr<SimTimer> timer);
  ~SimDevice() override;

  std::string name() const override { return name_; }
  Status RegisterModel(const Model& model, int32_t slots) override;
  void Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) override;
  int64_t pending() const override;
  DeviceStats stats() const override;

 private:
  SimDevice(std::string name, SimProfile profile, std::shared_ptr<SimTimer> timer);
  Status Check(const CellBatch& batch) const;

  const std::string name_;
  const SimProfile profile_;
  std::shared_ptr<SimTimer> timer_;
  SteadyClock clock_;
  mutable std::mutex mu_;
  std::condition_variable idle_;
  std::set<const Model*> models_;  // GUARDED_BY(mu_)
  int64_t busy_until_us_ = 0;      // GUARDED_BY(mu_): when the last submitted batch ends
  int64_t pending_ = 0;            // GUARDED_BY(mu_): submitted, not completed
  int64_t unreported_ = 0;         // GUARDED_BY(mu_): submitted, `done` not yet returned
  DeviceStats stats_;              // GUARDED_BY(mu_)
};

}  // namespace cellserve::sim
