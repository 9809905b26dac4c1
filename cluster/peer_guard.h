// What a peer on the cluster port may do to the actors it can reach (the router's, a node
// agent's), in one place.
//
// LocalOnly: the last argument of every message such an actor takes only from its own process
// (its timers, the RPC server's cancel, Stop, the device callbacks). CAF cannot deserialize it
// (it is not in CAF's type registry), so no message that carries one can come off the network:
// a peer that sent the router a bare `rstop` stopped it for good while health said "serving",
// and `rfailall` or `rcancel` answered every call in flight.
//
// GuardFromPeers: keeps such an actor alive whatever ordinary message, error or exit message a
// peer sends it: exit messages are ignored (the actor ends by its own local quit message), except
// CAF's exit_reason::kill, which CAF makes fatal before any handler runs: the cluster port is
// trusted that far (docs/OPERATIONS.md: a NetworkPolicy keeps it to the cluster's pods; a router
// whose actor ends says so and exits 1). CAF 0.17's defaults end an actor
// at the first error message it is sent (default_error_handler), and answer every unexpected
// message, a one-way one included, with an error, which ends the peer in turn: a node once
// answered a reply it did not expect, and its error stopped the router's actor for good while
// the router's health still said "serving".
// With the guard an unexpected message is logged and answered with an error only when it is a
// request (whose sender waits for an answer); a one-way one gets no reply. An error message is
// logged and the actor goes on. Logs are bounded: the 1st, 2nd, 4th, 8th, ... of each kind.
// Call from the actor's own body (its thread); `who` names it in the log ("router", "node").
#pragma once

#include <caf/all.hpp>

namespace cellserve::cluster {

struct LocalOnly {};
inline constexpr LocalOnly kLocalOnly{};

// Ends the actor it is sent to (with LocalOnly): what Stop sends instead of an exit message.
using local_quit_atom = caf::atom_constant<caf::atom("lquit")>;

void GuardFromPeers(caf::scheduled_actor* self, const char* who);

}  // namespace cellserve::cluster

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(cellserve::cluster::LocalOnly)
