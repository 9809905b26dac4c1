// GuardFromPeers: keeps an actor that remote peers message (the router's, a node agent's) alive
// whatever ordinary message or error a peer sends it (not an exit message: a peer on the cluster
// port is trusted that far, as it can place requests anyway). CAF 0.17's defaults end an actor
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

void GuardFromPeers(caf::scheduled_actor* self, const char* who);

}  // namespace cellserve::cluster
