// --pin-threads and --idle-poll, which serve, node and bench share (the router, --idle-poll only):
// one definition of the flags and of what they do to a LocalCluster's options, so each command
// means the same by them.
// Main-thread helpers. Call ApplyThreadPlacement before any thread is started: pinning moves only
// the caller, and the threads it starts later (CAF's, the RPC server's) inherit its cores.
#pragma once

#include "actors/local_cluster.h"
#include "runtime/status.h"
#include "tools/flags.h"

namespace cellserve::tools {

// Adds --pin-threads, --idle-poll and --idle-poll-below. `others` says what shares the cores left to the actors
// ("the RPC front door", "the load generator").
void AddThreadPlacementFlags(Flags& flags, const char* others);

// Adds --idle-poll and --idle-poll-below alone; `cores` says which cores it keeps awake.
void AddIdlePollFlags(Flags& flags, const char* cores);

struct IdlePollSettings {
  bool on = false;    // --idle-poll
  int64_t below = 8;  // --idle-poll-below
};
// Reads them. INVALID_ARGUMENT for a --idle-poll-below that is not a number >= 0.
StatusOr<IdlePollSettings> ReadIdlePollFlags(const Flags& flags);

// With --pin-threads: pins this thread apart from the device threads (LocalCluster::
// PinCallerApartFromDevices) and puts the plan's device CPUs into `options`. With --idle-poll:
// sets options.idle_poll (the cluster keeps this thread's CPUs awake) and idle_poll_below. Prints what it did on stderr
// as "cellserve COMMAND: --pin-threads: ...". Errors: the plan's (e.g. too few cores), unchanged.
Status ApplyThreadPlacement(const Flags& flags, LocalClusterOptions& options, const char* command);

}  // namespace cellserve::tools
