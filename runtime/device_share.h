// DeviceShare: how a worker shares its one device among the models it serves. Each model's
// scheduler forms its own rounds (a round holds cells of one model); this decides whose round goes
// to the device next, and how many the device may hold.
// - Fair in device time: each model is charged the time its rounds ran; the next round goes to
//   the least charged model that has one (start-time fair queuing: a model coming back from idle
//   starts at the floor, the least charge among the busy ones, held while none is busy, so being
//   idle earns no credit). A model with
//   short rounds (a small one) goes first whenever it has a round, a model with long rounds takes
//   the rest: neither waits behind the other's whole lookahead.
// - A short device queue while models share: with two or more models holding requests, the
//   device holds at most `shared_depth` rounds (running and queued), so a round waits behind that
//   many at most. A model alone keeps its scheduler's lookahead (nothing changes).
// Pure: no threads, no clock. The worker actor owns one and calls it on its own thread.
#pragma once

#include <cstdint>
#include <vector>

namespace cellserve {

class DeviceShare {
 public:
  // `models`: indices 0 .. models-1; `shared_depth`: at least 1.
  DeviceShare(int models, int shared_depth);

  // Model `m` holds requests (true) or none (false) now.
  void SetBusy(int m, bool busy);
  // One of model `m`'s rounds ran for `busy_us`.
  void Charge(int m, int64_t busy_us);

  // The models, least charged first (ties: the lower index), to offer the device to in turn.
  const std::vector<int>& Order();
  // Whether the device, holding `rounds_on_device` rounds, may take one more.
  bool Room(int rounds_on_device) const;

  int busy_models() const { return busy_models_; }
  int64_t charged_us(int m) const;

 private:
  void RaiseFloor();  // floor_ = the least charge of the busy models, if any (it never falls)

  std::vector<int64_t> charged_;
  std::vector<bool> busy_;
  std::vector<int> order_;
  int busy_models_ = 0;
  int64_t floor_ = 0;
  int shared_depth_;
};

}  // namespace cellserve
