#include "runtime/device_share.h"

#include <algorithm>
#include <numeric>

namespace cellserve {

DeviceShare::DeviceShare(int models, int shared_depth)
    : charged_(static_cast<size_t>(std::max(models, 0)), 0),
      busy_(static_cast<size_t>(std::max(models, 0)), false),
      order_(static_cast<size_t>(std::max(models, 0))),
      shared_depth_(std::max(shared_depth, 1)) {
  std::iota(order_.begin(), order_.end(), 0);
}

void DeviceShare::SetBusy(int m, bool busy) {
  if (m < 0 || static_cast<size_t>(m) >= busy_.size() || busy_[static_cast<size_t>(m)] == busy) return;
  // Back from idle: no credit for the idle time. It starts at the floor, the least charge of the
  // busy models, held while none is busy: a model that turns busy while the device is idle is
  // levelled with what the others ran before (it got 0 against their hour, and starved them).
  if (busy) charged_[static_cast<size_t>(m)] = std::max(charged_[static_cast<size_t>(m)], floor_);
  busy_[static_cast<size_t>(m)] = busy;
  busy_models_ += busy ? 1 : -1;
  RaiseFloor();
}

void DeviceShare::Charge(int m, int64_t busy_us) {
  if (m < 0 || static_cast<size_t>(m) >= charged_.size() || busy_us <= 0) return;
  charged_[static_cast<size_t>(m)] += busy_us;
  RaiseFloor();
}

void DeviceShare::RaiseFloor() {
  bool any = false;
  int64_t least = 0;
  for (size_t i = 0; i < busy_.size(); ++i)
    if (busy_[i]) {
      least = any ? std::min(least, charged_[i]) : charged_[i];
      any = true;
    }
  if (any) floor_ = std::max(floor_, least);  // busy charges are all >= floor_: it only rises
}

const std::vector<int>& DeviceShare::Order() {
  std::sort(order_.begin(), order_.end(), [this](int a, int b) {  // (charge, index): a total order
    return std::make_pair(charged_[static_cast<size_t>(a)], a) < std::make_pair(charged_[static_cast<size_t>(b)], b);
  });
  return order_;
}

bool DeviceShare::Room(int rounds_on_device) const {
  return busy_models_ < 2 || rounds_on_device < shared_depth_;
}

int64_t DeviceShare::charged_us(int m) const {
  return m >= 0 && static_cast<size_t>(m) < charged_.size() ? charged_[static_cast<size_t>(m)] : 0;
}

}  // namespace cellserve
