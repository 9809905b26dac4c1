// The node agent's network lookups. ResolveAddresses: every address a router name has (one lookup).
// ProbeTcp: whether something at HOST:PORT accepts a TCP connection, within a time bound. The node
// agent asks it before CAF's remote_actor, whose connect blocks with no bound of its own: a router
// address that drops SYNs (a moved pod, a firewall) held the agent's connector, and a SIGTERM
// waiting on it, for the kernel's ~2 minutes of retries.
// Thread-compatible, no state. Blocks the caller up to timeout_ms; `stop` (may be null) is looked
// at every 50 ms and ends the wait early.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace cellserve::cluster {

// The IPv4 and IPv6 addresses `host` (a name or an address) resolves to, as text, each once, in the
// resolver's order. UNAVAILABLE, with the resolver's reason, when it resolves to none. Blocks for
// as long as the system's resolver takes.
StatusOr<std::vector<std::string>> ResolveAddresses(const std::string& host);

// OK once connected (the connection is closed again). DEADLINE_EXCEEDED when no answer came within
// timeout_ms (SYNs dropped); UNAVAILABLE when refused, unreachable or the host does not resolve
// (the system's reason in the message); CANCELLED when *stop became true; INVALID_ARGUMENT for
// timeout_ms < 1. `host` is an IP address or a name.
Status ProbeTcp(const std::string& host, uint16_t port, int64_t timeout_ms,
                const std::atomic<bool>* stop = nullptr);

}  // namespace cellserve::cluster
