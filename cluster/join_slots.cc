#include "cluster/join_slots.h"

#include <algorithm>

namespace cellserve::cluster {

void JoinSlots::Resolved(size_t entry, const std::string& join, const std::string& host, uint16_t port,
                         const std::vector<std::string>& ips, const IsConnected& connected) {
  if (ips.empty()) return;  // a failed lookup says nothing about the addresses known
  for (JoinSlot& slot : slots_)
    if (slot.entry == entry) slot.current = std::find(ips.begin(), ips.end(), slot.host) != ips.end();
  // Only this thread marks a link connected, so one that is not connected now stays so.
  auto gone = std::stable_partition(slots_.begin(), slots_.end(), [&](const JoinSlot& slot) {
    return slot.entry != entry || slot.current || connected(slot.link);
  });
  for (auto it = gone; it != slots_.end(); ++it) free_links_.push_back(it->link);
  slots_.erase(gone, slots_.end());
  for (const std::string& ip : ips) {
    const bool known = std::any_of(slots_.begin(), slots_.end(),
                                   [&](const JoinSlot& slot) { return slot.entry == entry && slot.host == ip; });
    if (known) continue;
    JoinSlot slot;
    slot.host = ip;
    slot.port = port;
    slot.display = ip == host ? join : join + " (" + ip + ")";
    slot.entry = entry;
    if (free_links_.empty()) {
      slot.link = next_link_++;
    } else {
      slot.link = free_links_.back();
      free_links_.pop_back();
    }
    slots_.push_back(std::move(slot));
  }
}

bool JoinSlots::AnyConnected(size_t entry, const IsConnected& connected) const {
  return std::any_of(slots_.begin(), slots_.end(),
                     [&](const JoinSlot& slot) { return slot.entry == entry && connected(slot.link); });
}

}  // namespace cellserve::cluster
