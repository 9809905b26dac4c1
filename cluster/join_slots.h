// JoinSlots: the node agent's table of router addresses to connect to, one slot per address a
// --join entry resolved to (a headless Service's name gives one per router pod). Each slot has a
// link number that names its connection to the agent's actor. Pure, no threads, no clock.
// Bounded: a slot whose address left its entry's resolution is dropped once it is not connected,
// and its link number goes to the next new address, so routers that restart under new IPs for
// months do not grow the table (or the actor's per-link state) past the addresses in use.
// Thread-compatible: the agent's connector thread owns it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cellserve::cluster {

struct JoinSlot {
  std::string host;     // what the connector connects to: an IP address
  uint16_t port = 0;
  std::string display;  // for logs: the --join entry, and the IP when it differs
  size_t entry = 0;     // its --join entry
  size_t link = 0;      // its connection's number (shared with the agent's actor)
  bool current = true;  // in the entry's latest resolution (others are not retried)
  bool warned = false;  // said once that it cannot be reached (until it connects again)
  std::chrono::steady_clock::time_point not_before{};  // no attempt before (after a silent port)
};

class JoinSlots {
 public:
  // Whether link `link` is connected now (the agent's shared table).
  using IsConnected = std::function<bool(size_t link)>;

  // Applies entry `entry`'s latest resolution: `join` is the entry as given (HOST:PORT), `host` and
  // `port` parsed from it, `ips` the addresses `host` resolved to (none: it did not resolve, and
  // the entry's slots stay as they were). The entry's slots whose address is gone stop being tried,
  // and are dropped once not connected; a new address gets a slot, reusing a dropped link number.
  void Resolved(size_t entry, const std::string& join, const std::string& host, uint16_t port,
                const std::vector<std::string>& ips, const IsConnected& connected);

  // Whether any of entry `entry`'s slots is connected.
  bool AnyConnected(size_t entry, const IsConnected& connected) const;

  std::vector<JoinSlot>& slots() { return slots_; }
  const std::vector<JoinSlot>& slots() const { return slots_; }
  // One more than the highest link number ever handed out: the size the per-link tables need.
  size_t links_used() const { return next_link_; }

 private:
  std::vector<JoinSlot> slots_;
  std::vector<size_t> free_links_;  // numbers of dropped slots, handed out again first
  size_t next_link_ = 0;
};

}  // namespace cellserve::cluster
