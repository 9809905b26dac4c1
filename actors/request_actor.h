// The request actor (DESIGN.md §3 steps 3-6): one per request, spawned by the node for the worker
// it picked. It builds the request's cell graph (BuildRequestGraph: bad input is answered
// INVALID_ARGUMENT at once; a deadline already passed, DEADLINE_EXCEEDED), holds the reply, sends
// the graph (moved) and the deadline to its worker in ONE admit message, and then listens:
//   update (from the worker)  tokens are collected and streamed to msg.on_token; kDone/kFailed answer
//   cancel (from the node)    asks the worker to cancel with CANCELLED
//   worker_lost (from the node)  its worker ended: answered UNAVAILABLE
// A deadline already passed when the actor starts is refused here; later it is the worker's: its
// scheduler fails the request DEADLINE_EXCEEDED at its first wakeup after the deadline, whether
// the request waits or runs. The actor has no timer of its own: CAF
// cannot cancel a delayed message, and one held every answered request's actor (about 1.5 KB) in
// memory until its deadline, 113 MiB for 78k requests with a 10-minute timeout.
// It answers exactly once: through its ReplySlot, only on the worker's terminal event (which the
// worker sends exactly once per admission) or on its own refusal before admission, and, should it
// be stopped unanswered (shutdown), from its state's destructor. Then it tells the node it is
// finished and quits.
// Ownership: the reply slot is shared with the node's message; the clock is borrowed.
#pragma once

#include <cstdint>
#include <memory>

#include <caf/all.hpp>

#include "actors/messages.h"
#include "runtime/clock.h"
#include "runtime/model.h"

namespace cellserve::actors {

struct RequestSetup {
  InferMsg msg;                          // id, input, deadline (on `clock`), reply
  std::shared_ptr<const Model> model;
  caf::actor worker;
  int worker_index = 0;
  caf::actor node;                       // hears (finished_atom, id, worker_index, ran); may be invalid
  const Clock* clock = nullptr;          // required; borrowed
};

// Spawns a request actor (the node does, for each request it accepts).
caf::actor SpawnRequest(caf::actor_system& system, RequestSetup setup);

}  // namespace cellserve::actors
